"""Feedback: a label for an answer (replacing an earlier one), or a labelled image nobody asked
about, written at once and committed before the caller hears 201."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from app.records.ids import issued_ms, new_ids
from app.records.quality import is_correct
from app.records.tables import ROUTE_CONTRIBUTION, FeedbackRow, PredictionRow
from app.records.writer import FLUSH_SECONDS

# How long after its id was issued an answer may still be on its way to the database (queued in
# this worker or another): feedback on it waits rather than answering 404.
IN_FLIGHT_MS = int((FLUSH_SECONDS * 4 + 2) * 1000)
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class StoredFeedback:
    prediction_id: str
    label: int
    predicted: int | None
    correct: bool | None
    model_name: str
    model_version: int
    created_at: datetime
    updated_at: datetime

    @property
    def first(self) -> bool:
        """The first feedback on its answer (not a replacement)."""
        return self.created_at == self.updated_at


def _upsert(
    connection: Connection, prediction_id: str, label: int, now: datetime
) -> tuple[datetime, datetime]:
    values = {"prediction_id": prediction_id, "label": label, "created_at": now, "updated_at": now}
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(FeedbackRow).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[FeedbackRow.prediction_id], set_={"label": label, "updated_at": now}
    ).returning(FeedbackRow.created_at, FeedbackRow.updated_at)
    created, updated = connection.execute(statement).one()
    return created, updated


def _answer(connection: Connection, prediction_id: str) -> tuple[int | None, str | None, str, int] | None:
    row = connection.execute(
        select(
            PredictionRow.digit, PredictionRow.verdict, PredictionRow.model_name, PredictionRow.model_version
        ).where(PredictionRow.id == prediction_id)
    ).one_or_none()
    return None if row is None else (row[0], row[1], row[2], row[3])


def record_feedback(
    engine: Engine, prediction_id: str, label: int, now: datetime | None = None
) -> StoredFeedback | None:
    """Store `label` for the answer `prediction_id` (None: no such answer, or pruned). An answer
    issued moments ago may still be queued: it is waited for until IN_FLIGHT has passed."""
    now = now or datetime.now(UTC)
    # An id from the future (a made-up one, or another replica's clock ahead) waits no longer
    # than one issued now.
    deadline_ms = min(issued_ms(prediction_id), time.time_ns() // 1_000_000) + IN_FLIGHT_MS
    while True:
        with engine.begin() as connection:
            answer = _answer(connection, prediction_id)
            if answer is not None:
                created, updated = _upsert(connection, prediction_id, label, now)
                digit, verdict, name, version = answer
                return StoredFeedback(
                    prediction_id,
                    label,
                    digit,
                    is_correct(label, digit, verdict),
                    name,
                    version,
                    created,
                    updated,
                )
        if time.time_ns() // 1_000_000 >= deadline_ms:
            return None
        time.sleep(POLL_SECONDS)  # on a worker thread: the answer is on its way from a writer


def record_contribution(
    engine: Engine, pixels: np.ndarray, label: int, model_name: str, model_version: int, api_key: str | None
) -> StoredFeedback:
    """A labelled image without an earlier answer: kept as a record of route `feedback` (the
    version served at the time, no prediction) with its label, in one transaction."""
    prediction_id = new_ids(1)[0]
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(PredictionRow).values(
                id=prediction_id,
                created_at=now,
                model_name=model_name,
                model_version=model_version,
                precision=None,
                route=ROUTE_CONTRIBUTION,
                api_key=api_key,
                pixels=np.ascontiguousarray(pixels, dtype=np.uint8).tobytes(),
                probabilities=None,
                digit=None,
                verdict=None,
            )
        )
        created, updated = _upsert(connection, prediction_id, label, now)
    return StoredFeedback(prediction_id, label, None, None, model_name, model_version, created, updated)
