"""The drift reference file: the version contract's format, and refusals of a damaged one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model_store.drift import (
    DRIFT_METHOD,
    DRIFT_REFERENCE_FILE,
    DRIFT_REFERENCE_ROLE,
    DriftReference,
    DriftReferenceError,
    pooled,
    read_drift_reference,
)
from model_store.mnist_data import MnistSplit, load_split


@pytest.fixture(scope="module")
def test_split(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "test")


@pytest.fixture
def reference(test_split: MnistSplit) -> DriftReference:
    return replace(DriftReference.of(test_split.images[:1000], 200, 0.99), threshold=2.0)


def test_pooled_is_mean_ink_of_4x4_blocks() -> None:
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, :4, :4] = 255
    digit[0, 27, 27] = 255
    features = pooled(digit)
    assert features.shape == (1, 49)
    assert features[0, 0] == pytest.approx(1.0)
    assert features[0, 48] == pytest.approx(1 / 16)
    assert features[0, 1:48].sum() == 0


def test_statistic_is_near_one_for_digits_like_the_reference(
    reference: DriftReference, test_split: MnistSplit
) -> None:
    # Digits the reference was not made of, from the same set: the mean squared z-score is about 1.
    statistics = [reference.statistic(test_split.images[i : i + 200]) for i in range(2000, 4000, 200)]
    assert 0.5 < np.median(statistics) < 2.0


def test_statistic_grows_with_the_share_of_blank_images(
    reference: DriftReference, test_split: MnistSplit
) -> None:
    digits = test_split.images[2000:2200].copy()
    statistics = []
    for blanks in (0, 25, 50, 100):
        digits[:blanks] = 0
        statistics.append(reference.statistic(digits))
    assert statistics == sorted(statistics)
    assert statistics[0] < reference.threshold < statistics[2]


def test_saved_reference_loads_as_written(reference: DriftReference, tmp_path: Path) -> None:
    reference.save(tmp_path / DRIFT_REFERENCE_FILE)
    loaded = read_drift_reference(tmp_path, {DRIFT_REFERENCE_ROLE: DRIFT_REFERENCE_FILE})
    assert loaded is not None
    np.testing.assert_array_equal(loaded.mean, reference.mean)
    np.testing.assert_array_equal(loaded.variance, reference.variance)
    assert (loaded.threshold, loaded.window, loaded.method) == (2.0, 200, DRIFT_METHOD)


def test_version_without_reference_reports_none(tmp_path: Path) -> None:
    assert read_drift_reference(tmp_path, {"model": "model.keras"}) is None


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda r: replace(r, method="mmd"), "method 'mmd'"),
        (lambda r: replace(r, threshold=float("inf")), "not a calibrated reference"),
        (lambda r: replace(r, mean=r.mean[:10]), "not a calibrated reference"),
    ],
)
def test_unusable_reference_is_refused(reference: DriftReference, tmp_path: Path, damage, words: str) -> None:
    damage(reference).save(tmp_path / DRIFT_REFERENCE_FILE)
    with pytest.raises(DriftReferenceError, match=words):
        DriftReference.load(tmp_path / DRIFT_REFERENCE_FILE)


def test_damaged_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / DRIFT_REFERENCE_FILE).write_bytes(b"not a zip archive")
    with pytest.raises(DriftReferenceError, match="cannot read the drift reference"):
        read_drift_reference(tmp_path, {DRIFT_REFERENCE_ROLE: DRIFT_REFERENCE_FILE})
