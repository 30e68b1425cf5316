"""Upload normalisation on photographed test digits: dim light, ruled paper, markers, blown-up drawings.

Each photo is built from a real MNIST test digit with one condition at a time, saved losslessly, and
compared with what the condition should not change: the same digit photographed plainly, or its ink.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from app.inputs.normalisation import (
    Normalised,
    fit_and_centre,
    normalise_decoded,
    paper_level,
)
from model_store.mnist_data import MnistSplit, load_split

SIDE = 200  # px: a small phone crop
MARGIN = 8  # px of paper around the digit
DIGITS = range(30)


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "test")


def ink_of(digit: np.ndarray, drawn_at: int | None = None, marker: int = 0) -> np.ndarray:
    """The digit's ink in [0, 1] on a SIDE x SIDE page: maybe drawn small first, maybe with a marker."""
    ink = Image.fromarray(digit)
    if drawn_at:
        ink = ink.resize((drawn_at, drawn_at), Image.Resampling.BOX)
    ink = ink.resize((SIDE - 2 * MARGIN,) * 2, Image.Resampling.BICUBIC)
    if marker:
        ink = ink.filter(ImageFilter.MaxFilter(marker))
    page = np.zeros((SIDE, SIDE), dtype=np.float32)
    page[MARGIN:-MARGIN, MARGIN:-MARGIN] = np.asarray(ink, dtype=np.float32) / 255
    return page


def photograph(ink: np.ndarray, light: float = 1.0, rule_every: int = 0) -> Normalised:
    """Dark ink on white paper (ruled every `rule_every` px), lit at `light`, read back as an upload."""
    paper = np.full(ink.shape, 0.92, dtype=np.float32)
    if rule_every:
        paper[rule_every // 2 :: rule_every] *= 0.6
        paper[rule_every // 2 + 1 :: rule_every] *= 0.6
    photo = (paper + (0.1 - paper) * ink) * light * 255
    buffer = io.BytesIO()
    Image.fromarray(np.rint(photo).astype(np.uint8)).save(buffer, format="PNG")
    with Image.open(buffer) as image:
        image.load()
        return normalise_decoded(image)


def as_read(ink: np.ndarray) -> np.ndarray:
    """The ink itself cropped, fitted and centred: what a perfect reading of the photo gives."""
    return fit_and_centre(ink * 255, [])


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in grey levels at the best shift of up to one pixel."""
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    a = a.astype(np.float64)
    return min(float(np.abs(a - np.roll(b.astype(np.float64), s, axis=(0, 1))).mean()) for s in shifts)


def test_a_photo_too_dim_for_mid_grey_is_still_read_as_dark_ink_on_paper(digits: MnistSplit) -> None:
    # White paper at 40 % light is darker than mid-grey all over; its ink is darker still.
    for index in DIGITS:
        ink = ink_of(digits.images[index])
        dim = photograph(ink, light=0.4)
        assert "inverted" in dim.steps, index
        assert difference(dim.pixels, photograph(ink).pixels) < 5, index


def test_a_light_digit_on_a_dark_grey_picture_is_not_inverted(digits: MnistSplit) -> None:
    for index in DIGITS:
        ink = ink_of(digits.images[index])
        light_on_grey = (0.25 + 0.6 * ink) * 255
        normalised = normalise_decoded(Image.fromarray(np.rint(light_on_grey).astype(np.uint8)))
        assert "inverted" not in normalised.steps, index
        assert difference(normalised.pixels, as_read(ink)) < 10, index


def test_ruled_lines_behind_a_digit_are_removed(digits: MnistSplit) -> None:
    for index in DIGITS:
        ink = ink_of(digits.images[index])
        ruled = photograph(ink, rule_every=SIDE // 5)
        assert difference(ruled.pixels, photograph(ink).pixels) < 5, index


def test_a_marker_stroke_is_read_whole_not_as_its_outline(digits: MnistSplit) -> None:
    # A 21 px marker on a 184 px digit: where strokes meet, the ink is wider than a quarter of the page.
    inks = [ink_of(digits.images[index], marker=21) for index in DIGITS]
    differences = [difference(photograph(ink).pixels, as_read(ink)) for ink in inks]
    assert max(differences) < 6, differences


def test_a_small_drawing_blown_up_keeps_its_blurred_strokes(digits: MnistSplit) -> None:
    inks = [ink_of(digits.images[index], drawn_at=10) for index in DIGITS]
    differences = [difference(photograph(ink).pixels, as_read(ink)) for ink in inks]
    assert np.mean(differences) < 6, differences


@pytest.mark.parametrize("shape", [(200, 200), (150, 90), (90, 160), (30, 30)])
def test_the_paper_level_follows_uneven_light_and_ignores_the_strokes(
    digits: MnistSplit, shape: tuple[int, int]
) -> None:
    """Light on dark, as the service reads a photo: a digit's ink over paper lit unevenly from one
    corner. The paper's level must be that lighting everywhere, under the strokes too."""
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    lighting = 20 + 30 * (rows / height + cols / width) / 2  # a shadow's slow ramp, 20 to 50
    ink = Image.fromarray(digits.images[7]).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.maximum(lighting, np.asarray(ink, dtype=np.float32))
    assert pixels.max() > 200  # the strokes are there, far above the paper
    level = paper_level(pixels)
    assert level.shape == pixels.shape
    assert np.abs(level - lighting).max() < 8
