"""Rendered uploads: real JPEG photos of test digits that the service's normalisation reads back."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.inputs.normalisation import normalise_decoded
from model_store.mnist_data import MnistSplit, load_split
from training.synthetic_photos import clean_upload, read_back, render_upload, upload


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "test")


def aligned_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pixel correlation at the best shift of up to one pixel (centring by mass may round either way)."""
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    flat = a.ravel().astype(np.float64)
    return max(float(np.corrcoef(flat, np.roll(b, s, axis=(0, 1)).ravel())[0, 1]) for s in shifts)


def test_a_clean_high_resolution_upload_comes_back_close_to_the_digit(digits: MnistSplit) -> None:
    for index in range(40):
        digit = digits.images[index]
        back = read_back(clean_upload(digit, side=280))
        assert back.shape == (28, 28) and back.dtype == np.uint8
        assert aligned_correlation(digit, back) > 0.8, index


def test_a_rendered_upload_is_a_light_jpeg_of_64_to_400_px(digits: MnistSplit) -> None:
    rng = np.random.default_rng(0)
    for digit in digits.images[:20]:
        with Image.open(io.BytesIO(render_upload(digit, rng))) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert all(64 <= side <= 400 for side in image.size)
            pixels = np.asarray(image.convert("L"))
        # Dark ink on light paper: the border is light, the darkest pixels are the digit.
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        assert np.median(border) > 110 and pixels.min() < np.median(border) - 60


def test_the_upload_family_is_seeded_and_still_looks_like_the_digits(digits: MnistSplit) -> None:
    images = digits.images[:30]
    first = upload(images, np.random.default_rng(3))
    np.testing.assert_array_equal(first, upload(images, np.random.default_rng(3)))
    assert first.shape == images.shape and first.dtype == np.uint8
    assert not np.array_equal(first, upload(images, np.random.default_rng(4)))
    correlations = [aligned_correlation(d, u) for d, u in zip(images, first, strict=True)]
    assert np.median(correlations) > 0.4, correlations


def test_flat_background_reads_photographed_uploads_closer_than_one_paper_level(digits: MnistSplit) -> None:
    images = digits.images[:40]
    flat = partial(normalise_decoded, background="flat")
    border_read = upload(images, np.random.default_rng(8), partial(normalise_decoded, background="border"))
    flat_read = upload(images, np.random.default_rng(8), flat)
    border_score = np.mean([aligned_correlation(d, u) for d, u in zip(images, border_read, strict=True)])
    flat_score = np.mean([aligned_correlation(d, u) for d, u in zip(images, flat_read, strict=True)])
    assert flat_score > border_score + 0.05, (border_score, flat_score)
    # and a clean upload still comes back as the digit
    for digit in images[:20]:
        assert aligned_correlation(digit, read_back(clean_upload(digit, side=280), flat)) > 0.8
