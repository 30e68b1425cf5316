"""Every bad request gets a 4xx JSON error a person understands, and the service keeps serving."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api.routes.testset import MAX_RANDOM_COUNT
from app.config import Settings
from app.main import create_app
from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode


@pytest.fixture(scope="module")
def strict_client(settings: Settings) -> Iterator[TestClient]:
    """Small limits, so that 'too large' cases stay cheap to build."""
    limits = {
        "max_upload_bytes": 64 * 1024,
        "max_image_pixels": 100_000,
        "max_batch_images": 4,
        "max_array_images": 50,
    }
    with TestClient(create_app(settings.model_copy(update=limits))) as test_client:
        yield test_client


def big_blank_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


CASES = {
    "not an image": ("post_file", b"hello, I am text", 400, "not a recognised image"),
    "random bytes": ("post_file", bytes(range(256)) * 8, 400, "not a recognised image"),
    "truncated png": ("post_truncated", None, 400, "corrupt or truncated"),
    "empty file": ("post_file", b"", 400, "empty"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_image_is_400(strict_client: TestClient, test_split: MnistSplit, case: str) -> None:
    how, data, status, words = CASES[case]
    if how == "post_truncated":
        data = encode(np.asarray(Image.fromarray(test_split.images[0]).resize((200, 200))))[:300]
    response = strict_client.post("/predict", files={"file": ("x.png", data, "image/png")})
    assert response.status_code == status
    assert words in response.json()["detail"]


def test_empty_raw_body_is_400(strict_client: TestClient) -> None:
    response = strict_client.post("/predict", content=b"", headers={"Content-Type": "image/png"})
    assert response.status_code == 400
    assert "empty" in response.json()["detail"]


def test_missing_file_field_is_422_naming_it(strict_client: TestClient, test_split: MnistSplit) -> None:
    response = strict_client.post("/predict", files={"image": ("x.png", encode(test_split.images[0]))})
    assert response.status_code == 422
    assert "'file'" in response.json()["detail"] and "image" in response.json()["detail"]


def test_unsupported_content_type_is_415(strict_client: TestClient) -> None:
    response = strict_client.post("/predict", json={"pixels": [0] * 784})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]


def test_body_over_limit_is_413(strict_client: TestClient) -> None:
    response = strict_client.post("/predict", content=b"\0" * 70_000, headers={"Content-Type": "image/png"})
    assert response.status_code == 413
    assert "65536" in response.json()["detail"]


def test_too_many_pixels_is_413(strict_client: TestClient) -> None:
    response = strict_client.post("/predict", files={"file": ("big.png", big_blank_png(400))})
    assert response.status_code == 413
    assert "400x400" in response.json()["detail"]


def test_decompression_bomb_is_413(client: TestClient) -> None:
    """20,000 x 20,000 pixels in a few hundred KB: refused from the header, never decoded."""
    bomb = big_blank_png(20_000)
    assert len(bomb) < 4 * 1024 * 1024
    response = client.post("/predict", files={"file": ("bomb.png", bomb)})
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/test/-1", 404),
        ("/test/10000", 404),
        ("/test/abc", 422),
        ("/test/1e9", 422),
        ("/test/10000/image", 404),
    ],
)
def test_bad_test_index(strict_client: TestClient, path: str, status: int) -> None:
    response = strict_client.get(path)
    assert response.status_code == status
    assert isinstance(response.json()["detail"], str)


def test_random_count_over_limit_is_413(strict_client: TestClient) -> None:
    assert strict_client.get(f"/test/random?count={MAX_RANDOM_COUNT + 1}").status_code == 413
    assert strict_client.get(f"/test/random?count={MAX_RANDOM_COUNT}").status_code == 200
    assert strict_client.get("/test/random?count=0").status_code == 422


def test_batch_over_file_limit_is_413(strict_client: TestClient, test_split: MnistSplit) -> None:
    files = [("file", (f"{i}.png", encode(test_split.images[i]))) for i in range(5)]
    response = strict_client.post("/predict/batch", files=files)
    assert response.status_code == 413
    assert "at most 4" in response.json()["detail"]


def test_batch_over_array_limit_is_413(strict_client: TestClient, test_split: MnistSplit) -> None:
    raw = test_split.images[:51].tobytes()
    response = strict_client.post(
        "/predict/batch", content=raw, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((3, 28, 28), np.float32), "uint8"),
        (np.zeros((3, 27, 28), np.uint8), "shape"),
        (np.zeros((0, 28, 28), np.uint8), "no images"),
    ],
)
def test_batch_bad_arrays_are_400(strict_client: TestClient, array: np.ndarray, words: str) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    response = strict_client.post(
        "/predict/batch", content=buffer.getvalue(), headers={"Content-Type": "application/x-npy"}
    )
    assert response.status_code == 400
    assert words in response.json()["detail"]


def test_batch_with_one_bad_file_names_it(strict_client: TestClient, test_split: MnistSplit) -> None:
    files = [("file", ("good.png", encode(test_split.images[0]))), ("file", ("bad.png", b"nope"))]
    response = strict_client.post("/predict/batch", files=files)
    assert response.status_code == 400
    assert "file 1 (bad.png)" in response.json()["detail"]


def test_service_still_answers_after_bad_input(strict_client: TestClient) -> None:
    strict_client.post("/predict", content=b"garbage", headers={"Content-Type": "image/png"})
    assert strict_client.get("/test/128").json()["prediction"] == 8
