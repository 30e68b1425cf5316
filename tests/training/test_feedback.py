"""Users' corrections as training data: reading the export, the hold-out split, the mix with MNIST."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from model_store.feedback_file import FORMAT_VERSION
from model_store.mnist_data import MnistSplit
from training.feedback import (
    HOLDOUT_SHARE,
    MAX_REPEATS,
    NOT_A_DIGIT,
    CorrectionsError,
    held_out,
    load_corrections,
    mix_in,
    outlier_pool,
    repeats_for,
    save_corrections,
    split,
)


def corrections_file(tmp_path: Path, labels: list[int], /, **replaced: np.ndarray) -> Path:
    """A corrections export, as `python -m app.records export` writes it, with one image per label
    (its pixels all equal to its index, mod 256), labelled a second apart from 1,700,000,000 s."""
    path = tmp_path / "corrections.npz"
    count = len(labels)
    arrays: dict[str, np.ndarray] = {
        "images": np.stack([np.full((28, 28), i % 256, np.uint8) for i in range(count)]),
        "labels": np.asarray(labels, np.uint8),
        "prediction_ids": np.asarray([f"id-{i}" for i in range(count)]),
        "versions": np.full(count, 3, np.int32),
        "times": (1_700_000_000_000 + 1000 * np.arange(count)).astype("datetime64[ms]"),
        "format_version": np.array(FORMAT_VERSION),
    }
    merged = arrays | replaced
    np.savez(
        path,
        images=merged["images"],
        labels=merged["labels"],
        prediction_ids=merged["prediction_ids"],
        versions=merged["versions"],
        times=merged["times"],
        format_version=merged["format_version"],
    )
    return path


def test_load_corrections_reads_every_array_and_the_files_sha256(tmp_path: Path) -> None:
    path = corrections_file(tmp_path, [3, NOT_A_DIGIT, 7])
    corrections = load_corrections(path)
    assert corrections.labels.tolist() == [3, 10, 7]
    assert corrections.prediction_ids.tolist() == ["id-0", "id-1", "id-2"]
    assert corrections.images.shape == (3, 28, 28) and corrections.images[2, 0, 0] == 2
    assert corrections.versions.tolist() == [3, 3, 3]
    assert corrections.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert corrections.digits().labels.tolist() == [3, 7]
    assert corrections.non_digits()[0, 0, 0] == 1


@pytest.mark.parametrize(
    ("replaced", "words"),
    [
        ({"images": np.zeros((2, 28, 28), np.float32)}, "images must be (2, 28, 28) uint8"),
        ({"images": np.zeros((2, 32, 32), np.uint8)}, "images must be (2, 28, 28) uint8"),
        ({"labels": np.asarray([1, 11])}, "labels must be 0-10"),
        ({"labels": np.asarray([1.0, 2.0])}, "labels must be whole numbers"),
        ({"labels": np.asarray([1, 2, 3])}, "images must be (3, 28, 28) uint8"),
        ({"versions": np.asarray([1, 2, 3])}, "versions has 3 rows, labels 2"),
        ({"prediction_ids": np.asarray(["a", "a"])}, "a prediction id appears twice"),
        ({"format_version": np.array(FORMAT_VERSION + 1)}, f"format version {FORMAT_VERSION + 1}"),
    ],
)
def test_load_corrections_refuses_a_file_that_breaks_the_format(
    tmp_path: Path, replaced: dict[str, np.ndarray], words: str
) -> None:
    with pytest.raises(CorrectionsError, match=r"corrections.npz: ") as refused:
        load_corrections(corrections_file(tmp_path, [1, 2], **replaced))
    assert words in str(refused.value)


def test_load_corrections_names_a_missing_array_and_a_file_that_is_no_npz(tmp_path: Path) -> None:
    path = tmp_path / "partial.npz"
    np.savez(path, images=np.zeros((1, 28, 28), np.uint8), format_version=np.array(FORMAT_VERSION))
    with pytest.raises(CorrectionsError, match=r"partial.npz: not a feedback file .*labels"):
        load_corrections(path)
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(CorrectionsError, match=r"text.npz: not a feedback file"):
        load_corrections(tmp_path / "text.npz")
    with pytest.raises(CorrectionsError, match=r"missing.npz: cannot read it"):
        load_corrections(tmp_path / "missing.npz")


def test_the_hold_out_is_decided_by_each_prediction_id_alone() -> None:
    ids = np.asarray([f"prediction-{i}" for i in range(5000)])
    hold = held_out(ids)
    assert abs(hold.mean() - HOLDOUT_SHARE) < 0.02
    # The same id lands on the same side in any other export, in any order.
    subset = np.random.default_rng(0).permutation(5000)[:700]
    assert (held_out(ids[subset]) == hold[subset]).all()


def test_split_keeps_every_correction_on_exactly_one_side(tmp_path: Path) -> None:
    corrections = load_corrections(corrections_file(tmp_path, [i % 11 for i in range(200)]))
    trained, hold = split(corrections)
    assert len(trained.labels) + len(hold.labels) == 200
    assert not set(trained.prediction_ids) & set(hold.prediction_ids)
    assert held_out(hold.prediction_ids).all() and not held_out(trained.prediction_ids).any()


@pytest.mark.parametrize(
    ("corrections", "mnist", "repeats"),
    [(0, 20000, 0), (1000, 20000, 5), (100, 20000, MAX_REPEATS), (20000, 20000, 1), (400, 20000, 12)],
)
def test_repeats_make_corrections_a_fifth_of_an_epoch_within_bounds(
    corrections: int, mnist: int, repeats: int
) -> None:
    assert repeats_for(corrections, mnist) == repeats


def test_mix_in_appends_the_training_digits_repeated_and_records_what_it_used(tmp_path: Path) -> None:
    labels = [i % 11 for i in range(400)]
    corrections = load_corrections(
        corrections_file(tmp_path, labels, images=np.zeros((400, 28, 28), np.uint8))
    )
    mnist = MnistSplit(np.full((4000, 28, 28), 255, np.uint8), np.zeros(4000, np.uint8))
    mix = mix_in(corrections, mnist, outliers=True)
    digits = len(mix.trained.digits().labels)
    assert mix.record.repeats == repeats_for(digits, 4000)
    assert len(mix.mixed.labels) == 4000 + mix.record.repeats * digits
    assert (mix.mixed.images[4000:] == 0).all()  # the corrections, after MNIST
    assert mix.record.share_of_epoch == pytest.approx(mix.record.repeats * digits / len(mix.mixed.labels))
    assert mix.record.examples == 400 and mix.record.trained_on + mix.record.held_out == 400
    assert mix.record.per_label["not_a_digit"] == labels.count(NOT_A_DIGIT)
    assert mix.record.per_label["0"] == labels.count(0)
    assert mix.record.first_time is not None and mix.record.first_time.timestamp() == 1_700_000_000.0
    assert mix.record.last_time is not None and mix.record.last_time.timestamp() == 1_700_000_399.0
    assert mix.record.not_a_digit.endswith("trained as outliers (uniform target)")
    assert mix_in(corrections, mnist, outliers=False).record.not_a_digit.endswith(
        "left out: this preset trains no outliers"
    )


def test_non_digit_corrections_join_the_outlier_pool_repeated(tmp_path: Path) -> None:
    corrections = load_corrections(corrections_file(tmp_path, [NOT_A_DIGIT] * 50))
    pool = np.zeros((800, 28, 28), np.uint8)
    extended = outlier_pool(pool, corrections)
    assert len(extended) == 800 + 50 * repeats_for(50, 800)
    assert (outlier_pool(pool, load_corrections(corrections_file(tmp_path, [1, 2]))) == pool).all()


def test_save_corrections_writes_what_load_corrections_reads(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    save_corrections(tmp_path / "out.npz", images, np.asarray([4, 10, 2]), ["a", "b", "c"], version=7)
    corrections = load_corrections(tmp_path / "out.npz")
    assert (corrections.images == images).all() and corrections.versions.tolist() == [7, 7, 7]
