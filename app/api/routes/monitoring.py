"""`GET /monitoring`: each version's live quality from the prediction log and its feedback.

Open like `/model`: aggregates only, no image and no key name, and the page reads it."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import RecordsDep, StateDep, in_database
from app.api.schemas import Confusion, Drift, ErrorBody, Monitoring, VersionMonitoring
from app.records.quality import VersionQuality, refresh_accuracy_gauges
from app.serving.drift import DriftStatus

router = APIRouter(prefix="/monitoring", tags=["monitoring"])


def describe(quality: VersionQuality, drift: DriftStatus | None) -> VersionMonitoring:
    return VersionMonitoring(
        version=quality.version,
        answers=quality.answers,
        feedback=quality.feedback,
        contributions=quality.contributions,
        accuracy=quality.accuracy,
        accuracy_interval=quality.accuracy_interval,
        confusions=[
            Confusion(label=label, predicted=predicted, count=count)
            for label, predicted, count in quality.top_confusions()
        ],
        verdicts=quality.verdicts,
        drift=None if drift is None else Drift(**drift),
    )


@router.get(
    "",
    response_model=Monitoring,
    responses={503: {"model": ErrorBody, "description": "the database is unreachable"}},
)
async def monitoring(state: StateDep, records: RecordsDep) -> Monitoring:
    """Per version, newest first: answers, verdicts, feedback, accuracy with its 95 % Wilson
    interval, the commonest confusions, and input drift."""
    qualities = await in_database(refresh_accuracy_gauges, records.engine, state.metrics)
    return Monitoring(
        versions=[describe(quality, state.drift.status(quality.version)) for quality in qualities]
    )
