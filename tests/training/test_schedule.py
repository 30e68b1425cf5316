"""`--min-new-corrections`: which corrections are new to the store's versions, the decision and
its one line, on a real SQLite prediction log written by the service's own code; and the command
line's answers before any training (nothing to do, no database, no feedback, no version to start
from)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import CompletedProcess

import numpy as np
import pytest
from sqlalchemy import Engine

from app.records.database import create_database_engine, prepare_schema
from app.records.feedback import record_contribution
from model_store.metadata import METADATA_FILE, MODEL_FILE, FeedbackUsed, Gate, GateScores
from model_store.pins import write_pin
from model_store.store import ModelStore
from tests.conftest import assert_one_line_error, make_metadata, run_cli
from training.arguments import SERVING
from training.feedback import CorrectionsError
from training.schedule import RetrainCheck, check_new_corrections
from training.train import open_base

PROG = "mnist-train"
START = datetime(2026, 12, 1, 12, 0, 0, 500_000, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store", "mnist")


def corrections_at(engine: Engine, *moments: datetime) -> None:
    """One labelled image per moment, as POST /feedback keeps it, labelled at that moment."""
    for moment in moments:
        stored = record_contribution(engine, np.zeros((28, 28), np.uint8), 4, "mnist", 1, None)
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "UPDATE feedback SET created_at = ?, updated_at = ? WHERE prediction_id = ?",
                (moment.replace(tzinfo=None), moment.replace(tzinfo=None), stored.prediction_id),
            )


def publish(store: ModelStore, version: int, trained_until: datetime | None, passed: bool = True) -> None:
    """A version laid by hand, trained on corrections up to `trained_until` (None: on none), as its
    record keeps that time: to the millisecond."""
    feedback = None
    if trained_until is not None:
        recorded = trained_until.replace(microsecond=trained_until.microsecond // 1000 * 1000)
        feedback = FeedbackUsed(
            file_sha256="0" * 64,
            examples=1,
            trained_on=1,
            held_out=0,
            held_out_share=0.2,
            per_label={"4": 1},
            first_time=recorded,
            last_time=recorded,
            share_of_epoch=0.0,
            repeats=1,
            not_a_digit="0 trained as outliers (uniform target)",
        )
    base = make_metadata(store.name, version)
    training = base.training.model_copy(update={"feedback": feedback, "preset": "cnn"})
    scores = GateScores(mnist_accuracy=0.99, int8_default=False)
    gate = Gate(
        passed=passed,
        reason="passed" if passed else "rejected",
        against=None,
        candidate=scores,
        holdout_examples=0,
    )
    folder = store.version_path(version)
    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_bytes(b"never read here")
    metadata = base.model_copy(update={"training": training, "gate": gate})
    (folder / METADATA_FILE).write_text(metadata.model_dump_json())


def test_counts_the_corrections_labelled_after_the_serving_versions(
    store: ModelStore, log_engine: Engine, log_url: str
) -> None:
    # Version 1 trained on the corrections up to START (its record: START to the millisecond).
    publish(store, 1, START)
    corrections_at(
        log_engine, START - timedelta(hours=1), START, *(START + timedelta(minutes=m) for m in (1, 2, 3))
    )
    check = check_new_corrections(store, log_url, "mnist", needed=3)
    assert (check.new, check.serving, check.baseline, check.due) == (3, 1, 1, True)
    assert check.summary() == "3 new corrections since version 1 was trained, 3 needed: training"
    too_few = check_new_corrections(store, log_url, "mnist", needed=200)
    assert not too_few.due
    assert too_few.summary() == "3 new corrections since version 1 was trained, 200 needed: nothing to do"
    assert check_new_corrections(store, log_url, "another-model", needed=1).new == 0


def test_a_rejected_newer_version_moves_the_count_on_so_a_schedule_does_not_retry_the_same(
    store: ModelStore, log_engine: Engine, log_url: str
) -> None:
    publish(store, 1, START)
    publish(store, 2, START + timedelta(minutes=2), passed=False)
    corrections_at(log_engine, *(START + timedelta(minutes=m) for m in (1, 2, 3)))
    check = check_new_corrections(store, log_url, "mnist", needed=1)
    assert (check.new, check.serving, check.baseline) == (1, 1, 2)
    assert check.summary() == "1 new corrections since version 2 (not served) was trained, 1 needed: training"


def test_a_pinned_version_is_the_serving_one(store: ModelStore, log_engine: Engine, log_url: str) -> None:
    publish(store, 1, START)
    publish(store, 2, None)
    corrections_at(log_engine, START - timedelta(minutes=1), START + timedelta(minutes=1))
    # Version 2, the newest, was trained on none of them: every correction is new to it.
    assert check_new_corrections(store, log_url, "mnist", needed=1).summary() == (
        "2 new corrections (version 2 was trained on none), 1 needed: training"
    )
    write_pin(store, 1, "test")
    pinned = check_new_corrections(store, log_url, "mnist", needed=1)
    assert (pinned.new, pinned.serving, pinned.baseline) == (1, 1, 1)


def test_an_empty_store_counts_every_correction(store: ModelStore, log_engine: Engine, log_url: str) -> None:
    corrections_at(log_engine, START, START + timedelta(minutes=1))
    check = check_new_corrections(store, log_url, "mnist", needed=5)
    assert check == RetrainCheck(new=2, needed=5, serving=None, baseline=None)
    assert check.summary() == "2 new corrections (the store serves no version yet), 5 needed: nothing to do"


def test_an_unreadable_database_is_a_corrections_error(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(CorrectionsError, match=r"missing.db: no such database file"):
        check_new_corrections(store, f"sqlite:///{tmp_path / 'missing.db'}", "mnist", needed=1)


def test_fine_tuning_from_serving_opens_the_pinned_else_the_newest_servable(store: ModelStore) -> None:
    publish(store, 1, None)
    publish(store, 2, None)
    publish(store, 3, None, passed=False)
    base = open_base(store, SERVING)
    assert base is not None and base.version == 2
    write_pin(store, 1, "test")
    base = open_base(store, SERVING)
    assert base is not None and base.version == 1
    assert open_base(store, None) is None


def train_cli(tmp_path: Path, url: str, *args: str) -> CompletedProcess[str]:
    """`mnist-train ARGS` on the store `store` beside the log at `url`."""
    env = {"MNIST_DATABASE_URL": url}
    return run_cli("training.train", *args, "--store", "store", "--no-download", cwd=tmp_path, env=env)


def test_too_few_new_corrections_is_one_line_and_success(
    store: ModelStore, log_engine: Engine, log_url: str, tmp_path: Path
) -> None:
    publish(store, 1, START)
    corrections_at(log_engine, *(START + timedelta(minutes=m) for m in range(1, 13)))
    result = train_cli(
        tmp_path, log_url, "--feedback", "--min-new-corrections", "200", "--fine-tune-from", SERVING
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "12 new corrections since version 1 was trained, 200 needed: nothing to do\n"


def test_an_empty_log_is_nothing_to_do_for_a_schedule(
    log_engine: Engine, log_url: str, tmp_path: Path
) -> None:
    result = train_cli(tmp_path, log_url, "--feedback", "--min-new-corrections", "5")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "0 new corrections (the store serves no version yet), 5 needed: nothing to do\n"


@pytest.mark.parametrize(
    ("database", "args", "fragments"),
    [
        ("missing", ["--feedback"], ["--feedback: sqlite:///", "missing.db: no such database file"]),
        ("missing", ["--feedback", "--min-new-corrections", "5"], ["missing.db: no such database file"]),
        ("empty", ["--feedback"], ["--feedback: ", "empty.db: no table predictions here"]),
        ("log", ["--feedback"], ["--feedback: ", "log.db holds no labelled answers of model 'mnist' yet"]),
        ("log", ["--fine-tune-from", SERVING], ["--fine-tune-from serving: the store serves no version yet"]),
    ],
    ids=["no-database", "no-database-to-check", "not-the-log", "no-feedback", "nothing-served"],
)
def test_mistakes_are_one_line_before_training(
    tmp_path: Path, database: str, args: list[str], fragments: list[str]
) -> None:
    url = f"sqlite:///{tmp_path / database}.db"
    if database == "empty":
        create_database_engine(url).connect().close()
    elif database == "log":
        prepare_schema(create_database_engine(url), migrate=True)
    assert_one_line_error(train_cli(tmp_path, url, *args), PROG, *fragments)


def test_min_new_corrections_needs_the_database(tmp_path: Path, log_url: str) -> None:
    result = train_cli(tmp_path, log_url, "--feedback-file", "c.npz", "--min-new-corrections", "5")
    assert_one_line_error(
        result, PROG, "--min-new-corrections counts the corrections in the database: add --feedback", status=2
    )
