"""The labelled examples in the log, as the training file `model_store.feedback_file` describes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, select

from app.records.tables import FeedbackRow, PredictionRow
from model_store.feedback_file import FeedbackExamples, write_feedback_file
from model_store.preprocessing import IMAGE_SIDE


def labelled_examples(engine: Engine, since: datetime | None = None) -> FeedbackExamples:
    """Every answer with feedback (labelled at or after `since`), in the order labelled."""
    query = (
        select(
            PredictionRow.pixels,
            FeedbackRow.label,
            PredictionRow.id,
            PredictionRow.model_version,
            FeedbackRow.updated_at,
        )
        .join(FeedbackRow, FeedbackRow.prediction_id == PredictionRow.id)
        .order_by(FeedbackRow.updated_at, PredictionRow.id)
    )
    if since is not None:
        query = query.where(FeedbackRow.updated_at >= since)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return FeedbackExamples(
        images=np.frombuffer(b"".join(row[0] for row in rows), dtype=np.uint8).reshape(
            -1, IMAGE_SIDE, IMAGE_SIDE
        ),
        labels=np.array([row[1] for row in rows], dtype=np.uint8),
        prediction_ids=np.array([row[2] for row in rows], dtype="<U32"),
        versions=np.array([row[3] for row in rows], dtype=np.int32),
        times=np.array([row[4].replace(tzinfo=None) for row in rows], dtype="datetime64[ms]"),
    )


def export_feedback(engine: Engine, out: Path, since: datetime | None = None) -> int:
    """Write the labelled examples to `out`; how many."""
    examples = labelled_examples(engine, since)
    write_feedback_file(out, examples)
    return len(examples)
