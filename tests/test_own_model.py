"""docs/own-model.md's example runs as the page shows it: a model built outside `training/` is
published into a store and served."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from model_store.mnist_data import load_split
from model_store.store import ModelStore
from tests.app.conftest import encode
from tests.support.paths import REPO_ROOT

EXAMPLE = REPO_ROOT / "docs" / "examples" / "own_model.py"


def test_the_page_includes_the_example_whole() -> None:
    page = (REPO_ROOT / "docs" / "own-model.md").read_text()
    assert f'--8<-- "{EXAMPLE.relative_to(REPO_ROOT)}"' in page
    assert f"python {EXAMPLE.relative_to(REPO_ROOT)} --store my-models --data-dir data/mnist" in page


@pytest.mark.slow
def test_a_model_built_outside_training_is_published_and_served(tmp_path: Path, mnist_dir: Path) -> None:
    store = tmp_path / "my-models"
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--store", str(store), "--data-dir", str(mnist_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "published version 1" in result.stdout

    metadata = ModelStore(store).read_metadata(1)
    assert metadata.training.preset == "own-dense-64" and metadata.onnx is not None
    assert metadata.trust is None and metadata.evaluation.accuracy > 0.85
    assert (store / "mnist" / "1" / "model.onnx").is_file()

    test_split = load_split(mnist_dir, "test")
    with TestClient(create_app(Settings(model_store=store, data_dir=mnist_dir, grpc_port=0))) as client:
        sample = client.get("/test/0")
        assert sample.status_code == 200, sample.text
        assert sample.json()["model"] == {"name": "mnist", "version": 1}
        assert sample.json()["label"] == test_split.labels[0]
        answers = [
            client.post("/predict", files={"file": ("d.png", encode(test_split.images[i]), "image/png")})
            for i in range(20)
        ]
        assert all(answer.status_code == 200 for answer in answers)
        digits = [answer.json()["prediction"] for answer in answers]
        assert sum(d == label for d, label in zip(digits, test_split.labels[:20], strict=True)) >= 15
        assert client.get("/model").json()["metadata"]["training"]["preset"] == "own-dense-64"
