"""The service's prediction log for tests outside `tests/app/records`: a database migrated as the
service migrates it at startup, and answers written by the service's own queued writer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from app.operations.metrics import Metrics
from app.records.database import create_database_engine, prepare_schema
from app.records.writer import Answers, PredictionLog, Retention


@contextmanager
def migrated_database(url: str) -> Iterator[Engine]:
    """An engine on `url`, its schema at this code's head; disposed afterwards."""
    engine = create_database_engine(url)
    prepare_schema(engine, migrate=True)
    try:
        yield engine
    finally:
        engine.dispose()


def write_answers(engine: Engine, *batches: Answers) -> None:
    """`batches` logged through the writer thread, as requests queue them; returns once written."""
    log = PredictionLog(engine, Metrics(), 10_000, Retention(None, None), migrate=True, schema_ready=True)
    for answers in batches:
        log.submit(answers)
    log.start()
    log.close(10)
