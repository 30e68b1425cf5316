"""Every answer carries a verdict: blank pages and letters are not digits, real digits stay digits."""

from __future__ import annotations

import io
import string

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageFont

from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode, post_npy
from training.negatives import FONT_DIR

FONT = str(FONT_DIR / "DejaVuSans-Bold.ttf")


def letter_on_paper(letter: str) -> bytes:
    """A letter printed black on white paper, as a photo of it would arrive."""
    canvas = Image.new("L", (120, 120), 255)
    ImageDraw.Draw(canvas).text((60, 60), letter, 0, ImageFont.truetype(FONT, 80), "mm")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def test_blank_image_is_not_a_digit(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("blank.png", encode(np.zeros((28, 28), np.uint8)))})
    assert response.status_code == 200
    body = response.json()
    assert body["verdict"] == "not_a_digit"
    assert 0 <= body["prediction"] <= 9  # the argmax is still there, unchanged
    assert abs(sum(body["probabilities"]) - 1) < 1e-4


def test_rendered_letters_are_mostly_not_digits(client: TestClient) -> None:
    """The session's small model flags about a quarter of the letters family (see trust.md); a
    letter drawn like a digit (S, Z, B) may pass, so this counts over the whole alphabet."""
    files = [("file", (f"{c}.png", letter_on_paper(c))) for c in string.ascii_uppercase]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200
    verdicts = response.json()["verdicts"]
    assert verdicts.count("not_a_digit") >= 3, verdicts
    assert verdicts.count("digit") <= 20, verdicts


def test_test_digit_128_stays_a_digit_8(client: TestClient) -> None:
    response = client.get("/test/128")
    assert response.status_code == 200
    body = response.json()
    assert (body["prediction"], body["verdict"]) == (8, "digit")
    assert 0.5 < body["calibrated_confidence"] <= 1


def test_batch_answers_carry_a_verdict_per_image(client: TestClient, test_split: MnistSplit) -> None:
    images = np.concatenate([test_split.images[:200], np.zeros((1, 28, 28), np.uint8)])
    response = post_npy(client, images)
    assert response.status_code == 200
    body = response.json()
    assert len(body["verdicts"]) == len(body["calibrated_confidences"]) == 201
    assert body["verdicts"][-1] == "not_a_digit"
    assert body["verdicts"][:200].count("digit") >= 190


def test_random_test_samples_carry_verdicts(client: TestClient) -> None:
    response = client.get("/test/random", params={"count": 5, "seed": 1})
    assert response.status_code == 200
    assert {sample["verdict"] for sample in response.json()["samples"]} <= {"digit", "unsure", "not_a_digit"}
