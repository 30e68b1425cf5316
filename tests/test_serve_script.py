"""`scripts/serve.sh`, the README's first command: it checks, trains and serves one store, from `.env`;
on an empty store a quick model answers first and the full one replaces it when published."""

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
from tests.support.waiting import wait_until

# mnist-train as serve.sh calls it, plus what keeps the run short; everything else it decides itself.
# The full (background) run waits for the test's go, so the quick model is served first whatever
# the machine's speed.
QUICK_TRAIN = """#!/usr/bin/env bash
case " $* " in *" --quick "*) ;; *) while [ ! -e "{gate}" ]; do sleep 0.1; done ;; esac
exec "{python}" -m training.train "$@" --limit 600 --epochs 1 --no-download --no-savedmodel
"""


def project_copy(tmp_path: Path, gate: Path) -> Path:
    """The scripts and pyproject.toml in a fresh folder, with a ready `.venv` that runs this checkout."""
    project = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "scripts", project / "scripts")
    shutil.copyfile(REPO_ROOT / "pyproject.toml", project / "pyproject.toml")
    venv_bin = project / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "mnist-train").write_text(QUICK_TRAIN.format(python=sys.executable, gate=gate))
    (stubs / "mnist-train").chmod(0o755)
    (venv_bin / "activate").write_text(
        f'export PATH="{stubs}:{venv_bin}:{Path(sys.executable).parent}:$PATH" PYTHONPATH="{REPO_ROOT}"\n'
    )
    stamp = hashlib.sha256((project / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (project / ".venv" / f".installed-{stamp}-train").touch()  # serve.sh installs the train extra
    return project


@pytest.mark.e2e
@pytest.mark.slow
def test_serve_sh_serves_a_quick_model_then_the_full_one_from_the_store_in_dotenv(
    tmp_path: Path, mnist_dir: Path
) -> None:
    gate = tmp_path / "train-the-full-model"
    project = project_copy(tmp_path, gate)
    port = free_port()
    (project / ".env").write_text(
        f"MNIST_MODEL_STORE=store-from-dotenv\nMNIST_DATA_DIR={mnist_dir}\nMNIST_PORT={port}\n"
        "MNIST_RELOAD_POLL_SECONDS=0.2\nMNIST_LOG_JSON=false\n"
    )
    env = environment_without_settings() | {"MNIST_TRAIN_PRESET": "seed"}
    command = [str(project / "scripts" / "serve.sh")]
    server = spawn(command, port, tmp_path / "serve.log", env=env, cwd=tmp_path, new_session=True)
    with running(server, ready_timeout=300, stop_timeout=60):
        quick = httpx.get(f"{server.url}/model", timeout=10).json()["metadata"]
        gate.touch()
        wait_until(
            lambda: httpx.get(f"{server.url}/model", timeout=10).json()["metadata"]["version"] == 2,
            timeout=300,
        )
        full = httpx.get(f"{server.url}/model", timeout=10).json()["metadata"]

    log = server.log()
    assert "The model store is empty: training a quick seed model first, then the full one" in log
    assert "epoch 1/1: " in log  # the quick run's progress, one line per epoch
    assert "Quick model ready in " in log
    assert (quick["version"], quick["training"]["quick"]) == (1, True)
    assert (full["version"], full["training"]["quick"]) == (2, False)
    assert "now serving mnist version 2 (seed, full) in place of version 1 (seed, quick)" in log
    store = ModelStore(project / "store-from-dotenv")
    assert store.versions() == [1, 2]  # trained where .env says ...
    assert store.read_metadata(1).training.preset == store.read_metadata(2).training.preset == "seed"
    assert "epoch 1/1: " in (project / "logs" / "train-full.log").read_text()
    assert not (project / "models").exists()
