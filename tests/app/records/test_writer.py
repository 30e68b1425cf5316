from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.operations.metrics import Metrics
from app.records.tables import PredictionRow
from app.records.writer import PredictionLog, Retention, delete_between, prune
from model_store.mnist_data import MnistSplit
from tests.app.records.conftest import answers_of
from tests.support.waiting import wait_until

KEEP_ALL = Retention(max_age=None, max_rows=None)


def count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(PredictionRow)).scalar_one())


def started_log(engine: Engine, metrics: Metrics, queue_size: int = 1000) -> PredictionLog:
    log = PredictionLog(engine, metrics, queue_size, KEEP_ALL, migrate=True, schema_ready=True)
    log.start()
    return log


def test_queued_answers_are_written_with_what_the_model_saw(
    engine: Engine, metrics: Metrics, digits: MnistSplit
) -> None:
    log = started_log(engine, metrics)
    answers = answers_of(digits.images[:3], digits.labels[:3].tolist(), api_key="team-a")
    log.submit(answers)
    wait_until(lambda: count(engine) == 3)
    log.close(10)
    with Session(engine) as session:
        row = session.get_one(PredictionRow, answers.ids[1])
    assert np.array_equal(np.frombuffer(row.pixels, np.uint8).reshape(28, 28), digits.images[1])
    assert row.digit == digits.labels[1]
    assert row.probabilities is not None and row.digit is not None
    assert np.frombuffer(row.probabilities, "<f4")[row.digit] == np.float32(0.9)
    assert (row.verdict, row.api_key, row.route, row.precision) == ("digit", "team-a", "/predict", "float32")
    assert row.created_at.tzinfo is not None
    assert metrics.registry.get_sample_value("mnist_prediction_log_written_total") == 3


def test_a_full_queue_drops_new_answers_and_counts_them(
    engine: Engine, metrics: Metrics, digits: MnistSplit
) -> None:
    # Not started: nothing drains the queue, as when the database is slow.
    log = PredictionLog(engine, metrics, 5, KEEP_ALL, migrate=True, schema_ready=True)
    log.submit(answers_of(digits.images[:4], [0] * 4))
    log.submit(answers_of(digits.images[:2], [0] * 2))
    assert log.pending == 4
    assert metrics.registry.get_sample_value("mnist_prediction_log_dropped_total") == 2
    log.start()
    wait_until(lambda: count(engine) == 4)
    log.close(10)


def test_close_writes_what_is_queued(engine: Engine, metrics: Metrics, digits: MnistSplit) -> None:
    log = PredictionLog(engine, metrics, 100, KEEP_ALL, migrate=True, schema_ready=True)
    log.submit(answers_of(digits.images[:7], [1] * 7))
    log.start()
    log.close(10)
    assert count(engine) == 7


def test_retention_prunes_by_age_and_by_count_oldest_first(
    engine: Engine, metrics: Metrics, digits: MnistSplit
) -> None:
    now = datetime.now(UTC)
    log = started_log(engine, metrics)
    old = answers_of(digits.images[:2], [0, 0], created_at=now - timedelta(days=40))
    log.submit(old)
    recent = [answers_of(digits.images[i : i + 1], [0]) for i in range(5)]
    for answers in recent:
        log.submit(answers)
    wait_until(lambda: count(engine) == 7)
    log.close(10)
    assert prune(engine, Retention(max_age=timedelta(days=30), max_rows=None), now) == 2
    assert prune(engine, Retention(max_age=None, max_rows=3), now) == 2
    with engine.connect() as connection:
        kept = set(connection.execute(select(PredictionRow.id)).scalars())
    assert kept == {answers.ids[0] for answers in recent[2:]}


def test_delete_between_removes_only_the_range(engine: Engine, metrics: Metrics, digits: MnistSplit) -> None:
    now = datetime.now(UTC)
    log = started_log(engine, metrics)
    for days in (10, 5, 1):
        log.submit(answers_of(digits.images[:2], [0, 0], created_at=now - timedelta(days=days)))
    wait_until(lambda: count(engine) == 6)
    log.close(10)
    assert delete_between(engine, now - timedelta(days=7), now - timedelta(days=2)) == 2
    assert delete_between(engine, None, now - timedelta(days=7)) == 2
    assert count(engine) == 2
