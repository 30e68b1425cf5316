"""Several versions loaded at once: each answers on ?version= and on the v2 versioned routes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.serving.state import ServiceState
from tests.app.api.test_admin import AUTH, TOKEN
from tests.app.conftest import encode, publish_copy

DIGIT = 128


def versions_app(settings: Settings, store: Path, **overrides: object) -> TestClient:
    update = {"model_store": store, "reload_poll_seconds": 0, "admin_token": TOKEN, **overrides}
    return TestClient(create_app(Settings.model_validate(settings.model_copy(update=update).model_dump())))


def service(client: TestClient) -> ServiceState:
    state: ServiceState = client.app.state.service  # type: ignore[attr-defined]
    return state


@pytest.fixture
def both_loaded(settings: Settings, two_versions: Path) -> Iterator[TestClient]:
    with versions_app(settings, two_versions, loaded_versions=[1, 2]) as client:
        yield client


def test_two_versions_answer_the_same_digit_with_different_probabilities(both_loaded: TestClient) -> None:
    answers = {}
    for version in (1, 2):
        response = both_loaded.get(f"/test/{DIGIT}", params={"version": version})
        assert response.status_code == 200, response.text
        assert response.headers["x-model-version"] == str(version)
        assert response.json()["model"]["version"] == version
        answers[version] = np.array(response.json()["probabilities"])
    # A confident digit differs little in its top probability, a lot in the small ones.
    assert np.abs(np.log(answers[1] + 1e-12) - np.log(answers[2] + 1e-12)).max() > 0.1
    default = both_loaded.get(f"/test/{DIGIT}")
    assert default.json()["model"]["version"] == 2  # the newest is the default
    assert np.allclose(default.json()["probabilities"], answers[2], atol=1e-6)


def test_predict_upload_and_batch_take_a_version(both_loaded: TestClient, test_split: object) -> None:
    pixels = service(both_loaded).test_set.images[DIGIT]  # type: ignore[union-attr]
    one = both_loaded.post("/predict?version=1", files={"file": ("d.png", encode(pixels), "image/png")})
    assert one.status_code == 200 and one.json()["model"]["version"] == 1
    batch = both_loaded.post(
        "/predict/batch?version=1", files=[("file", ("d.png", encode(pixels), "image/png"))]
    )
    assert batch.status_code == 200 and batch.json()["model"]["version"] == 1


def test_a_version_not_loaded_is_404_and_a_bad_one_422(both_loaded: TestClient) -> None:
    missing = both_loaded.get("/test/1", params={"version": 7})
    assert missing.status_code == 404
    assert missing.json() == {"detail": "version '7' is not loaded; loaded versions: 1, 2"}
    assert both_loaded.get("/test/1", params={"version": "two"}).status_code == 422
    # Unicode digits that str.isdigit() accepts and int() refuses (found by schemathesis).
    for text in ("\u00b9", "\u00b2", "0", "-1"):
        for path in ("/v2/models/mnist", f"/v2/models/mnist/versions/{text}/ready"):
            response = both_loaded.get(path, params={"version": text})
            assert response.status_code == 404, (path, text, response.text)


def test_kserve_versioned_routes_serve_each_loaded_version(both_loaded: TestClient) -> None:
    assert both_loaded.get("/v2/models/mnist").json()["versions"] == ["1", "2"]
    image = service(both_loaded).test_set.images[DIGIT]  # type: ignore[union-attr]
    body = {
        "inputs": [{"name": "images", "shape": [1, 784], "datatype": "UINT8", "data": image.ravel().tolist()}]
    }
    outputs = {}
    for version in (1, 2):
        response = both_loaded.post(f"/v2/models/mnist/versions/{version}/infer", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == str(version)
        outputs[version] = response.json()["outputs"][0]["data"]
    assert outputs[1] != outputs[2]
    missing = both_loaded.post("/v2/models/mnist/versions/5/infer", json=body)
    assert missing.status_code == 404 and "loaded versions: 1, 2" in missing.json()["error"]


def test_model_info_and_metrics_report_memory_and_warmup_per_version(both_loaded: TestClient) -> None:
    loaded = both_loaded.get("/model").json()["loaded"]
    assert [(v["version"], v["default"]) for v in loaded] == [(1, False), (2, True)]
    assert all(v["weight_bytes"] > 10_000 and v["warmup_seconds"] > 0 for v in loaded)
    metrics = both_loaded.get("/metrics").text
    assert 'mnist_model_weight_bytes{version="1"}' in metrics
    assert 'mnist_model_warmup_seconds{version="2"}' in metrics


def test_latency_and_errors_are_counted_per_version(both_loaded: TestClient) -> None:
    holder = service(both_loaded).holder
    healthy = holder.loaded[1]

    def broken(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise ValueError("weights gone")

    holder.loaded = {**holder.loaded, 1: dataclasses.replace(healthy, forward_float=broken)}
    # The test client re-raises what the service answered with a 500.
    with pytest.raises(RuntimeError, match="the model failed on this input"):
        both_loaded.get("/test/5", params={"version": 1})
    assert both_loaded.get("/test/5").status_code == 200
    metrics = both_loaded.get("/metrics").text
    assert 'mnist_model_request_errors_total{route="/test/{index}",status="500",version="1"} 1.0' in metrics
    assert 'mnist_model_request_duration_seconds_count{route="/test/{index}",version="2"} 1.0' in metrics
    assert 'version="2"' not in metrics.split("mnist_model_request_errors_total")[-1].split("\n# ")[0]


def test_a_list_of_versions_stays_loaded_and_others_are_unloaded(
    settings: Settings, two_versions: Path
) -> None:
    with versions_app(settings, two_versions, loaded_versions=[1]) as client:
        assert sorted(service(client).holder.loaded) == [1, 2]
        assert publish_copy(two_versions) == 3
        assert client.post("/admin/reload", headers=AUTH).json()["model"]["version"] == 3
        assert sorted(service(client).holder.loaded) == [1, 3]  # 2 is neither listed nor the default
        assert client.get("/test/0", params={"version": 2}).status_code == 404
        assert 'mnist_model_weight_bytes{version="2"}' not in client.get("/metrics").text


def test_by_default_only_the_served_version_is_loaded(settings: Settings, two_versions: Path) -> None:
    with versions_app(settings, two_versions) as client:
        assert list(service(client).holder.loaded) == [2]
