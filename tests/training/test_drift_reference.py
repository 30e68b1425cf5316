"""The publish-time drift reference, on real MNIST digits, corrupted digits and non-digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.drift import DRIFT_REFERENCE_FILE, DRIFT_REFERENCE_ROLE, DriftReference, read_drift_reference
from model_store.mnist_data import MnistSplit, load_split
from model_store.store import ModelStore
from training.corruptions import fog, impulse_noise, rotate
from training.drift_reference import WINDOW, calibrate, write_drift_reference
from training.negatives import draw

HELD_OUT = 2000  # digits: enough for a threshold, small enough for a fast test


@pytest.fixture(scope="module")
def splits(mnist_dir: Path) -> tuple[MnistSplit, MnistSplit]:
    return load_split(mnist_dir, "train"), load_split(mnist_dir, "test")


@pytest.fixture(scope="module")
def reference(splits: tuple[MnistSplit, MnistSplit]) -> DriftReference:
    train, _ = splits
    held_out = train.images[np.random.default_rng(3).permutation(len(train.images))[:HELD_OUT]]
    return calibrate(held_out, seed=3, windows=400)


def windows_of(images: np.ndarray, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [images[rng.choice(len(images), WINDOW, replace=False)] for _ in range(count)]


def test_test_digits_stay_under_the_threshold(
    reference: DriftReference, splits: tuple[MnistSplit, MnistSplit]
) -> None:
    _, test = splits
    statistics = [reference.statistic(window) for window in windows_of(test.images, 100, seed=4)]
    # Calibrated at the 99th percentile on other digits: a few of 100 test windows may cross it.
    assert sum(reference.drifting(s) for s in statistics) <= 5
    assert np.median(statistics) < reference.threshold


@pytest.mark.parametrize("corrupt", [fog, impulse_noise, rotate])
def test_corrupted_digits_cross_the_threshold(
    reference: DriftReference, splits: tuple[MnistSplit, MnistSplit], corrupt
) -> None:
    _, test = splits
    # A random window: MNIST's files keep writers together, and a run of one group's digits drifts too.
    (digits,) = windows_of(test.images, 1, seed=5)
    corrupted = reference.statistic(corrupt(digits, np.random.default_rng(5)))
    assert reference.drifting(corrupted)
    assert corrupted > 2 * reference.statistic(digits)


def test_every_family_of_non_digits_crosses_the_threshold(
    reference: DriftReference, splits: tuple[MnistSplit, MnistSplit]
) -> None:
    _, test = splits
    for family, images in draw(2, WINDOW, test.images).items():
        assert reference.drifting(reference.statistic(images)), family


def test_threshold_is_the_quantile_over_calibration_windows(splits: tuple[MnistSplit, MnistSplit]) -> None:
    train, _ = splits
    digits = train.images[:1000]
    strict, loose = calibrate(digits, 1, quantile=0.5, windows=200), calibrate(digits, 1, windows=200)
    assert strict.threshold < loose.threshold
    assert loose.false_alarm_quantile == 0.99 and loose.window == WINDOW and loose.reference_images == 500


def test_calibration_refuses_too_few_digits(splits: tuple[MnistSplit, MnistSplit]) -> None:
    train, _ = splits
    with pytest.raises(ValueError, match="need 800"):
        calibrate(train.images[:799], 1)


def test_write_reference_round_trips(tmp_path: Path, splits: tuple[MnistSplit, MnistSplit]) -> None:
    train, _ = splits
    files = write_drift_reference(tmp_path, train.images[:1000], seed=1)
    assert files == {DRIFT_REFERENCE_ROLE: DRIFT_REFERENCE_FILE}
    loaded = read_drift_reference(tmp_path, files)
    assert loaded is not None
    np.testing.assert_allclose(loaded.mean, calibrate(train.images[:1000], 1).mean)


def test_too_small_a_holdout_publishes_no_reference(
    tmp_path: Path, splits: tuple[MnistSplit, MnistSplit]
) -> None:
    train, _ = splits
    assert write_drift_reference(tmp_path, train.images[:100], seed=1) == {}
    assert not (tmp_path / DRIFT_REFERENCE_FILE).exists()


@pytest.mark.slow
def test_published_version_carries_a_calibrated_reference(
    trained_store: Path, splits: tuple[MnistSplit, MnistSplit]
) -> None:
    loaded = ModelStore(trained_store).open()
    assert loaded.metadata.files[DRIFT_REFERENCE_ROLE] == DRIFT_REFERENCE_FILE
    reference = read_drift_reference(loaded.path, loaded.metadata.files)
    assert reference is not None and reference.window == WINDOW
    assert reference.reference_images == loaded.metadata.training.validation_samples // 2
    _, test = splits
    over = [reference.drifting(reference.statistic(w)) for w in windows_of(test.images, 100, seed=6)]
    assert sum(over) <= 5
