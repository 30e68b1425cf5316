"""MNIST_PRECISION: which of a version's ONNX exports answers, float32 or the int8 one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.config import Settings
from app.main import create_app
from app.serving.model import ServingModel
from app.serving.runtimes import RuntimeChoice
from model_store.store import ModelStore, ModelStoreError
from tests.conftest import assert_one_line_error, run_cli


def served(store: Path, mnist_dir: Path, **settings: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the /model entry of the default version, the answer for test image 128)."""
    with TestClient(create_app(Settings(model_store=store, data_dir=mnist_dir, **settings))) as client:
        info = client.get("/model")
        sample = client.get("/test/128")
        assert info.status_code == 200 and sample.status_code == 200, sample.text
        [loaded] = [entry for entry in info.json()["loaded"] if entry["default"]]
        return loaded, sample.json()


def set_int8(store: Path, **changes: Any) -> None:
    """Change the int8 section of version 1's metadata (None removes it)."""
    model_store = ModelStore(store)
    metadata = model_store.read_metadata(1)
    assert metadata.int8 is not None
    int8 = None if changes.get("int8", True) is None else metadata.int8.model_copy(update=changes)
    model_store.update_metadata(metadata.model_copy(update={"int8": int8}))


def test_int8_answers_test_image_128_close_to_float32(fixture_store: Path, mnist_dir: Path) -> None:
    float32, float_answer = served(fixture_store, mnist_dir, precision="float32")
    int8, int8_answer = served(fixture_store, mnist_dir, precision="int8")
    assert (float32["precision"], int8["precision"]) == ("float32", "int8")
    assert int8["runtime"] == "onnxruntime"
    assert int8_answer["prediction"] == float_answer["prediction"] == 8
    assert int8_answer["probabilities"] != float_answer["probabilities"]  # another session answered
    assert np.allclose(int8_answer["probabilities"], float_answer["probabilities"], atol=0.05)
    # Its weights are a quarter of float32's, as /model reports them.
    assert int8["weight_bytes"] < float32["weight_bytes"] / 2


def test_auto_serves_float32_where_the_proof_did_not_make_int8_the_default(
    fixture_store: Path, mnist_dir: Path
) -> None:
    metadata = ModelStore(fixture_store).read_metadata(1)
    assert metadata.int8 is not None and not metadata.int8.default
    assert served(fixture_store, mnist_dir)[0]["precision"] == "float32"


def test_auto_serves_int8_where_the_metadata_says_it_is_the_default(
    private_store: Path, mnist_dir: Path
) -> None:
    set_int8(private_store, default=True, reason="the default: every rule within its limit")
    assert served(private_store, mnist_dir)[0]["precision"] == "int8"
    assert served(private_store, mnist_dir, precision="float32")[0]["precision"] == "float32"


def test_auto_falls_back_to_float32_when_the_default_int8_file_is_not_the_recorded_one(
    private_store: Path,
) -> None:
    set_int8(private_store, default=True, sha256="0" * 64)
    serving = ServingModel.compile(ModelStore(private_store).open(1), RuntimeChoice(threads=1))
    assert (serving.runtime, serving.precision) == ("onnxruntime", "float32")


def test_int8_on_a_version_without_the_export_is_refused(private_store: Path) -> None:
    set_int8(private_store, int8=None)
    with pytest.raises(ModelStoreError, match="MNIST_PRECISION=int8: version 1 has no usable int8 export"):
        ServingModel.compile(ModelStore(private_store).open(1), RuntimeChoice(threads=1, precision="int8"))


def test_int8_on_a_version_without_the_export_is_one_line_at_startup(
    private_store: Path, tmp_path: Path
) -> None:
    set_int8(private_store, int8=None)
    env = {"MNIST_MODEL_STORE": str(private_store), "MNIST_PRECISION": "int8"}
    assert_one_line_error(
        run_cli("app.cli", cwd=tmp_path, env=env),
        "mnist-serve",
        "MNIST_PRECISION=int8: version 1 has no usable int8 export",
        "publish a new version with mnist-train",
    )


def test_int8_with_the_tensorflow_runtime_is_refused() -> None:
    with pytest.raises(ValidationError, match="int8 runs on ONNX Runtime only"):
        Settings(runtime="tensorflow", precision="int8")
