"""The serving install: the project without its `train` extra, as in the serving image.

Each case runs in a fresh interpreter where the `train` extra's packages cannot be imported (their
`sys.modules` entries are None, which is how Python reports a missing package to `import` and to
`importlib.util.find_spec`). The image test (tests/deploy/test_image.py) runs the same service in
an image built without them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from model_store.forward import ONNX_FILE
from model_store.mnist_data import MnistSplit
from model_store.store import ModelStore
from tests.conftest import REPO_ROOT
from tests.support.live_server import environment_without_settings

TRAIN_EXTRA_MODULES = ["keras", "tensorflow", "tf2onnx", "matplotlib", "scipy", "skimage"]
HIDE = f"import sys; sys.modules.update(dict.fromkeys({TRAIN_EXTRA_MODULES}))\n"

SERVE = """
import json, sys
from fastapi.testclient import TestClient
from app.config import Settings
from app.main import create_app

png = open(sys.argv[2], "rb").read()
upload = {"file": ("digit.png", png, "image/png")}
seen = {}
with TestClient(create_app(Settings(model_store=sys.argv[1]))) as client:
    seen["predicted"] = client.post("/predict", files=upload).json()["prediction"]
    explanation = client.post("/predict?explain=true", files=upload).json()["explanation"]
    seen["explained"] = [explanation["method"], explanation["digit"]]
    seen["runtime"] = client.get("/model").json()["loaded"][0]["runtime"]
seen["tensorflow imported"] = any(name.startswith(("tensorflow", "keras")) for name in sys.modules
                                  if sys.modules[name] is not None)
print("SEEN", json.dumps(seen))
"""

START = """
import sys
from fastapi.testclient import TestClient
from app.config import Settings
from app.main import create_app

try:
    with TestClient(create_app(Settings(model_store=sys.argv[1]))):
        print("STARTED")
except Exception as exc:
    print("FAILED", exc)
"""


def run_hidden(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = environment_without_settings()
    return subprocess.run(
        [sys.executable, "-c", HIDE + script, *args],
        env=clean | {"PYTHONPATH": str(REPO_ROOT)} | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_serves_predicts_and_explains_by_occlusion(
    fixture_store: Path, test_split: MnistSplit, tmp_path: Path
) -> None:
    digit = tmp_path / "digit.png"
    Image.fromarray(test_split.images[128]).save(digit)
    result = run_hidden(SERVE, str(fixture_store), str(digit))
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = [line for line in result.stdout.splitlines() if line.startswith("SEEN ")]
    assert json.loads(line[5:]) == {
        "predicted": 8,
        "explained": ["occlusion", 8],
        "runtime": "onnxruntime",
        "tensorflow imported": False,
    }


def test_a_version_without_export_is_refused_with_what_to_install(private_store: Path) -> None:
    (ModelStore(private_store).version_path(1) / ONNX_FILE).unlink()
    result = run_hidden(START, str(private_store))
    assert "STARTED" not in result.stdout, result.stdout
    [line] = [line for line in result.stdout.splitlines() if line.startswith("FAILED ")]
    assert "model.keras: reading it needs Keras and TensorFlow" in line
    assert "pip install 'mnist-serve[train]'" in line


@pytest.mark.parametrize(
    ("variable", "value"), [("MNIST_RUNTIME", "tensorflow"), ("MNIST_EXPLAIN_METHOD", "integrated_gradients")]
)
def test_a_setting_that_needs_tensorflow_is_one_line(variable: str, value: str, fixture_store: Path) -> None:
    result = run_hidden(
        "from app.cli import main; main()", env={variable: value, "MNIST_MODEL_STORE": str(fixture_store)}
    )
    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert line.startswith(f"mnist-serve: error: {variable}") and "needs Keras and TensorFlow" in line, line


def test_training_is_one_line_naming_the_extra(tmp_path: Path, mnist_dir: Path) -> None:
    script = "from training.train import main; sys.exit(main(sys.argv[1:]))"
    result = run_hidden(script, "--store", str(tmp_path / "store"), "--data-dir", str(mnist_dir))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line == (
        "mnist-train: error: training needs Keras and TensorFlow, which this install lacks; install the "
        "`train` extra (pip install 'mnist-serve[train]') or use the full image"
    )
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())
