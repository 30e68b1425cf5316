"""The rollout's history and evidence in the database: its migration, the single winner of each
decision, and what each version showed in a rollout's window."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from sqlalchemy import Engine, func, inspect, select

from app.operations.metrics import Metrics
from app.records import rollouts
from app.records.database import alembic_config, create_database_engine, prepare_schema
from app.records.feedback import record_feedback
from app.records.tables import PredictionRow
from app.records.writer import FailedAnswer, PredictionLog, Retention
from app.serving.rollout_rule import Arm
from model_store.mnist_data import MnistSplit
from tests.app.records.conftest import answers_of
from tests.support.waiting import wait_until

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_the_rollout_migration_upgrades_and_downgrades_on_sqlite(tmp_path: Path, digits: MnistSplit) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'log.db'}")
    prepare_schema(engine, migrate=True)
    assert {"rollouts", "answer_errors"} <= set(inspect(engine).get_table_names())
    assert "latency_ms" in {column["name"] for column in inspect(engine).get_columns("predictions")}
    log = PredictionLog(engine, Metrics(), 100, Retention(None, None), migrate=True, schema_ready=True)
    log.start()
    log.submit(answers_of(digits.images[:2], [7, 2]))
    log.close(10)

    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0001")
    inspector = inspect(engine)
    assert not {"rollouts", "answer_errors"} & set(inspector.get_table_names())
    assert "latency_ms" not in {column["name"] for column in inspector.get_columns("predictions")}
    with engine.connect() as connection:  # the answers logged before are kept
        assert connection.execute(select(func.count()).select_from(PredictionRow)).scalar_one() == 2

    prepare_schema(engine, migrate=True)
    assert "rollouts" in inspect(engine).get_table_names()
    engine.dispose()


def test_only_one_process_starts_a_rollout_and_a_version_is_canaried_once(engine: Engine) -> None:
    started = rollouts.start(engine, 2, 1, 10.0, NOW)
    assert started is not None and started.state == "canary"
    assert rollouts.start(engine, 2, 1, 10.0, NOW) is None  # the same candidate, a second time
    assert rollouts.start(engine, 3, 1, 10.0, NOW) is None  # another while one runs
    assert rollouts.active(engine) == started

    assert rollouts.end(
        engine, started.id, "rolled_back", "rollout", "worse", {"difference": [-1, -0.5]}, NOW
    )
    assert not rollouts.end(engine, started.id, "promoted", "rollout", "better", None, NOW)
    assert rollouts.active(engine) is None
    assert rollouts.start(engine, 2, 1, 10.0, NOW) is None  # rolled back: never canaried again
    (ended,) = rollouts.history(engine)
    assert (ended.state, ended.decided_by, ended.reason, ended.ended_at) == (
        "rolled_back",
        "rollout",
        "worse",
        NOW,
    )
    assert ended.evidence == {"difference": [-1, -0.5]}

    newer = rollouts.start(engine, 3, 1, 10.0, NOW + timedelta(seconds=1))
    assert newer is not None
    assert [rollout.candidate for rollout in rollouts.history(engine)] == [3, 2]  # newest first


def test_a_windows_evidence_counts_answers_feedback_failures_and_the_p99(
    engine: Engine, digits: MnistSplit
) -> None:
    log = PredictionLog(engine, Metrics(), 1000, Retention(None, None), migrate=True, schema_ready=True)
    log.start()
    before = answers_of(
        digits.images[:5], digits.labels[:5].tolist(), version=2, created_at=NOW - timedelta(1)
    )
    log.submit(before)  # before the window: not counted
    candidate = []
    for n in range(100):  # latencies 1..100 ms: the nearest-rank p99 is the 99th
        answers = answers_of(digits.images[n : n + 1], [int(digits.labels[n])], version=2, created_at=NOW)
        log.submit(dataclasses.replace(answers, latency_ms=float(n + 1)))
        candidate.append(answers.ids[0])
    wrong = [(int(label) + 1) % 10 for label in digits.labels[:4]]
    stable = answers_of(digits.images[:4], wrong, version=1, created_at=NOW)
    log.submit(dataclasses.replace(stable, latency_ms=3.0))
    log.submit_failure(FailedAnswer(NOW, 2, 3, "RuntimeError: the runtime failed"))
    log.flush_soon()
    wait_until(lambda: rollouts.arms(engine, (2,), NOW, None)[2].answers == 100)
    log.close(10)
    for prediction_id, label in zip(candidate[:10], digits.labels[:10].tolist(), strict=True):
        assert record_feedback(engine, prediction_id, label) is not None
    for prediction_id, label in zip(stable.ids, digits.labels[:4].tolist(), strict=True):
        assert record_feedback(engine, prediction_id, label) is not None
    assert record_feedback(engine, before.ids[0], int(digits.labels[0])) is not None

    arms = rollouts.arms(engine, (2, 1), NOW, None)
    assert arms[2] == Arm(answers=100, feedback=10, correct=10, errors=3, p99_ms=99.0)
    assert arms[1] == Arm(answers=4, feedback=4, correct=0, errors=0, p99_ms=3.0)
    assert rollouts.arms(engine, (2, 1), NOW, NOW)[2] == Arm(0, 0, 0, 0, None)  # an empty window
