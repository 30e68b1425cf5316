from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import Engine, select

from app.operations.metrics import Metrics
from app.records.feedback import IN_FLIGHT_MS, record_contribution, record_feedback
from app.records.quality import version_quality, wilson_interval
from app.records.tables import NOT_A_DIGIT, FeedbackRow, PredictionRow
from app.records.writer import PredictionLog, Retention, prune
from model_store.feedback_records import read_labelled_examples
from model_store.mnist_data import MnistSplit
from tests.app.records.conftest import answers_of


def logged(engine: Engine, metrics: Metrics, *batches: object) -> None:
    log = PredictionLog(engine, metrics, 10_000, Retention(None, None), migrate=True, schema_ready=True)
    for answers in batches:
        log.submit(answers)  # type: ignore[arg-type]
    log.start()
    log.close(10)


def test_first_feedback_is_new_and_a_second_replaces_its_label(
    engine: Engine, metrics: Metrics, digits: MnistSplit
) -> None:
    answers = answers_of(digits.images[:1], [7], version=3)
    logged(engine, metrics, answers)
    first = record_feedback(engine, answers.ids[0], 7)
    assert first is not None and first.first
    assert (first.predicted, first.correct, first.model_version) == (7, True, 3)
    again = record_feedback(engine, answers.ids[0], 1, now=first.created_at + timedelta(seconds=5))
    assert again is not None and not again.first
    assert (again.label, again.correct, again.created_at) == (1, False, first.created_at)
    with engine.connect() as connection:
        assert connection.execute(select(FeedbackRow.label)).scalars().all() == [1]


def test_feedback_on_an_unknown_old_id_finds_nothing(engine: Engine) -> None:
    issued_long_ago = f"{int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000):012x}" + "0" * 20
    assert record_feedback(engine, issued_long_ago, 3) is None


def test_feedback_on_an_id_from_the_future_gives_up_as_on_a_new_one(engine: Engine) -> None:
    started = time.monotonic()
    assert record_feedback(engine, "f" * 32, 3) is None
    assert time.monotonic() - started < IN_FLIGHT_MS / 1000 + 5


def test_not_a_digit_is_right_when_the_verdict_said_so(
    engine: Engine, metrics: Metrics, digits: MnistSplit
) -> None:
    flagged = answers_of(digits.images[:1], [4], verdict="not_a_digit")
    trusted = answers_of(digits.images[1:2], [4], verdict="digit")
    logged(engine, metrics, flagged, trusted)
    right = record_feedback(engine, flagged.ids[0], NOT_A_DIGIT)
    wrong = record_feedback(engine, trusted.ids[0], NOT_A_DIGIT)
    assert right is not None and right.correct is True
    assert wrong is not None and wrong.correct is False


def test_a_contribution_keeps_the_image_and_label_without_an_answer(
    engine: Engine, digits: MnistSplit
) -> None:
    stored = record_contribution(engine, digits.images[5], 1, "mnist", 2, "team-a")
    assert (stored.predicted, stored.correct, stored.first, stored.model_version) == (None, None, True, 2)
    examples = read_labelled_examples(engine)
    assert examples.prediction_ids.tolist() == [stored.prediction_id]
    assert np.array_equal(examples.images[0], digits.images[5])
    assert examples.labels.tolist() == [1]


def test_pruning_an_answer_takes_its_feedback(engine: Engine, metrics: Metrics, digits: MnistSplit) -> None:
    answers = answers_of(digits.images[:1], [2], created_at=datetime.now(UTC) - timedelta(days=9))
    logged(engine, metrics, answers)
    assert record_feedback(engine, answers.ids[0], 2) is not None
    assert prune(engine, Retention(max_age=timedelta(days=1), max_rows=None), datetime.now(UTC)) == 1
    with engine.connect() as connection:
        assert connection.execute(select(FeedbackRow)).all() == []
        assert connection.execute(select(PredictionRow)).all() == []


def test_quality_per_version_from_the_feedback(engine: Engine, metrics: Metrics, digits: MnistSplit) -> None:
    labels = digits.labels[:10].tolist()
    wrong = [(label + 1) % 10 for label in labels[7:]]
    answered = [*labels[:7], *wrong]  # three mistakes: the last three answered one digit up
    v1 = answers_of(digits.images[:10], answered, version=1)
    v2 = answers_of(digits.images[:4], labels[:4], version=2, verdict="unsure")
    logged(engine, metrics, v1, v2)
    for prediction_id, label in zip(v1.ids, labels, strict=True):
        record_feedback(engine, prediction_id, label)
    record_contribution(engine, digits.images[0], labels[0], "mnist", 1, None)
    newest, oldest = version_quality(engine)
    assert (newest.version, newest.answers, newest.feedback, newest.accuracy) == (2, 4, 0, None)
    assert newest.verdicts == {"digit": 0, "unsure": 4, "not_a_digit": 0}
    assert (oldest.version, oldest.answers, oldest.feedback, oldest.correct) == (1, 10, 10, 7)
    assert oldest.contributions == 1
    assert oldest.accuracy == pytest.approx(0.7)
    confusions = sorted(oldest.top_confusions())
    assert confusions == sorted(
        (label, predicted, count)
        for (label, predicted), count in Counter(zip(labels[7:], wrong, strict=True)).items()
    )


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = wilson_interval(7, 10)  # type: ignore[misc]
    assert (round(low, 4), round(high, 4)) == (0.3968, 0.8922)
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(20, 20)  # type: ignore[misc]
    assert high == 1.0 and 0.83 < low < 0.84
