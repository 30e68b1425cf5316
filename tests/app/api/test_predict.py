from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode, paper_scan, post_npy


def test_predict_native_png_matches_test_route(client: TestClient, test_split: MnistSplit) -> None:
    for index in (0, 128, 4321):
        png = encode(test_split.images[index])
        response = client.post("/predict", files={"file": ("digit.png", png, "image/png")})
        assert response.status_code == 200
        body = response.json()
        reference = client.get(f"/test/{index}").json()
        assert body["normalisation"]["steps"] == []
        assert body["prediction"] == reference["prediction"]
        np.testing.assert_allclose(body["probabilities"], reference["probabilities"], atol=1e-6)
        assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert body["confidence"] == max(body["probabilities"])


def test_predict_accepts_raw_body(client: TestClient, test_split: MnistSplit) -> None:
    png = encode(test_split.images[128])
    response = client.post("/predict", content=png, headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    assert response.json()["prediction"] == 8


def test_predict_names_model_version(client: TestClient, test_split: MnistSplit) -> None:
    body = client.post("/predict", files={"file": ("d.png", encode(test_split.images[1]))}).json()
    assert body["model"] == {"name": "mnist", "version": 1}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_predict_reads_every_format_of_a_paper_scan(
    client: TestClient, test_split: MnistSplit, fmt: str
) -> None:
    """The same digits photographed dark-on-light at 112x112 are still recognised."""
    indices = range(20)
    correct = 0
    for index in indices:
        scan = encode(paper_scan(test_split.images[index]), fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        response = client.post("/predict", files={"file": (f"digit.{fmt.lower()}", scan)})
        assert response.status_code == 200, response.text
        body = response.json()
        assert "inverted" in body["normalisation"]["steps"]
        assert "centred_by_mass" in body["normalisation"]["steps"]
        correct += body["prediction"] == test_split.labels[index]
    assert correct >= 18


def test_predict_colour_image_with_alpha(client: TestClient, test_split: MnistSplit) -> None:
    digit = test_split.images[128]
    big = np.asarray(Image.fromarray(digit).resize((84, 84), Image.Resampling.BICUBIC))
    rgba = np.zeros((84, 84, 4), dtype=np.uint8)
    rgba[..., 2] = 200  # blue ink on a fully transparent background
    rgba[..., 3] = big
    response = client.post("/predict", files={"file": ("d.png", encode(rgba))})
    assert response.status_code == 200
    assert response.json()["prediction"] == 8
    assert "alpha_as_ink" in response.json()["normalisation"]["steps"]


def test_predict_can_return_the_image_the_model_saw(client: TestClient, test_split: MnistSplit) -> None:
    scan = encode(paper_scan(test_split.images[3]))
    body = client.post("/predict?include_image=true", files={"file": ("d.png", scan)}).json()
    import base64

    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["normalisation"]["image_png"]))))
    assert seen.shape == (28, 28)
    assert seen[0].max() == 0 and seen[:, 0].max() == 0  # background is dark, margins empty
    assert seen.max() == 255


def test_batch_of_files_keeps_order(client: TestClient, test_split: MnistSplit) -> None:
    indices = [5, 128, 7, 0]
    files = [("file", (f"{i}.png", encode(test_split.images[i]), "image/png")) for i in indices]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 4
    assert [item["filename"] for item in body["inputs"]] == [f"{i}.png" for i in indices]
    for position, index in enumerate(indices):
        reference = client.get(f"/test/{index}").json()
        assert body["predictions"][position] == reference["prediction"]
        np.testing.assert_allclose(body["probabilities"][position], reference["probabilities"], atol=1e-6)


def test_batch_npy_upload_scores_like_the_test_route(client: TestClient, test_split: MnistSplit) -> None:
    images = test_split.images[:500]
    response = post_npy(client, images)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 500 and body["inputs"] is None
    accuracy = np.mean(np.array(body["predictions"]) == test_split.labels[:500])
    assert accuracy > 0.95
    assert body["predictions"][128] == 8
    np.testing.assert_allclose(np.sum(body["probabilities"], axis=1), 1.0, atol=1e-5)


def test_batch_raw_bytes_upload(client: TestClient, test_split: MnistSplit) -> None:
    raw = test_split.images[120:130].tobytes()
    response = client.post(
        "/predict/batch", content=raw, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 200
    assert response.json()["predictions"][8] == 8


def test_predict_query_parameters_are_documented_and_checked(
    client: TestClient, test_split: MnistSplit
) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert set(parameters) == {"version", "include_image", "explain"}
    assert parameters["version"]["schema"]["anyOf"][0] == {"type": "integer", "minimum": 1}
    assert all(p["in"] == "query" and not p["required"] and p["description"] for p in parameters.values())
    png = encode(test_split.images[128])
    response = client.post("/predict?version=0", files={"file": ("d.png", png)})
    assert response.status_code == 422
    detail = "query parameter version: Input should be greater than or equal to 1"
    assert response.json() == {"detail": detail}
    assert client.post("/predict?version=1&include_image=1", files={"file": ("d.png", png)}).json()[
        "normalisation"
    ]["image_png"]
