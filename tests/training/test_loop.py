"""The correction loop end to end: `mnist-train --fine-tune-from --feedback-file` on real MNIST and
typeset digits, and the publish-time gate passing a fine-tune on true corrections and rejecting one
on shuffled labels, which then is never served."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from model_store.store import ModelStore, RejectedVersionError
from tests.conftest import assert_one_line_error, run_cli
from training.arguments import FINE_TUNE_EPOCHS, hyperparameters_from, parse_args
from training.feedback import held_out, save_corrections
from training.populations import draw
from training.presets import PRESETS
from training.train import main as train

PROG = "mnist-train"
CORRECTIONS = 500


def corrections(path: Path, shuffled: bool) -> Path:
    """Typeset digits with their true labels; `shuffled`: the training part's labels shuffled (the
    hold-out keeps the truth, as honest users' later corrections would)."""
    digits = draw("corrected", CORRECTIONS)
    ids = np.asarray([f"typeset-{i}" for i in range(CORRECTIONS)])
    labels = digits.labels.copy()
    if shuffled:
        trained = np.flatnonzero(~held_out(ids))
        labels[trained] = (labels[trained] + np.random.default_rng(0).integers(1, 10, len(trained))) % 10
    save_corrections(path, digits.images, labels, ids.tolist(), version=1)
    return path


def fine_tune(
    store: Path, mnist_dir: Path, feedback: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    argv = [
        "--preset",
        "cnn",
        "--fine-tune-from",
        "1",
        "--feedback-file",
        str(feedback),
        "--gate-against",
        "1",
    ]
    argv += ["--store", str(store), "--data-dir", str(mnist_dir), "--no-download", "--verbose", "0"]
    argv += ["--no-savedmodel", *extra]
    try:
        status = train(argv)
    except SystemExit as stopped:
        status = int(stopped.code or 0)
    return status, capsys.readouterr().err


@pytest.fixture
def store(trained_store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(trained_store, copy)
    return copy


@pytest.mark.slow
def test_fine_tune_on_true_corrections_passes_the_gate_and_is_served(
    store: Path, mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = fine_tune(store, mnist_dir, corrections(tmp_path / "true.npz", shuffled=False), capsys)
    assert status == 0, err[-2000:]
    models = ModelStore(store)
    metadata = models.read_metadata(2)
    assert metadata.gate is not None and metadata.gate.passed, metadata.gate
    against, candidate = metadata.gate.against, metadata.gate.candidate
    assert against is not None and against.version == 1
    assert candidate.holdout_accuracy is not None and against.holdout_accuracy is not None
    assert candidate.holdout_accuracy >= against.holdout_accuracy
    assert metadata.training.fine_tuned_from == 1
    feedback = metadata.training.feedback
    assert feedback is not None and feedback.examples == CORRECTIONS
    assert feedback.held_out == metadata.gate.holdout_examples > 0
    assert sum(feedback.per_label.values()) == CORRECTIONS
    assert models.resolve() == 2


@pytest.mark.slow
def test_fine_tune_on_shuffled_labels_is_rejected_kept_and_never_served(
    store: Path, mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.serving.versions import load_serving_model

    # A fifth of the fine-tune's MNIST images: the gate rejects a candidate however short its run.
    shuffled = corrections(tmp_path / "shuffled.npz", shuffled=True)
    status, err = fine_tune(store, mnist_dir, shuffled, capsys, "--limit", "4000")
    assert status == 1
    assert err.splitlines()[-1].startswith(
        "mnist-train: error: version 2 is kept but will never be served: rejected against version 1: "
    )
    assert "hold-out accuracy" in err.splitlines()[-1]
    models = ModelStore(store)
    assert models.versions() == [1, 2] and models.servable_versions() == [1]
    assert models.resolve() == 1
    assert load_serving_model(models, None, warmup_batch=1).version == 1
    with pytest.raises(RejectedVersionError, match=r"version 2 .* never served: rejected against version 1"):
        load_serving_model(models, 2, warmup_batch=1)


def test_fine_tuning_from_a_missing_version_is_one_line_error(tmp_path: Path) -> None:
    result = run_cli(
        "training.train", "--fine-tune-from", "3", "--store", "store", "--no-download", cwd=tmp_path
    )
    assert_one_line_error(result, PROG, "version 3 of model 'mnist' not found")


def test_fine_tuning_refuses_a_seed_or_holdout_of_its_own(tmp_path: Path) -> None:
    result = run_cli(
        "training.train", "--fine-tune-from", "1", "--seed", "3", "--store", "store", cwd=tmp_path
    )
    assert_one_line_error(
        result, PROG, "--seed and --holdout come from the version fine-tuned from", status=2
    )


def test_an_unreadable_corrections_file_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "c.npz").write_text("no archive")
    result = run_cli(
        "training.train", "--feedback-file", "c.npz", "--store", "store", "--no-download", cwd=tmp_path
    )
    assert_one_line_error(result, PROG, "--feedback-file: c.npz: not a feedback file")


def test_gating_against_a_missing_version_is_one_line_error(tmp_path: Path) -> None:
    result = run_cli(
        "training.train", "--gate-against", "2", "--store", "store", "--no-download", cwd=tmp_path
    )
    assert_one_line_error(result, PROG, "version 2 of model 'mnist' not found")


def test_fine_tuning_defaults_to_a_short_run_on_the_base_versions_split(tmp_path: Path) -> None:
    base = {"seed": 7, "holdout": 3000}
    store = ["--store", str(tmp_path / "store")]
    hp = hyperparameters_from(parse_args(["--preset", "cnn", "--fine-tune-from", "1", *store]), base)
    assert hp.epochs == FINE_TUNE_EPOCHS
    assert hp.learning_rate == PRESETS["cnn"].defaults.learning_rate / 10
    assert (hp.seed, hp.holdout) == (7, 3000)
    assert hp.precision == PRESETS["cnn"].defaults.precision
    chosen = parse_args(["--fine-tune-from", "1", "--epochs", "3", "--precision", "float32", *store])
    assert (hyperparameters_from(chosen, base).epochs, hyperparameters_from(chosen, base).precision) == (
        3,
        "float32",
    )
