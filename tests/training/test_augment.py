"""Training corruptions on real digits: seeded, shape-keeping, each doing what its name says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.mnist_data import load_split
from model_store.preprocessing import to_model_input
from training import augment
from training.augment import AUGMENTATIONS, corrupt


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> np.ndarray:
    return to_model_input(load_split(mnist_dir, "test").images[:64])[..., 0]


def ink(x: np.ndarray) -> np.ndarray:
    return x.sum(axis=(1, 2))


def border(x: np.ndarray) -> np.ndarray:
    """Mean of the 3-pixel frame where MNIST digits never reach."""
    frame = np.ones((28, 28), bool)
    frame[3:-3, 3:-3] = False
    return x[:, frame].mean(axis=1)


@pytest.mark.parametrize("name", [*AUGMENTATIONS, "affine"])
def test_augmentation_is_seeded_keeps_shape_and_range_and_changes_digits(
    name: str, digits: np.ndarray
) -> None:
    function = AUGMENTATIONS.get(name, augment.affine)
    first = function(digits, np.random.default_rng(3))
    assert first.shape == digits.shape and first.dtype == np.float32
    assert first.min() >= 0 and first.max() <= 1
    np.testing.assert_array_equal(first, function(digits, np.random.default_rng(3)))
    assert not np.array_equal(first, function(digits, np.random.default_rng(4)))
    assert np.abs(first - digits).mean() > 0.01


def test_thickening_adds_ink_and_thinning_removes_it(digits: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    assert (ink(augment.thicken(digits, rng)) > 1.2 * ink(digits)).all()
    assert (ink(augment.thin(digits, rng)) < 0.9 * ink(digits)).all()


def test_blur_and_streaks_spread_ink_over_more_pixels_keeping_most_of_it(digits: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    touched = (digits > 0.05).sum(axis=(1, 2))
    for spread in (augment.gaussian_blur(digits, rng), augment.streak(digits, rng)):
        assert ((spread > 0.05).sum(axis=(1, 2)) > touched).all()
        assert (ink(spread) > 0.85 * ink(digits)).all()
        assert (spread.max(axis=(1, 2)) < digits.max(axis=(1, 2)) + 1e-6).all()


def test_lighten_and_haze_raise_the_background(digits: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    assert (border(augment.lighten(digits, rng)) >= border(digits) + 0.09).all()
    assert border(augment.haze(digits, rng)).mean() > border(digits).mean() + 0.05


def test_inverted_bands_make_an_edge_of_the_picture_bright(digits: np.ndarray) -> None:
    banded = augment.invert_bands(digits, np.random.default_rng(0))
    edges = np.stack([banded[:, :, 0], banded[:, :, -1], banded[:, 0, :], banded[:, -1, :]], axis=1).mean(
        axis=2
    )
    assert (edges.max(axis=1) > 0.9).mean() > 0.7  # some images draw no band at all


def test_outline_is_black_and_white_and_leaves_a_stroke_s_insides_dark(digits: np.ndarray) -> None:
    drawn = augment.outline(digits, np.random.default_rng(0))
    assert set(np.unique(drawn)) <= {0.0, 1.0}
    strong = digits > 0.95
    assert drawn[strong].mean() < 0.6  # the middle of a stroke is not an edge
    assert (ink(drawn) > 5).all()


def test_noise_families_touch_the_background(digits: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    for name in ("gaussian_noise", "speckle"):
        assert border(AUGMENTATIONS[name](digits, rng)).mean() > border(digits).mean() + 0.02, name
    # Photon noise is zero where there is no light.
    assert (augment.signal_noise(digits, rng)[digits == 0] == 0).all()


def test_occluders_add_marks_away_from_the_digit(digits: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    scratched, blotted = augment.scratches(digits, rng), augment.blots(digits, rng)
    assert ((scratched - digits) > 0.3).sum(axis=(1, 2)).mean() > 10
    assert (np.abs(blotted - digits) > 0.05).any(axis=(1, 2)).mean() > 0.7


def test_low_resolution_loses_detail_but_keeps_the_digit_where_it_was(digits: np.ndarray) -> None:
    coarse = augment.low_resolution(digits, np.random.default_rng(0))
    assert np.abs(coarse - digits).mean() > 0.03
    assert np.corrcoef(coarse.ravel(), digits.ravel())[0, 1] > 0.6


def test_affine_moves_digits_but_keeps_them_in_the_picture(digits: np.ndarray) -> None:
    moved = augment.affine(digits, np.random.default_rng(0))
    # Zoomed by 0.6 to 1.15: the ink's area scales by its square.
    assert (ink(moved) > 0.25 * ink(digits)).all() and (ink(moved) < 2 * ink(digits)).all()
    assert (np.abs(moved - digits).mean(axis=(1, 2)) > 0.005).mean() > 0.9


def test_shift_moves_whole_pixels_and_keeps_every_stroke(digits: np.ndarray) -> None:
    moved = augment.shift(digits, np.random.default_rng(0))
    # No interpolation: no grey level appears that the digit did not have.
    for before, after in zip(digits, moved, strict=True):
        assert set(np.unique(after)) <= set(np.unique(before)) | {0.0}
    assert (ink(moved) > 0.9 * ink(digits)).all()  # a digit near the edge may lose a little


def test_gaps_remove_ink_and_ruled_lines_add_it_in_the_background(digits: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    gapped = augment.gaps(digits, rng)
    assert (ink(gapped) < ink(digits)).mean() > 0.75 and ink(gapped).sum() < 0.9 * ink(digits).sum()
    assert border(augment.ruled(digits, rng)).mean() > border(digits).mean() + 0.02


def test_corrupt_with_nothing_drawn_is_the_identity_and_with_one_changes_every_digit(
    digits: np.ndarray,
) -> None:
    np.testing.assert_array_equal(corrupt(digits, np.random.default_rng(0), warped=0, counts=(1.0,)), digits)
    once = corrupt(digits, np.random.default_rng(0), warped=0, counts=(0.0, 1.0))
    assert (np.abs(once - digits).max(axis=(1, 2)) > 0).mean() > 0.95
    np.testing.assert_array_equal(digits, to_model_input((digits * 255).round().astype(np.uint8))[..., 0])
