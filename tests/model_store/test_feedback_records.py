"""The labelled examples read straight from the prediction log, on a real SQLite file written by the
service's own writer: the arrays the export writes, the count behind `--min-new-corrections`, and
one message for each database that cannot give them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, create_engine

from app.records.export import export_feedback
from app.records.feedback import record_contribution, record_feedback
from model_store.feedback_file import read_feedback_file
from model_store.feedback_records import (
    FeedbackRecordsError,
    count_labelled,
    describe,
    open_records,
    read_labelled_examples,
)
from model_store.mnist_data import MnistSplit, load_split
from tests.app.records.conftest import answers_of
from tests.support.live_server import free_port
from tests.support.prediction_log import write_answers

START = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "test")


def test_reads_every_labelled_answer_in_the_order_labelled(log_engine: Engine, digits: MnistSplit) -> None:
    engine = log_engine
    answers = answers_of(digits.images[:4], [1, 2, 3, 4], version=3)
    write_answers(engine, answers)
    ids = answers.ids
    # Labelled in reverse order, a minute apart; the third answer never gets a label.
    for minute, index in enumerate([3, 1, 0]):
        record_feedback(engine, ids[index], int(digits.labels[index]), now=START + timedelta(minutes=minute))
    record_feedback(engine, ids[1], 10, now=START + timedelta(minutes=5))  # relabelled: not a digit
    contribution = record_contribution(engine, digits.images[9], 6, "mnist", 2, None)

    examples = read_labelled_examples(engine)
    assert examples.prediction_ids.tolist() == [ids[3], ids[0], ids[1], contribution.prediction_id]
    assert np.array_equal(examples.images, digits.images[[3, 0, 1, 9]])
    assert examples.labels.tolist() == [int(digits.labels[3]), int(digits.labels[0]), 10, 6]
    assert examples.versions.tolist() == [3, 3, 3, 2]
    # UTC, to the millisecond, as the export keeps them.
    assert examples.times[0] == np.datetime64("2026-12-01T12:00:00.123")
    assert examples.times[2] == np.datetime64("2026-12-01T12:05:00.123")

    later = read_labelled_examples(engine, since=START + timedelta(minutes=1))
    assert later.prediction_ids.tolist() == [ids[0], ids[1], contribution.prediction_id]
    assert len(read_labelled_examples(engine, model_name="another")) == 0


def test_the_export_writes_exactly_what_the_reader_reads(
    log_engine: Engine, digits: MnistSplit, tmp_path: Path
) -> None:
    engine = log_engine
    for i in range(5):
        record_contribution(engine, digits.images[i], int(digits.labels[i]), "mnist", 1, "team-a")
    assert export_feedback(engine, tmp_path / "export.npz") == 5
    exported, read = read_feedback_file(tmp_path / "export.npz"), read_labelled_examples(engine)
    for name in ("images", "labels", "prediction_ids", "versions", "times"):
        assert np.array_equal(getattr(exported, name), getattr(read, name)), name


def test_counts_the_labels_given_since_a_moment(log_engine: Engine, digits: MnistSplit) -> None:
    engine = log_engine
    answers = answers_of(digits.images[:6], list(range(6)), version=1)
    write_answers(engine, answers)
    for minute, prediction_id in enumerate(answers.ids):
        record_feedback(engine, prediction_id, minute, now=START + timedelta(minutes=minute))
    assert count_labelled(engine) == 6
    assert count_labelled(engine, START + timedelta(minutes=2)) == 4
    # A moment with a zone and one without (taken as UTC) name the same instant.
    assert count_labelled(engine, (START + timedelta(minutes=2)).replace(tzinfo=None)) == 4
    eastern = (START + timedelta(minutes=4)).astimezone(timezone(timedelta(hours=-5)))
    assert count_labelled(engine, eastern) == 2
    assert count_labelled(engine, START + timedelta(days=1)) == 0
    assert count_labelled(engine, model_name="another") == 0


def test_a_missing_sqlite_file_is_refused_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'typo.db'}"
    with pytest.raises(FeedbackRecordsError, match=r"typo.db: no such database file"):
        open_records(url)
    assert not (tmp_path / "typo.db").exists()


def test_a_database_without_the_prediction_log_is_named(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    create_engine(url).connect().close()  # an empty SQLite file
    engine = open_records(url)
    with pytest.raises(FeedbackRecordsError, match=r"other.db: no table predictions here, so no prediction"):
        read_labelled_examples(engine)


def test_a_database_that_does_not_answer_is_one_message_without_the_password() -> None:
    url = f"postgresql+psycopg://mnist:s3cret@127.0.0.1:{free_port()}/mnist"
    with pytest.raises(FeedbackRecordsError) as refused:
        count_labelled(open_records(url))
    message = str(refused.value)
    assert message.startswith(f"{describe(url)} does not answer: ") and "\n" not in message
    assert "s3cret" not in message and "***" in message
