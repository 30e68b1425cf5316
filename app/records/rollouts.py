"""The automatic rollout's history in the database, shared by every worker and replica, and the
evidence of a rollout window: each version's answers, feedback, failed requests and p99 latency.

Every change of a rollout's state is one statement that only one process can win: a new rollout
is an INSERT that the unique candidate refuses a second time (and a unique partial index while
another canary runs), its end an UPDATE of a row still in state `canary`. The winner then changes
the store's pin and routing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from app.records.quality import Arm, feedback_counts, is_correct
from app.records.tables import ROUTE_CONTRIBUTION, AnswerErrorRow, PredictionRow, RolloutRow

State = Literal["canary", "promoted", "rolled_back", "stopped"]
DecidedBy = Literal["rollout", "operator"]
CANARY: State = "canary"


@dataclass(frozen=True)
class Rollout:
    id: int
    candidate: int
    stable: int
    percent: float
    state: State
    decided_by: DecidedBy | None
    reason: str | None
    started_at: datetime
    ended_at: datetime | None
    evidence: dict[str, Any] | None


def _rollout(row: Any) -> Rollout:
    return Rollout(**row._mapping)


def history(engine: Engine) -> list[Rollout]:
    """Every rollout, newest first."""
    with engine.connect() as connection:
        rows = connection.execute(select(RolloutRow).order_by(RolloutRow.id.desc())).all()
    return [_rollout(row) for row in rows]


def active(engine: Engine) -> Rollout | None:
    """The rollout in state `canary`, if any (at most one: only one starts while none runs)."""
    with engine.connect() as connection:
        row = connection.execute(
            select(RolloutRow).where(RolloutRow.state == CANARY).order_by(RolloutRow.id.desc()).limit(1)
        ).one_or_none()
    return None if row is None else _rollout(row)


def start(engine: Engine, candidate: int, stable: int, percent: float, now: datetime) -> Rollout | None:
    """Record a new canary of `candidate`; None when another process did first, or when the
    candidate had a rollout before (a version is canaried automatically once)."""
    values = {
        "candidate": candidate,
        "stable": stable,
        "percent": percent,
        "state": CANARY,
        "started_at": now,
    }
    try:
        with engine.begin() as connection:
            new_id = connection.execute(
                insert(RolloutRow).values(values).returning(RolloutRow.id)
            ).scalar_one()
    except IntegrityError:  # the candidate's unique key, or the one-canary index
        return None
    return Rollout(new_id, candidate, stable, percent, CANARY, None, None, now, None, None)


def end(
    engine: Engine,
    rollout_id: int,
    state: State,
    decided_by: DecidedBy,
    reason: str,
    evidence: dict[str, Any] | None,
    now: datetime,
) -> bool:
    """End a running rollout; True for the one process whose UPDATE found it still a canary."""
    statement = (
        update(RolloutRow)
        .where(RolloutRow.id == rollout_id, RolloutRow.state == CANARY)
        .values(state=state, decided_by=decided_by, reason=reason[:500], evidence=evidence, ended_at=now)
    )
    with engine.begin() as connection:
        return connection.execute(statement).rowcount == 1


def arms(
    engine: Engine, versions: tuple[int, ...], since: datetime, until: datetime | None
) -> dict[int, Arm]:
    """What each version showed on the answers it gave in [since, until): their count, the
    feedback on them and how much was right, the images of failed requests, the p99 latency."""
    counts: dict[int, dict[str, int]] = {
        version: {"answers": 0, "feedback": 0, "correct": 0, "errors": 0} for version in versions
    }
    window = [PredictionRow.created_at >= since, PredictionRow.route != ROUTE_CONTRIBUTION]
    errors_window = [AnswerErrorRow.created_at >= since]
    if until is not None:
        window.append(PredictionRow.created_at < until)
        errors_window.append(AnswerErrorRow.created_at < until)
    with engine.connect() as connection:
        for version, count in connection.execute(
            select(PredictionRow.model_version, func.count())
            .where(PredictionRow.model_version.in_(versions), *window)
            .group_by(PredictionRow.model_version)
        ):
            counts[version]["answers"] = count
        in_window = (PredictionRow.model_version.in_(versions), *window)
        for version, label, digit, verdict, count in feedback_counts(connection, *in_window):
            correct = is_correct(label, digit, verdict)
            if correct is not None:
                counts[version]["feedback"] += count
                counts[version]["correct"] += count if correct else 0
        for version, images in connection.execute(
            select(AnswerErrorRow.model_version, func.sum(AnswerErrorRow.images))
            .where(AnswerErrorRow.model_version.in_(versions), *errors_window)
            .group_by(AnswerErrorRow.model_version)
        ):
            counts[version]["errors"] = int(images or 0)
        p99 = {version: _p99(connection, version, window) for version in versions}
    return {version: Arm(**counts[version], p99_ms=p99[version]) for version in versions}


def _p99(connection: Any, version: int, window: list[Any]) -> float | None:
    """The nearest-rank 99th percentile of the answers' latency: one indexed count, one ordered
    row (the same query on SQLite and PostgreSQL, which alone has percentile_cont)."""
    timed = [PredictionRow.model_version == version, PredictionRow.latency_ms.is_not(None), *window]
    count = connection.execute(select(func.count()).where(*timed)).scalar_one()
    if not count:
        return None
    above = count // 100  # answers slower than the 99th percentile
    latency: float = connection.execute(
        select(PredictionRow.latency_ms)
        .where(*timed)
        .order_by(PredictionRow.latency_ms.desc())
        .offset(above)
        .limit(1)
    ).scalar_one()
    return latency
