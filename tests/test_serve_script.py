"""`scripts/serve.sh`, the README's first command: it checks, trains and serves one store, from `.env`."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from model_store.store import ModelStore
from tests.support.live_server import environment_without_settings, free_port, running, spawn
from tests.support.paths import REPO_ROOT

# mnist-train as serve.sh calls it, plus what keeps the run short; everything else it decides itself.
QUICK_TRAIN = """#!/usr/bin/env bash
exec "{python}" -m training.train "$@" --limit 600 --epochs 1 --no-download --no-savedmodel --verbose 0
"""


def project_copy(tmp_path: Path) -> Path:
    """The scripts and pyproject.toml in a fresh folder, with a ready `.venv` that runs this checkout."""
    project = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "scripts", project / "scripts")
    shutil.copyfile(REPO_ROOT / "pyproject.toml", project / "pyproject.toml")
    venv_bin = project / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "mnist-train").write_text(QUICK_TRAIN.format(python=sys.executable))
    (stubs / "mnist-train").chmod(0o755)
    (venv_bin / "activate").write_text(
        f'export PATH="{stubs}:{venv_bin}:{Path(sys.executable).parent}:$PATH" PYTHONPATH="{REPO_ROOT}"\n'
    )
    stamp = hashlib.sha256((project / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (project / ".venv" / f".installed-{stamp}").touch()
    return project


@pytest.mark.e2e
def test_serve_sh_trains_and_serves_the_store_named_in_dotenv(tmp_path: Path, mnist_dir: Path) -> None:
    project = project_copy(tmp_path)
    port = free_port()
    (project / ".env").write_text(
        f"MNIST_MODEL_STORE=store-from-dotenv\nMNIST_DATA_DIR={mnist_dir}\nMNIST_PORT={port}\n"
        "MNIST_RELOAD_POLL_SECONDS=0\nMNIST_LOG_JSON=false\n"
    )
    env = environment_without_settings() | {"MNIST_TRAIN_PRESET": "seed"}
    command = [str(project / "scripts" / "serve.sh")]
    server = spawn(command, port, tmp_path / "serve.log", env=env, cwd=tmp_path, new_session=True)
    with running(server, ready_timeout=300, stop_timeout=60):
        served = httpx.get(f"{server.url}/model", timeout=10).json()["metadata"]

    assert "The model store is empty: training the seed preset first." in server.log()
    store = ModelStore(project / "store-from-dotenv")
    assert store.versions() == [1]  # trained where .env says ...
    assert served["version"] == 1  # ... and served from there
    assert store.read_metadata(1).training.preset == served["training"]["preset"] == "seed"
    assert not (project / "models").exists()
