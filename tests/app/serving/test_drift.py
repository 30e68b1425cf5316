"""The drift monitor: each version's window of recent digits, its statistic and its gauges."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.operations.metrics import Metrics
from app.serving.drift import DriftMonitor
from model_store.drift import DRIFT_REFERENCE_FILE, DRIFT_REFERENCE_ROLE, DriftReference
from model_store.mnist_data import load_split
from model_store.store import LoadedModel
from tests.conftest import make_metadata

WINDOW = 100


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> np.ndarray:
    """MNIST test digits, shuffled: the file keeps each group of writers together, and a reference
    made of one group sees the others' digits drift."""
    images = load_split(mnist_dir, "test").images
    return images[np.random.default_rng(0).permutation(len(images))]


def version_folder(path: Path, version: int, reference: DriftReference | None) -> LoadedModel:
    """A version folder holding only what the monitor reads: metadata and, maybe, a reference."""
    path.mkdir()
    files = {"model": "model.keras"}
    if reference is not None:
        reference.save(path / DRIFT_REFERENCE_FILE)
        files[DRIFT_REFERENCE_ROLE] = DRIFT_REFERENCE_FILE
    return LoadedModel(make_metadata("mnist", version, files=files), path)


@pytest.fixture
def monitor(tmp_path: Path, digits: np.ndarray) -> DriftMonitor:
    reference = replace(DriftReference.of(digits[:2000], WINDOW, 0.99), threshold=2.5)
    monitor = DriftMonitor(Metrics())
    monitor.track(version_folder(tmp_path / "1", 1, reference))
    return monitor


def gauges(metrics: Metrics) -> dict[tuple[str, str], float]:
    exposition = metrics.exposition().decode()
    return {
        (sample.name, sample.labels["version"]): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name.startswith("mnist_input_drift")
    }


def test_no_statistic_until_the_window_is_full(monitor: DriftMonitor, digits: np.ndarray) -> None:
    monitor.observe(1, digits[5000 : 5000 + WINDOW - 1])
    monitor.update()
    status = monitor.status(1)
    assert status == {
        "statistic": None,
        "threshold": 2.5,
        "window": WINDOW,
        "seen": WINDOW - 1,
        "drifting": False,
        "method": "mean_shift_7x7",
    }
    assert gauges(monitor.metrics) == {("mnist_input_drift_threshold", "1"): 2.5}


def test_window_keeps_the_last_digits_across_the_ring(monitor: DriftMonitor, digits: np.ndarray) -> None:
    arriving = digits[5000:5350]
    for start in range(0, 350, 70):  # batches that wrap around the ring
        monitor.observe(1, arriving[start : start + 70])
    monitor.update()
    status = monitor.status(1)
    assert status is not None and status["seen"] == 350
    reference = DriftReference.of(digits[:2000], WINDOW, 0.99)
    assert status["statistic"] == pytest.approx(reference.statistic(arriving[-WINDOW:]))


def test_non_digits_raise_the_gauge_over_the_threshold(monitor: DriftMonitor, digits: np.ndarray) -> None:
    monitor.observe(1, digits[5000 : 5000 + WINDOW])
    monitor.update()
    calm = monitor.status(1)
    assert calm is not None and calm["statistic"] is not None and not calm["drifting"]
    noise = np.random.default_rng(0).integers(0, 256, (WINDOW // 2, 28, 28), dtype=np.uint8)
    monitor.observe(1, noise)
    monitor.update()
    drifting = monitor.status(1)
    assert drifting is not None and drifting["drifting"]
    statistic = drifting["statistic"]
    assert statistic is not None and statistic > 2.5
    assert gauges(monitor.metrics)[("mnist_input_drift", "1")] == statistic


def test_unknown_and_unreferenced_versions_report_none(
    monitor: DriftMonitor, tmp_path: Path, digits: np.ndarray
) -> None:
    monitor.track(version_folder(tmp_path / "2", 2, None))
    monitor.observe(2, digits[:WINDOW])
    monitor.observe(3, digits[:WINDOW])
    assert monitor.status(2) is None and monitor.status(3) is None


def test_damaged_reference_serves_without_drift(monitor: DriftMonitor, tmp_path: Path) -> None:
    loaded = version_folder(tmp_path / "2", 2, None)
    (loaded.path / DRIFT_REFERENCE_FILE).write_bytes(b"damaged")
    monitor.track(
        replace(
            loaded, metadata=make_metadata("mnist", 2, files={DRIFT_REFERENCE_ROLE: DRIFT_REFERENCE_FILE})
        )
    )
    assert monitor.status(2) is None


def test_forgotten_version_stops_reporting(monitor: DriftMonitor, digits: np.ndarray) -> None:
    monitor.forget(1)
    monitor.observe(1, digits[:WINDOW])
    monitor.update()
    assert monitor.status(1) is None
