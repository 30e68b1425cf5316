"""The sample the README's `curl -F file=@samples/digit.png` sends: a real MNIST test digit, read
as such by the service."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from model_store.mnist_data import MnistSplit
from tests.support.paths import SAMPLE_DIGIT


def test_the_sample_is_mnist_test_digit_0_at_its_own_polarity(test_split: MnistSplit) -> None:
    with Image.open(SAMPLE_DIGIT) as image:
        assert (image.mode, image.size) == ("L", (28, 28))
        np.testing.assert_array_equal(np.asarray(image), test_split.images[0])
    assert test_split.labels[0] == 7
    assert SAMPLE_DIGIT.stat().st_size < 1024


@pytest.mark.slow  # the client fixture serves a model trained for the session
def test_posting_the_sample_answers_its_digit(client: TestClient) -> None:
    with SAMPLE_DIGIT.open("rb") as image:
        response = client.post("/predict", files={"file": ("digit.png", image, "image/png")})
    assert response.status_code == 200
    body = response.json()
    assert body["prediction"] == 7
    assert body["normalisation"]["steps"] == []  # native MNIST input: nothing to normalise
