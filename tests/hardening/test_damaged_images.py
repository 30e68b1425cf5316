"""Valid files of every format, damaged at random (hypothesis): 200, 400 or 413, never a 5xx."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from model_store.mnist_data import MnistSplit
from tests.app.conftest import paper_scan
from tests.support.hostile import (
    SEVEN,
    TWO,
    animated_gif,
    error_detail,
    save,
    transparent_background,
    upload,
)


@pytest.fixture(scope="module")
def seeds(digits: MnistSplit) -> dict[str, bytes]:
    """One valid file per format and colour mode; the mutation test damages copies of them."""
    small = Image.fromarray(paper_scan(digits.images[SEVEN], side=40))
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "png": save(small, "PNG"),
        "png-native": save(Image.fromarray(digits.images[SEVEN]), "PNG"),  # OpenCV's path
        "png16": save(Image.fromarray(np.asarray(small).astype(np.uint16) * 257), "PNG"),
        "png-palette": save(small.quantize(16), "PNG"),
        "png-rgba": transparent_background(digits, SEVEN),
        "jpeg": save(small, "JPEG"),
        "jpeg-exif": save(small.convert("RGB"), "JPEG", exif=exif),
        "jpeg-cmyk": save(small.convert("CMYK"), "JPEG"),
        "gif": animated_gif(digits, SEVEN, [TWO]),
        "tiff": save(small, "TIFF"),
        "webp": save(small, "WEBP"),
        "bmp": save(small, "BMP"),
    }


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_damaged_images_never_cause_a_5xx(
    api: TestClient, digits: MnistSplit, seeds: dict[str, bytes], data: st.DataObject
) -> None:
    """Flip, cut and insert bytes anywhere in a valid file: 200, 400 or 413, never anything else."""
    kind = data.draw(st.sampled_from(sorted(seeds)), label="format")
    blob = bytearray(seeds[kind])
    edits = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(["set", "cut", "insert"]),
                st.integers(0, len(blob) - 1),
                st.binary(min_size=1, max_size=24),
            ),
            min_size=1,
            max_size=6,
        ),
        label="edits",
    )
    for how, at, chunk in edits:
        at = min(at, max(len(blob) - 1, 0))
        if how == "set":
            blob[at : at + len(chunk)] = chunk
        elif how == "cut":
            del blob[at : at + len(chunk) * 8]
        else:
            blob[at:at] = chunk
    response = api.post("/predict", files=upload(bytes(blob), f"damaged.{kind}", "application/octet-stream"))
    assert response.status_code in (200, 400, 413), (
        f"{kind} {edits}: {response.status_code} {response.text[:300]}"
    )
    if response.status_code != 200:
        error_detail(response)
