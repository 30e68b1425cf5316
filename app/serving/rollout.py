"""The automatic rollout (MNIST_ROLLOUT=auto): a new version is a canary first, then promoted or
rolled back by itself, from the feedback on its answers against the stable version's.

Every worker of every replica runs a controller, which looks every MNIST_RELOAD_POLL_SECONDS at
the store (pin, routing, servable versions) and at the `rollouts` table, and reconciles them:

- The stable version is the default, kept by a pin the rollout owns. No pin yet: what this worker
  serves becomes it. An operator's pin freezes the automation, and ends a running canary.
- A servable version newer than the stable one, never canaried before, becomes a canary for the
  configured share of clients: the worker whose INSERT wins writes the routing.
- A running canary is judged by `rollout_rule.decide` on the rollout window's evidence from the
  database; the worker whose UPDATE ends it writes the pin and routing.
- Table first, store second: a worker that dies between the two leaves the store behind the table,
  and the next look of any worker repairs it.

Each decision is a log line with its evidence, a metric, a span and the table's row.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.operations.rollout_metrics import RolloutMetrics
from app.records import rollouts
from app.records.rollouts import DecidedBy, Rollout, State
from app.serving.rollout_rule import Arm, Verdict, decide
from app.serving.versions import ReloadError, VersionManager
from model_store.pins import ROLLOUT, Pin, Routing, read_pin, read_routing
from model_store.store import ModelStoreError

log = logging.getLogger(__name__)

PINNED_BY = "the automatic rollout"


@dataclass(frozen=True)
class Look:
    """What one look saw: the store's choices and versions, and the table's rollouts."""

    pin: Pin | None
    routing: Routing | None
    servable: list[int]
    history: list[Rollout]

    @property
    def active(self) -> Rollout | None:
        return next((rollout for rollout in self.history if rollout.state == rollouts.CANARY), None)


def arm_evidence(arm: Arm) -> dict[str, Any]:
    return {
        "answers": arm.answers,
        "feedback": arm.feedback,
        "correct": arm.correct,
        "accuracy": arm.accuracy,
        "errors": arm.errors,
        "p99_ms": arm.p99_ms,
    }


def evidence_of(candidate: Arm, stable: Arm, verdict: Verdict) -> dict[str, Any]:
    difference = None if verdict.difference is None else list(verdict.difference)
    return {"candidate": arm_evidence(candidate), "stable": arm_evidence(stable), "difference": difference}


class RolloutController:
    def __init__(
        self,
        manager: VersionManager,
        engine: Engine,
        metrics: RolloutMetrics,
        tracer: trace.Tracer | None,
        percent: float,
        min_feedback: int,
        max_feedback: int,
    ) -> None:
        self.manager = manager
        self.engine = engine
        self.metrics = metrics
        self.tracer = tracer or trace.NoOpTracer()
        self.percent = percent
        self.min_feedback = min_feedback
        self.max_feedback = max_feedback
        manager.automatic = True

    async def run(self, interval_seconds: float) -> None:
        """Look and reconcile every `interval_seconds`; a failed look is logged and tried again."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.tick()
            except Exception:  # a bug in one look must not end the automation for the process's life
                log.exception("rollout: the look failed; trying again at the next one")

    async def tick(self) -> None:
        self.metrics.ticks.inc()
        try:
            await self._reconcile(await asyncio.to_thread(self._look))
        except (SQLAlchemyError, ModelStoreError, ReloadError) as exc:
            log.warning("rollout: cannot look or act now, trying again at the next look: %s", exc)

    def _look(self) -> Look:
        store = self.manager.store
        return Look(
            read_pin(store), read_routing(store), store.servable_versions(), rollouts.history(self.engine)
        )

    async def _reconcile(self, look: Look) -> None:
        active = look.active
        self.metrics.canary_version.set(active.candidate if active is not None else 0)
        if look.pin is None:
            # The first look under auto (or a pin file removed by hand): what is served is stable.
            await self.manager.pin(self.manager.holder.current.version, PINNED_BY, ROLLOUT)
            return
        ours = look.routing is not None and look.routing.set_by == ROLLOUT
        operator = None
        if look.pin.set_by == "operator":
            operator = f"the operator pinned version {look.pin.version}"
        elif look.routing is not None and not ours:
            operator = f"the operator routed version {look.routing.candidate}"
        if operator is not None:
            # An operator's choice holds: no automatic canary runs beside it.
            if active is not None:
                await self._end(active, "stopped", "operator", operator)
            if ours:
                await self.manager.rollback()
            return
        await self._repair(look)
        stable = look.pin.version
        if active is not None:
            await self._judge(active, stable, look)
        elif self.manager.holder.current.version == stable:
            known = {rollout.candidate for rollout in look.history}
            newer = [version for version in look.servable if version > stable and version not in known]
            if newer:
                await self._start(newer[-1], stable)

    async def _repair(self, look: Look) -> None:
        """Bring the store to what the table says, where a worker died between its two writes."""
        active, routing, pin = look.active, look.routing, look.pin
        assert pin is not None
        if routing is not None and (active is None or routing.candidate != active.candidate):
            await self.manager.rollback()  # the rollout's routing for a rollout that has ended
        if active is not None and (routing is None or routing.candidate != active.candidate):
            await self.manager.route("canary", active.candidate, active.percent, ROLLOUT)
        latest = look.history[0] if look.history else None
        # Only a pin older than the promotion: one written since (an operator's, handed back) holds.
        if (
            latest is not None
            and latest.state == "promoted"
            and latest.decided_by == ROLLOUT
            and latest.ended_at is not None
            and pin.version == latest.stable
            and pin.pinned_at < latest.ended_at
        ):
            await self.manager.pin(latest.candidate, PINNED_BY, ROLLOUT)

    async def _start(self, candidate: int, stable: int) -> None:
        now = datetime.now(UTC)
        started = await asyncio.to_thread(rollouts.start, self.engine, candidate, stable, self.percent, now)
        if started is None:
            return  # another worker or replica started it, or another canary runs
        self._record("started", "rollout", started, f"canary for {self.percent:g} % of clients", None)
        self.metrics.canary_version.set(candidate)
        try:
            await self.manager.route("canary", candidate, self.percent, ROLLOUT)
        except ReloadError as exc:
            await self._end(started, "rolled_back", "rollout", f"version {candidate} failed to load: {exc}")

    def judge(self, rollout: Rollout) -> tuple[dict[str, Any], Verdict]:
        """The rollout window's evidence now, and what the rule makes of it (blocking)."""
        versions = (rollout.candidate, rollout.stable)
        arms = rollouts.arms(self.engine, versions, rollout.started_at, None)
        candidate, stable = arms[rollout.candidate], arms[rollout.stable]
        verdict = decide(candidate, stable, self.min_feedback, self.max_feedback)
        return evidence_of(candidate, stable, verdict), verdict

    async def evidence(self, rollout: Rollout) -> tuple[dict[str, Any], Verdict]:
        return await asyncio.to_thread(self.judge, rollout)

    async def _judge(self, active: Rollout, stable: int, look: Look) -> None:
        if active.stable != stable:
            await self._end(active, "stopped", "rollout", f"the stable version became {stable}")
            return
        if active.candidate not in look.servable or active.candidate in self.manager.refused:
            reason = self.manager.refused.get(active.candidate, "no longer servable in the store")
            await self._end(active, "rolled_back", "rollout", f"version {active.candidate}: {reason}")
            return
        evidence, verdict = await self.evidence(active)
        if verdict.decision == "wait":
            return
        state: State = "promoted" if verdict.decision == "promote" else "rolled_back"
        await self._end(active, state, "rollout", verdict.reason, evidence)

    async def _end(
        self,
        active: Rollout,
        state: State,
        decided_by: DecidedBy,
        reason: str,
        evidence: dict[str, Any] | None = None,
    ) -> bool:
        """End `active` if this worker wins the UPDATE; then the store follows: the candidate pinned
        if promoted, the canary's routing removed."""
        if evidence is None:
            evidence, _ = await self.evidence(active)
        now = datetime.now(UTC)
        won = await asyncio.to_thread(
            rollouts.end, self.engine, active.id, state, decided_by, reason, evidence, now
        )
        if not won:
            return False
        self._record(state, decided_by, active, reason, evidence)
        self.metrics.canary_version.set(0)
        if decided_by == ROLLOUT and state == "promoted":
            await self.manager.pin(active.candidate, PINNED_BY, ROLLOUT)
        if decided_by == ROLLOUT or state == "stopped":
            await self.manager.rollback()  # an operator's promote or rollback does it in its route
        return True

    async def operator_ended(self, state: State, reason: str, pinned: int | None = None) -> None:
        """Record an operator's promote, rollback, routing or pin as the end of the running canary,
        before the operator's route changes the store; pinning the candidate is promoting it."""
        active = await asyncio.to_thread(rollouts.active, self.engine)
        if active is None:
            return
        if pinned is not None:
            state = "promoted" if pinned == active.candidate else "stopped"
        await self._end(active, state, "operator", reason)

    def _record(
        self, decision: str, decided_by: str, rollout: Rollout, reason: str, evidence: dict[str, Any] | None
    ) -> None:
        self.metrics.decisions.labels(decision, decided_by).inc()
        attributes: dict[str, str | int] = {
            "mnist.rollout.id": rollout.id,
            "mnist.rollout.decision": decision,
            "mnist.rollout.decided_by": decided_by,
            "mnist.rollout.candidate": rollout.candidate,
            "mnist.rollout.stable": rollout.stable,
            "mnist.rollout.reason": reason,
        }
        with self.tracer.start_as_current_span("rollout decision", attributes=attributes) as span:
            for role in ("candidate", "stable"):
                for key, value in ((evidence or {}).get(role) or {}).items():
                    if value is not None:
                        span.set_attribute(f"mnist.rollout.{role}.{key}", value)
        log.info(
            "rollout %s: version %s %s (by %s) against stable version %s: %s; evidence %s",
            rollout.id,
            rollout.candidate,
            decision,
            decided_by,
            rollout.stable,
            reason,
            evidence,
        )
