"""The prediction log as the service starts it: the engine, the schema, the writer thread."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.exc import OperationalError

from app.config import Settings
from app.operations.metrics import Metrics
from app.records.database import create_database_engine, prepare_schema
from app.records.writer import PredictionLog, Retention

log = logging.getLogger(__name__)


def retention_of(settings: Settings) -> Retention:
    days = settings.prediction_log_retention_days
    return Retention(
        max_age=timedelta(days=days) if days else None,
        max_rows=settings.prediction_log_max_rows or None,
    )


def open_prediction_log(settings: Settings, metrics: Metrics) -> PredictionLog:
    """The started log. A schema newer than this code raises SchemaError (the service refuses to
    start); an unreachable database does not: inference serves, and the writer migrates and
    writes once the database answers."""
    engine = create_database_engine(settings.database_url)
    ready = True
    try:
        prepare_schema(engine, settings.database_migrate)
    except OperationalError as exc:
        ready = False
        log.warning(
            "prediction log: the database does not answer (%s); answers queue until it does", exc.orig
        )
    records = PredictionLog(
        engine,
        metrics,
        settings.prediction_log_queue_size,
        retention_of(settings),
        settings.database_migrate,
        schema_ready=ready,
    )
    records.start()
    return records
