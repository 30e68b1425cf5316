"""`mnist-train --feedback` end to end on a real PostgreSQL server: the service's own code logs
answers and their corrections, the scheduled command says when there are too few, then fine-tunes
the serving version on them, and the next check finds nothing new."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.records.feedback import record_contribution, record_feedback
from model_store.feedback_records import describe
from model_store.store import ModelStore
from tests.app.records.conftest import answers_of
from tests.support.postgres import PostgresServer
from tests.support.prediction_log import migrated_database, write_answers
from training.populations import draw
from training.train import main as train

ANSWERED, CONTRIBUTED = 40, 20


def run(
    argv: list[str], store: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """`mnist-train ARGV` in this process: its exit status, stdout and stderr."""
    argv = [*argv, "--store", str(store), "--data-dir", str(mnist_dir), "--no-download", "--verbose", "0"]
    try:
        status = train(argv)
    except SystemExit as stopped:
        status = int(stopped.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def label_typeset_digits(engine: Engine) -> datetime:
    """Typeset digits the serving version answered, corrected by users, and more sent with their
    label; when the last label was given."""
    digits = draw("corrected", ANSWERED + CONTRIBUTED)
    answers = answers_of(digits.images[:ANSWERED], [0] * ANSWERED, version=1)
    write_answers(engine, answers)
    stored = [
        record_feedback(engine, prediction_id, int(label))
        for prediction_id, label in zip(answers.ids, digits.labels[:ANSWERED], strict=True)
    ]
    for image, label in zip(digits.images[ANSWERED:], digits.labels[ANSWERED:], strict=True):
        stored.append(record_contribution(engine, image, int(label), "mnist", 1, "team-a"))
    assert all(item is not None for item in stored)
    return max(item.updated_at for item in stored if item is not None)


@pytest.mark.slow
def test_feedback_from_postgresql_retrains_the_serving_version_once_enough_corrections_arrived(
    postgres: PostgresServer,
    trained_store: Path,
    mnist_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = Path(shutil.copytree(trained_store, tmp_path / "store"))
    monkeypatch.setenv("MNIST_DATABASE_URL", postgres.url)
    with migrated_database(postgres.url) as engine:
        status, _, err = run(["--feedback"], store, mnist_dir, capsys)
        assert status == 1
        assert err.splitlines()[-1] == (
            f"mnist-train: error: --feedback: {describe(postgres.url)} holds no labelled answers of model "
            "'mnist' yet: users label answers with POST /feedback"
        )
        last_label = label_typeset_digits(engine)
    scheduled = ["--preset", "cnn", "--feedback", "--fine-tune-from", "serving", "--min-new-corrections"]
    status, out, _ = run([*scheduled, "100"], store, mnist_dir, capsys)
    assert (status, out) == (
        0,
        "60 new corrections (version 1 was trained on none), 100 needed: nothing to do\n",
    )
    assert ModelStore(store).versions() == [1]

    # A short fine-tune: the loop, not the model's quality, is under test here.
    status, out, err = run([*scheduled, "50", "--limit", "2000", "--no-savedmodel"], store, mnist_dir, capsys)
    models = ModelStore(store)
    assert models.versions() == [1, 2], err[-2000:]
    assert out.splitlines()[0] == "60 new corrections (version 1 was trained on none), 50 needed: training"
    metadata = models.read_metadata(2)
    assert metadata.training.fine_tuned_from == 1
    feedback = metadata.training.feedback
    assert feedback is not None and feedback.source == describe(postgres.url)
    assert feedback.examples == ANSWERED + CONTRIBUTED == feedback.trained_on + feedback.held_out
    assert feedback.last_time is not None
    assert abs((feedback.last_time - last_label).total_seconds()) < 0.001
    assert metadata.gate is not None and metadata.gate.holdout_examples == feedback.held_out > 0
    # The gate decides whether it is served; the run says so in its exit status.
    assert status == (0 if metadata.gate.passed else 1), err[-2000:]

    status, out, _ = run([*scheduled, "1"], store, mnist_dir, capsys)
    unserved = "" if metadata.gate.passed else " (not served)"
    assert (status, out) == (
        0,
        f"0 new corrections since version 2{unserved} was trained, 1 needed: nothing to do\n",
    )
    assert ModelStore(store).versions() == [1, 2]
