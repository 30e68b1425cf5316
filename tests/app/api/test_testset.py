from __future__ import annotations

import io
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app
from model_store.mnist_data import MnistSplit
from model_store.store import ModelStore
from tests.app.conftest import without_ids


def test_index_128_is_an_eight(client: TestClient) -> None:
    response = client.get("/test/128")
    assert response.status_code == 200
    body = response.json()
    assert body["index"] == 128
    assert body["label"] == 8
    assert body["prediction"] == 8
    assert body["correct"] is True
    assert len(body["probabilities"]) == 10


def test_test_image_is_the_real_sample(client: TestClient, test_split: MnistSplit) -> None:
    response = client.get("/test/128/image")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(response.content)))
    np.testing.assert_array_equal(pixels, test_split.images[128])
    enlarged = Image.open(io.BytesIO(client.get("/test/128/image?scale=4").content))
    assert enlarged.size == (112, 112)


def test_accuracy_equals_the_metadata(client: TestClient, settings: Settings) -> None:
    response = client.get("/test/accuracy")
    assert response.status_code == 200
    body = response.json()
    recorded = ModelStore(settings.model_store).read_metadata(1).evaluation
    assert body["total"] == 10_000
    assert body["correct"] == recorded.correct
    assert body["accuracy"] == recorded.accuracy == body["recorded_accuracy"]
    np.testing.assert_allclose(body["per_class_accuracy"], recorded.per_class_accuracy, atol=1e-6)


def test_random_samples_are_scored_against_labels(client: TestClient, test_split: MnistSplit) -> None:
    response = client.get("/test/random?count=20&seed=3")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 20 and len(body["samples"]) == 20
    assert len({s["index"] for s in body["samples"]}) == 20
    for sample in body["samples"]:
        assert sample["label"] == test_split.labels[sample["index"]]
        assert sample["correct"] == (sample["prediction"] == sample["label"])
    assert body["correct"] == sum(s["correct"] for s in body["samples"]) >= 17
    again = client.get("/test/random?count=20&seed=3").json()
    assert without_ids(again) == without_ids(body)
    assert {s["prediction_id"] for s in again["samples"]}.isdisjoint(
        s["prediction_id"] for s in body["samples"]
    )


def test_model_metadata_and_plots(client: TestClient) -> None:
    body = client.get("/model").json()
    assert body["metadata"]["version"] == 1
    assert body["metadata"]["training"]["preset"] == "cnn"
    assert body["metadata"]["input"]["shape"] == [28, 28, 1]
    assert {"learning_curves", "confusion_matrix"} <= set(body["plots"])
    for url in body["plots"].values():
        plot = client.get(url)
        assert plot.status_code == 200
        assert plot.content.startswith(b"\x89PNG")


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model"]["version"] == 1 and ready["test_set_loaded"]


def predicted_images(client: TestClient) -> float:
    text = client.get("/metrics").text
    return sum(float(v) for v in re.findall(r"^mnist_predictions_total\{[^}]*\} (\S+)$", text, re.M))


def test_cold_accuracy_is_computed_once_for_concurrent_callers(settings: Settings) -> None:
    # A cold cache must not let every caller start its own 10,000-image pass.
    with TestClient(create_app(settings)) as fresh:
        before = predicted_images(fresh)
        with ThreadPoolExecutor(6) as pool:
            bodies = list(pool.map(lambda _: fresh.get("/test/accuracy").json(), range(6)))
        assert all(body == bodies[0] for body in bodies)
        assert bodies[0]["total"] == 10_000
        assert predicted_images(fresh) - before == 10_000
        fresh.get("/test/accuracy")
        assert predicted_images(fresh) - before == 10_000
