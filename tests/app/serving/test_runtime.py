"""The forward pass on ONNX Runtime: Keras' probabilities and TensorFlow's verdicts on the whole test
set, the setting that picks the runtime, and TensorFlow for a version without a usable export.
Speed is measured by bench/, not here."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.serving.model import ServingModel
from app.serving.runtimes import OnnxForward, RuntimeChoice
from app.serving.versions import load_serving_model
from model_store.forward import ONNX_FILE, file_sha256
from model_store.metadata import MODEL_FILE
from model_store.mnist_data import MnistSplit
from model_store.preprocessing import to_model_input
from model_store.store import ModelStore, ModelStoreError
from tests.app.api.test_versions import service, versions_app
from tests.app.conftest import publish_copy, publish_perturbed
from tests.conftest import REPO_ROOT, run_cli
from tests.support.live_server import environment_without_settings

ONNX = RuntimeChoice("onnxruntime", threads=1)
TENSORFLOW = RuntimeChoice("tensorflow")
STEP = 128  # images per forward pass, as the batcher's default


def compile_version(store: Path, version: int | None = None, runtime: RuntimeChoice = ONNX) -> ServingModel:
    return ServingModel.compile(ModelStore(store).load(version), runtime=runtime)


@pytest.fixture(scope="module")
def on_onnx(fixture_store: Path) -> ServingModel:
    return compile_version(fixture_store)


@pytest.fixture(scope="module")
def on_tensorflow(fixture_store: Path) -> ServingModel:
    return compile_version(fixture_store, runtime=TENSORFLOW)


def in_steps(serving: ServingModel, images: np.ndarray) -> np.ndarray:
    return np.concatenate([serving.answer(images[i : i + STEP]) for i in range(0, len(images), STEP)])


def keras_probabilities(serving: ServingModel, images: np.ndarray) -> np.ndarray:
    x = to_model_input(images, serving.loaded.metadata.input)
    model = serving.loaded.model
    return np.concatenate(
        [np.asarray(model(x[i : i + 1000], training=False)) for i in range(0, len(x), 1000)]
    )


def test_training_publishes_the_onnx_export_beside_the_model(fixture_store: Path) -> None:
    store = ModelStore(fixture_store)
    metadata, folder = store.read_metadata(1), store.version_path(1)
    assert metadata.files["onnx"] == ONNX_FILE
    assert (folder / ONNX_FILE).stat().st_size > 10_000
    assert metadata.onnx is not None
    assert metadata.onnx.model_sha256 == file_sha256(folder / MODEL_FILE)
    assert metadata.onnx.max_abs_difference <= 1e-5


def test_onnx_probabilities_equal_keras_on_the_whole_test_set(
    on_onnx: ServingModel, test_split: MnistSplit
) -> None:
    assert on_onnx.runtime == "onnxruntime"
    got = in_steps(on_onnx, test_split.images)[:, :10]
    expected = keras_probabilities(on_onnx, test_split.images)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_onnx_verdicts_agree_with_tensorflow(
    on_onnx: ServingModel, on_tensorflow: ServingModel, test_split: MnistSplit
) -> None:
    # The test set, and inputs the rule must refuse or doubt: negatives, noise, blank pages.
    noise = np.random.default_rng(0).integers(0, 256, (300, 28, 28), dtype=np.uint8)
    images = np.concatenate([test_split.images, 255 - test_split.images[:500], noise])
    onnx_rows, tensorflow_rows = in_steps(on_onnx, images), in_steps(on_tensorflow, images)
    assert on_tensorflow.runtime == "tensorflow"
    np.testing.assert_array_equal(onnx_rows[:, 11], tensorflow_rows[:, 11])
    np.testing.assert_allclose(onnx_rows[:, :11], tensorflow_rows[:, :11], rtol=0, atol=1e-5)
    assert len(set(onnx_rows[:, 11])) == 3, "every verdict occurs, so each was compared"


def test_onnx_answers_from_many_threads_at_once_match_one_thread(
    on_onnx: ServingModel, test_split: MnistSplit
) -> None:
    slices = [test_split.images[i : i + 50] for i in range(0, 1000, 50)]
    alone = [on_onnx.answer(images) for images in slices]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(on_onnx.answer, slices))
    for one, other in zip(alone, together, strict=True):
        np.testing.assert_array_equal(one, other)


def test_setting_picks_the_runtime(settings: Settings, fixture_store: Path) -> None:
    assert Settings.model_fields["runtime"].default == "onnxruntime"
    for runtime in ("onnxruntime", "tensorflow"):
        with versions_app(settings, fixture_store, runtime=runtime) as client:
            assert service(client).holder.current.runtime == runtime
            assert client.get("/test/0").status_code == 200
            assert [v["runtime"] for v in client.get("/model").json()["loaded"]] == [runtime]


def test_version_without_export_falls_back_to_tensorflow(
    private_store: Path, test_split: MnistSplit, caplog: pytest.LogCaptureFixture
) -> None:
    (ModelStore(private_store).version_path(1) / ONNX_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="app.serving.model"):
        serving = compile_version(private_store)
    assert serving.runtime == "tensorflow"
    assert "version 1: forward pass on TensorFlow, not ONNX Runtime" in caplog.text
    assert "model.onnx is missing" in caplog.text
    np.testing.assert_allclose(
        serving.forward(test_split.images[:500]),
        keras_probabilities(serving, test_split.images[:500]),
        atol=1e-6,
    )


def test_damaged_export_falls_back_to_tensorflow(
    private_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (ModelStore(private_store).version_path(1) / ONNX_FILE).write_bytes(b"not an onnx model")
    with caplog.at_level(logging.WARNING, logger="app.serving.model"):
        assert compile_version(private_store).runtime == "tensorflow"
    assert "forward pass on TensorFlow" in caplog.text


def test_export_of_other_weights_is_never_served(
    private_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(private_store)
    assert publish_perturbed(private_store) == 2
    # Version 1 now holds version 2's weights beside its own, older export.
    shutil.copy2(store.version_path(2) / MODEL_FILE, store.version_path(1) / MODEL_FILE)
    with caplog.at_level(logging.WARNING, logger="app.serving.model"):
        assert compile_version(private_store, 1).runtime == "tensorflow"
    assert "converted from other weights" in caplog.text


def test_publishing_new_weights_exports_them_again(private_store: Path, test_split: MnistSplit) -> None:
    store = ModelStore(private_store)
    assert publish_perturbed(private_store) == 2  # copies version 1's files, model.onnx included
    first, second = store.read_metadata(1).onnx, store.read_metadata(2).onnx
    assert first is not None and second is not None
    assert second.model_sha256 == file_sha256(store.version_path(2) / MODEL_FILE) != first.model_sha256
    serving = compile_version(private_store, 2)
    assert serving.runtime == "onnxruntime"
    images = test_split.images[:1000]
    np.testing.assert_allclose(serving.forward(images), keras_probabilities(serving, images), atol=1e-5)


def test_damaged_model_is_published_without_export(private_store: Path) -> None:
    store = ModelStore(private_store)
    version = publish_copy(private_store, model_bytes=b"not a keras archive")
    metadata = store.read_metadata(version)
    assert metadata.onnx is None
    assert "onnx" not in metadata.files
    assert not (store.version_path(version) / ONNX_FILE).exists()


@pytest.mark.slow  # converts the model with tf2onnx in a fresh interpreter
def test_export_onnx_command_gives_an_older_version_its_export(private_store: Path) -> None:
    store = ModelStore(private_store)
    metadata = store.read_metadata(1)
    files = {role: name for role, name in metadata.files.items() if role != "onnx"}
    store.update_metadata(metadata.model_copy(update={"onnx": None, "files": files}))
    (store.version_path(1) / ONNX_FILE).unlink()
    assert compile_version(private_store).runtime == "tensorflow"

    result = run_cli("training.onnx_export", "--store", str(private_store), "1", cwd=private_store)
    assert result.returncode == 0, result.stderr[-3000:]
    assert store.read_metadata(1).files["onnx"] == ONNX_FILE
    assert compile_version(private_store).runtime == "onnxruntime"


def test_runtime_threads_default_to_the_cores_shared_among_workers(settings: Settings) -> None:
    cores = len(os.sched_getaffinity(0))
    for workers in (1, 2, 64):
        choice = settings.model_copy(update={"workers": workers}).runtime_choice()
        assert choice == RuntimeChoice("onnxruntime", max(1, cores // workers))
    assert settings.model_copy(update={"runtime_threads": 3}).runtime_choice().threads == 3


def test_onnx_pool_threads_sleep_between_passes(fixture_store: Path) -> None:
    """Spinning pool threads burnt about as much CPU per request as the rest of the service at one
    connection, taken from the event loop and the other workers on the same cores."""
    content = (ModelStore(fixture_store).version_path(1) / ONNX_FILE).read_bytes()
    options = OnnxForward(content, threads=2)._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_the_service_computes_verdicts_on_one_blas_thread(client: TestClient) -> None:
    """A `seed` version's verdict multiplies by a 1000x1000 matrix per request: with OpenBLAS's
    threads fighting the runtime's for two cores, one image took 90 ms instead of 0.2 ms."""
    from threadpoolctl import threadpool_info

    assert client.get("/test/1").status_code == 200
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == 1 for pool in blas)


