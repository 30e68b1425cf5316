"""The labelled examples in the log, as the training file `model_store.feedback_file` describes;
the query is the store's (`model_store.feedback_records`), the one `mnist-train --feedback` runs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from model_store.feedback_file import write_feedback_file
from model_store.feedback_records import read_labelled_examples


def export_feedback(engine: Engine, out: Path, since: datetime | None = None) -> int:
    """Write the labelled examples to `out`; how many."""
    examples = read_labelled_examples(engine, since)
    write_feedback_file(out, examples)
    return len(examples)
