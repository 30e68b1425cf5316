"""Input drift on /metrics: MNIST digits through /predict keep it under its threshold, non-digits
push it over, computed in the background while the service answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.main import create_app
from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode
from tests.support.waiting import wait_until
from training.negatives import draw

pytestmark = pytest.mark.slow  # serves the session's trained model


@pytest.fixture
def drift_client(trained_store: Path, mnist_dir: Path) -> Iterator[TestClient]:
    settings = Settings(model_store=trained_store, data_dir=mnist_dir, drift_interval_seconds=0.05)
    with TestClient(create_app(settings)) as client:
        yield client


def drift_gauges(client: TestClient) -> dict[str, float]:
    """This version's `mnist_input_drift` samples on /metrics, by name."""
    exposition = client.get("/metrics").text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name.startswith("mnist_input_drift") and sample.labels == {"version": "1"}
    }


def predict_each(client: TestClient, images: np.ndarray) -> None:
    for pixels in images:
        response = client.post("/predict", files={"file": ("digit.png", encode(pixels), "image/png")})
        assert response.status_code == 200, response.text


def test_drift_rises_over_the_threshold_when_non_digits_arrive(
    drift_client: TestClient, test_split: MnistSplit
) -> None:
    gauges = drift_gauges(drift_client)
    assert set(gauges) == {"mnist_input_drift_threshold"}  # no statistic before a full window
    threshold = gauges["mnist_input_drift_threshold"]
    window = 200
    rng = np.random.default_rng(11)
    predict_each(drift_client, test_split.images[rng.choice(len(test_split.images), window, replace=False)])
    wait_until(lambda: "mnist_input_drift" in drift_gauges(drift_client), timeout=30)
    assert drift_gauges(drift_client)["mnist_input_drift"] < threshold

    non_digits = np.concatenate(list(draw(2, 10, test_split.images).values()))  # 70, seven families
    predict_each(drift_client, non_digits)
    wait_until(lambda: drift_gauges(drift_client)["mnist_input_drift"] > threshold, timeout=30)
