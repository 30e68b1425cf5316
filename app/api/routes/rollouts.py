"""`GET /admin/rollouts`: the automatic rollout's history, behind the admin token."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from app.api.deps import StateDep, in_database
from app.api.routes.admin import require_admin
from app.api.schemas import ErrorBody
from app.records import rollouts
from app.records.rollouts import Rollout

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    # 503 with Retry-After while the database is unreachable, as every route of the log's.
    responses={code: {"model": ErrorBody} for code in (401, 403, 503)},
)


class ArmEvidence(BaseModel):
    answers: int = Field(description="images the version answered during the rollout")
    feedback: int = Field(description="of those, how many got feedback on a digit")
    correct: int = Field(description="of those, how many the feedback says were right")
    accuracy: float | None = Field(description="correct / feedback; null without feedback")
    errors: int = Field(description="images of requests the version failed to answer")
    p99_ms: float | None = Field(description="99th percentile of the answers' latency, milliseconds")


class Evidence(BaseModel):
    candidate: ArmEvidence
    stable: ArmEvidence
    difference: tuple[float, float] | None = Field(
        description="95 % interval of the accuracy difference candidate - stable (Newcombe); null "
        "without feedback on both"
    )


class RolloutEntry(BaseModel):
    id: int
    candidate: int = Field(description="the version canaried")
    stable: int = Field(description="the default version it was compared with")
    percent: float = Field(description="share of clients the canary answered")
    state: Literal["canary", "promoted", "rolled_back", "stopped"]
    decided_by: Literal["rollout", "operator"] | None = Field(description="null while the canary runs")
    reason: str | None
    started_at: datetime
    ended_at: datetime | None
    evidence: Evidence | None = Field(
        description="what the decision saw; while the canary runs, the evidence now"
    )


class RolloutHistory(BaseModel):
    mode: Literal["auto", "manual"] = Field(description="MNIST_ROLLOUT")
    rollouts: list[RolloutEntry] = Field(description="newest first")


def entry(rollout: Rollout, evidence: dict[str, object] | None) -> RolloutEntry:
    return RolloutEntry.model_validate(rollout.__dict__ | {"evidence": evidence})


@router.get("/rollouts", response_model=RolloutHistory)
async def rollout_history(state: StateDep) -> RolloutHistory:
    """The automatic rollouts, newest first: candidate, stable version, state, who decided and why,
    and the evidence (the running canary's as of now). Empty without the prediction log."""
    mode = state.settings.rollout
    if state.records is None:
        return RolloutHistory(mode=mode, rollouts=[])
    found = await in_database(rollouts.history, state.records.engine)
    entries = []
    for rollout in found:
        evidence = rollout.evidence
        if rollout.state == rollouts.CANARY and state.rollout is not None:
            evidence, _ = await in_database(state.rollout.judge, rollout)
        entries.append(entry(rollout, evidence))
    return RolloutHistory(mode=mode, rollouts=entries)
