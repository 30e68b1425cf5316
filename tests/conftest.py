"""Shared fixtures: the real MNIST files, the committed fixture store and the session's trained
stores, and small helpers for building store versions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
from sqlalchemy import Engine

from model_store.metadata import MODEL_FILE, ModelMetadata
from model_store.mnist_data import MNIST_FILES
from tests.support.live_server import environment_without_settings
from tests.support.paths import REPO_ROOT
from tests.support.postgres import PostgresServer, remove_postgres, start_postgres
from tests.support.prediction_log import migrated_database
from tests.support.s3 import S3Server, S3Store, s3_server

DEFAULT_MNIST_DIR = REPO_ROOT / "data" / "mnist"
# Written by `python -m tests.fixtures.make_store` (tests/fixtures/README.md).
FIXTURE_STORE = REPO_ROOT / "tests" / "fixtures" / "store"
# The fixtures that train a model: only a test marked `slow` may ask for them.
TRAINING_FIXTURES = frozenset({"trained_store", "seed_store"})


def pytest_configure(config: pytest.Config) -> None:
    # The tests' in-process apps and servers would all listen for gRPC on the default port (and
    # fail where something else holds it); the tests of gRPC give each server a free port.
    os.environ.setdefault("MNIST_GRPC_PORT", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that starts a server process (`e2e`) or a browser is `slow` too; a test outside
    the slow lane that asks for a trained store is refused, so the fast lane never trains."""
    training = []
    for item in items:
        if item.get_closest_marker("e2e") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("slow"):
            training.append(item.nodeid)
    if training:
        raise pytest.UsageError(
            "these tests train a model but are not marked slow (mark them, or use fixture_store): "
            + ", ".join(training)
        )


@pytest.fixture(scope="session", autouse=True)
def prediction_log_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The in-process apps keep their prediction log in a SQLite file of the session's own, not
    in the working directory's data folder; a test that looks at the log gives its own URL."""
    url = f"sqlite:///{tmp_path_factory.mktemp('prediction-log') / 'mnist-serve.db'}"
    previous = os.environ.get("MNIST_DATABASE_URL")
    os.environ["MNIST_DATABASE_URL"] = url
    yield url
    if previous is None:
        del os.environ["MNIST_DATABASE_URL"]
    else:
        os.environ["MNIST_DATABASE_URL"] = previous


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
def fixture_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the committed fixture store: one small cnn-shaped version (~98 % on the test set)
    with its ONNX and int8 exports, metadata and trust statistics, as training publishes it. No
    training; tests that change the store copy it again."""
    return Path(shutil.copytree(FIXTURE_STORE, tmp_path_factory.mktemp("fixture") / "store"))


def train_session_store(store: Path, mnist_dir: Path, preset: str) -> Path:
    """`preset` trained on 12,000 real MNIST images for two epochs (seed 7), published in `store`.
    Without the SavedModel export: no test serves these stores with TF Serving."""
    from training.train import main as train

    # Each preset's default precision: the cnn's auto is mixed bfloat16 where the CPU has it natively
    # (about 30 % less CPU per step than float32 there), float32 elsewhere (bfloat16 emulated costs
    # over ten times as much); bench.training_time.
    args = ["--preset", preset, "--limit", "12000", "--epochs", "2", "--seed", "7", "--no-savedmodel"]
    args += ["--store", str(store), "--data-dir", str(mnist_dir), "--no-download", "--verbose", "0"]
    assert train(args) == 0
    return store


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A model store holding one small CNN trained on real MNIST (a subset, ~98 % test accuracy).

    Trained once per test session, for the slow lane only; tests that change the store copy it first.
    """
    return train_session_store(tmp_path_factory.mktemp("store"), mnist_dir, "cnn")


@pytest.fixture(scope="session")
def seed_store(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A model store holding one small `seed` dense net (784-1000-10) trained on real MNIST (a
    subset, two epochs, ~84 % test accuracy): wide features, whose verdict uses the Mahalanobis
    score and a low-rank approximation of it. Trained once per session (seconds); copy to change."""
    return train_session_store(tmp_path_factory.mktemp("seed_store"), mnist_dir, "seed")


@pytest.fixture(scope="session")
def s3_session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (rclone, signatures checked) for the session; each test gets its own bucket."""
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def s3_store(s3_session_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    """A fresh bucket on the session's S3 server, this process's AWS variables pointing at it."""
    for variable, value in s3_session_server.env().items():
        monkeypatch.setenv(variable, value)
    return S3Store(s3_session_server, s3_session_server.create_bucket())


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


@pytest.fixture
def log_url(tmp_path: Path) -> str:
    """A prediction log's database: a SQLite file of the test's own (empty until `log_engine`)."""
    return f"sqlite:///{tmp_path / 'log.db'}"


@pytest.fixture
def log_engine(log_url: str) -> Iterator[Engine]:
    """The log at `log_url`, migrated as the service migrates it at startup."""
    with migrated_database(log_url) as engine:
        yield engine


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (Debian's `postgresql` package), removed at the end."""
    server = start_postgres()
    yield server
    remove_postgres(server)


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """The session's server, running and with an empty database; running again after the test."""
    if not postgres_server.accepts():
        postgres_server.start()
    postgres_server.reset()
    yield postgres_server
    if not postgres_server.accepts():
        postgres_server.start()
