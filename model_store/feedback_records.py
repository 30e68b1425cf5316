"""The labelled examples in the service's prediction log, read from its database: the one query
behind the service's training export and `mnist-train --feedback`.

The service owns the tables (`app/records/tables.py` and its migrations); this module reflects
`predictions` and `feedback` by name, so their schema is written once, and reads only the columns
the training file carries (`model_store.feedback_file`). Times are stored as UTC without a zone
(SQLite keeps none), so they are compared and returned as such.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, MetaData, Table, create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError
from sqlalchemy.sql import Select

from model_store.feedback_file import FeedbackExamples
from model_store.preprocessing import IMAGE_SIDE

TABLES = ("predictions", "feedback")
# Seconds to reach PostgreSQL: a stopped server fails a run at once rather than hanging it.
CONNECT_TIMEOUT_SECONDS = 5


class FeedbackRecordsError(RuntimeError):
    """The database cannot give labelled examples; the message says which database and why."""


def describe(url: str) -> str:
    """The URL without its password, fit for a message."""
    return make_url(url).render_as_string(hide_password=True)


def open_records(url: str) -> Engine:
    """An engine that reads the log at `url`. A SQLite file that does not exist is refused rather
    than created empty (a mistyped path would otherwise read as "no feedback")."""
    parsed = make_url(url)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not Path(parsed.database).is_file():
            raise FeedbackRecordsError(f"{describe(url)}: no such database file")
    elif parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    return create_engine(url, connect_args=connect_args)


def _tables(engine: Engine) -> tuple[Table, Table]:
    metadata = MetaData()
    try:
        predictions, feedback = (Table(name, metadata, autoload_with=engine) for name in TABLES)
    except NoSuchTableError as exc:
        raise FeedbackRecordsError(
            f"{describe(str(engine.url))}: no table {exc} here, so no prediction log: is this the "
            "service's database (MNIST_DATABASE_URL), and has the service started once?"
        ) from None
    return predictions, feedback


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _labelled(predictions: Table, feedback: Table, columns: list[Any], model_name: str | None) -> Select[Any]:
    query = select(*columns).join_from(feedback, predictions, feedback.c.prediction_id == predictions.c.id)
    return query if model_name is None else query.where(predictions.c.model_name == model_name)


def _run(engine: Engine, build: Any) -> Any:
    """`build(predictions, feedback)`'s query executed; SQLAlchemy's errors become one message."""
    try:
        with engine.connect() as connection:
            return connection.execute(build(*_tables(engine))).all()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise FeedbackRecordsError(f"{describe(str(engine.url))} does not answer: {reason}") from None


def read_labelled_examples(
    engine: Engine, since: datetime | None = None, model_name: str | None = None
) -> FeedbackExamples:
    """Every answer with feedback (labelled at or after `since`; of `model_name`'s versions when
    given), in the order labelled."""

    def query(predictions: Table, feedback: Table) -> Select[Any]:
        columns = [predictions.c.pixels, feedback.c.label, predictions.c.id]
        columns += [predictions.c.model_version, feedback.c.updated_at]
        found = _labelled(predictions, feedback, columns, model_name)
        if since is not None:
            found = found.where(feedback.c.updated_at >= _naive_utc(since))
        return found.order_by(feedback.c.updated_at, predictions.c.id)

    rows = _run(engine, query)
    return FeedbackExamples(
        images=np.frombuffer(b"".join(row[0] for row in rows), dtype=np.uint8).reshape(
            -1, IMAGE_SIDE, IMAGE_SIDE
        ),
        labels=np.array([row[1] for row in rows], dtype=np.uint8),
        prediction_ids=np.array([row[2] for row in rows], dtype="<U32"),
        versions=np.array([row[3] for row in rows], dtype=np.int32),
        times=np.array([_naive_utc(row[4]) for row in rows], dtype="datetime64[ms]"),
    )


def count_labelled(engine: Engine, since: datetime | None = None, model_name: str | None = None) -> int:
    """How many answers were labelled at or after `since` (all, without it): one COUNT."""

    def query(predictions: Table, feedback: Table) -> Select[Any]:
        found = _labelled(predictions, feedback, [func.count()], model_name)
        return found if since is None else found.where(feedback.c.updated_at >= _naive_utc(since))

    return int(_run(engine, query)[0][0])
