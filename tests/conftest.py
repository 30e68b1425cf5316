"""Shared fixtures: the real MNIST files and small helpers for building store versions."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from model_store.metadata import MODEL_FILE, ModelMetadata
from model_store.mnist_data import MNIST_FILES

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST_DIR = REPO_ROOT.parent / "shared" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four real MNIST `.gz` files (env MNIST_DATA_DIR, else ../shared/mnist)."""
    configured = os.environ.get("MNIST_DATA_DIR")
    path = Path(configured).resolve() if configured else DEFAULT_MNIST_DIR
    missing = [spec.name for spec in MNIST_FILES.values() if not (path / spec.name).is_file()]
    if missing:
        pytest.fail(
            f"MNIST data not found: {path} lacks {', '.join(missing)}; set MNIST_DATA_DIR to the folder "
            "holding the four official .gz files",
            pytrace=False,
        )
    return path


def make_metadata(name: str, version: int, **overrides: Any) -> ModelMetadata:
    """A valid `ModelMetadata` for a hand-built version; keyword arguments replace top-level fields."""
    confusion = [[100 if row == col else 0 for col in range(10)] for row in range(10)]
    fields: dict[str, Any] = {
        "name": name,
        "version": version,
        "created_at": datetime(2024, 1, 1, tzinfo=UTC),
        "input": {},
        "evaluation": {
            "accuracy": 1.0,
            "correct": 1000,
            "total": 1000,
            "per_class_accuracy": [1.0] * 10,
            "confusion_matrix": confusion,
        },
        "training": {
            "preset": "test",
            "hyperparameters": {"epochs": 0},
            "history": {"loss": []},
            "train_samples": 0,
            "validation_samples": 0,
            "train_seconds": 0.0,
            "evaluate_seconds": 0.0,
            "data_sha256": {spec.name: spec.sha256 for spec in MNIST_FILES.values()},
        },
        "library_versions": {},
        "files": {"model": MODEL_FILE},
    }
    fields.update(overrides)
    return ModelMetadata.model_validate(fields)


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A model store holding one small CNN trained on real MNIST (a subset, ~98 % test accuracy).

    Trained once per test session; tests that change the store copy it first.
    """
    from training.train import main as train

    store = tmp_path_factory.mktemp("store")
    args = ["--preset", "cnn", "--limit", "12000", "--epochs", "2", "--seed", "7"]
    args += ["--store", str(store), "--data-dir", str(mnist_dir), "--no-download", "--verbose", "0"]
    assert train(args) == 0
    return store