IMPORTS_SEEN = """
import json, sys
from fastapi.testclient import TestClient
from app.config import Settings
from app.main import create_app

png = open(sys.argv[2], "rb").read()
seen = {}
with TestClient(create_app(Settings(model_store=sys.argv[1]))) as client:
    seen["ready"] = "tensorflow" in sys.modules
    answer = client.post("/predict", files={"file": ("digit.png", png, "image/png")}).json()
    seen["predicted"] = [answer["prediction"], "tensorflow" in sys.modules]
    answer = client.post("/predict?explain=true", files={"file": ("digit.png", png, "image/png")}).json()
    seen["explained"] = [answer["explanation"]["digit"], "tensorflow" in sys.modules]
print("SEEN", json.dumps(seen))
"""


@pytest.mark.parametrize(
    "method",
    [
        "occlusion",
        # A fresh interpreter that imports TensorFlow: the slow lane's.
        pytest.param("integrated_gradients", marks=pytest.mark.slow),
    ],
)
def test_serving_on_onnx_imports_tensorflow_only_for_integrated_gradients(
    fixture_store: Path, test_split: MnistSplit, tmp_path: Path, method: str
) -> None:
    # A fresh interpreter: this one imported TensorFlow long ago.
    digit = tmp_path / "digit.png"
    Image.fromarray(test_split.images[128]).save(digit)
    env = environment_without_settings()
    env |= {"PYTHONPATH": str(REPO_ROOT), "MNIST_EXPLAIN_METHOD": method}
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_SEEN, str(fixture_store), str(digit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = [line for line in result.stdout.splitlines() if line.startswith("SEEN ")]
    label = int(test_split.labels[128])
    # Occlusion never needs it; integrated gradients bring it before ready, with the warm-up.
    gradients = method == "integrated_gradients"
    expected = {"ready": gradients, "predicted": [label, gradients], "explained": [label, gradients]}
    assert json.loads(line[5:]) == expected


def test_an_export_whose_input_disagrees_with_the_metadata_is_never_served(private_store: Path) -> None:
    # The export would run (its input is 28x28x1), but the metadata says otherwise: ONNX Runtime is
    # refused, TensorFlow's fallback reads the Keras model and refuses the version.
    store = ModelStore(private_store)
    metadata = store.read_metadata(1)
    wider = metadata.input.model_copy(update={"shape": (32, 32, 1)})
    store.update_metadata(metadata.model_copy(update={"input": wider}))
    with pytest.raises(ModelStoreError, match=r"input shape \(28, 28, 1\) disagrees with metadata"):
        load_serving_model(store, 1, warmup_batch=8, runtime=ONNX)
