"""Shared fixtures: the real MNIST files and small helpers for building store versions."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from model_store.metadata import MODEL_FILE, ModelMetadata
from model_store.mnist_data import MNIST_FILES
from tests.support.live_server import environment_without_settings
from tests.support.paths import REPO_ROOT

DEFAULT_MNIST_DIR = REPO_ROOT / "data" / "mnist"


def pytest_configure(config: pytest.Config) -> None:
    # The tests' in-process apps and servers would all listen for gRPC on the default port (and
    # fail where something else holds it); the tests of gRPC give each server a free port.
    os.environ.setdefault("MNIST_GRPC_PORT", "0")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four real MNIST `.gz` files (env MNIST_DATA_DIR, else data/mnist)."""
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
    # auto: mixed bfloat16 where the CPU has it natively (about 30 % less CPU per step than float32
    # there), float32 elsewhere (bfloat16 emulated costs over ten times as much); bench.training_time.
    args = ["--preset", "cnn", "--limit", "12000", "--epochs", "2", "--seed", "7", "--precision", "auto"]
    args += ["--store", str(store), "--data-dir", str(mnist_dir), "--no-download", "--verbose", "0"]
    assert train(args) == 0
    return store


@pytest.fixture(scope="session")
def seed_store(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A model store holding one small `seed` dense net (784-1000-10) trained on real MNIST (a
    subset, two epochs, ~84 % test accuracy): wide features, whose verdict uses the Mahalanobis
    score and a low-rank approximation of it. Trained once per session (seconds); copy to change."""
    from training.train import main as train

    store = tmp_path_factory.mktemp("seed_store")
    args = ["--preset", "seed", "--limit", "12000", "--epochs", "2", "--seed", "7"]
    args += ["--store", str(store), "--data-dir", str(mnist_dir), "--no-download", "--verbose", "0"]
    assert train(args) == 0
    return store


def run_cli(module: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> CompletedProcess[str]:
    """`python -m <module> <args>` as a user runs it: no MNIST_* variable from the test run, only `env`."""
    clean = environment_without_settings()
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=clean | {"PYTHONPATH": str(REPO_ROOT)} | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(result: CompletedProcess[str], prog: str, *fragments: str, status: int = 1) -> str:
    """The command failed with `status` and ended with one `prog: error:` line holding every fragment."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == errors[0]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_argument_refused(
    main: Callable[[list[str]], int], argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse refused `argv` before any work: exit status 2, `words` in its one-line message."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert words in capsys.readouterr().err
