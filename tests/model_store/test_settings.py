"""One settings class for every entry point: the service, `mnist-train` and `python -m model_store`."""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import app
import model_store
import training
from app.config import Settings
from model_store.settings import StoreSettings
from model_store.store import ModelStore
from tests.conftest import REPO_ROOT, make_metadata
from tests.support.live_server import environment_without_settings
from training.arguments import parse_args

SHARED_VARIABLES = ("MNIST_MODEL_STORE", "MNIST_MODEL_NAME", "MNIST_DATA_DIR")


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory whose `.env` names the store, the model and the data; no MNIST_* in the env."""
    for name in SHARED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text(
        "MNIST_MODEL_STORE=store-from-dotenv\nMNIST_MODEL_NAME=digits\nMNIST_DATA_DIR=data-from-dotenv\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_service_settings_extend_the_shared_store_settings() -> None:
    assert issubclass(Settings, StoreSettings)
    assert Settings.model_config["env_file"] == StoreSettings.model_config["env_file"] == ".env"
    assert Settings.model_config["env_prefix"] == StoreSettings.model_config["env_prefix"] == "MNIST_"


def test_service_and_training_read_the_same_dotenv(project_dir: Path) -> None:
    service = Settings()
    args = parse_args([])
    expected = (Path("store-from-dotenv"), "digits", Path("data-from-dotenv"))
    assert (service.model_store, service.model_name, service.data_dir) == expected
    assert (args.store, args.name, args.data_dir) == expected


def test_training_flags_override_the_dotenv(project_dir: Path) -> None:
    args = parse_args(["--store", "elsewhere", "--name", "other", "--data-dir", "there"])
    assert (args.store, args.name, args.data_dir) == (Path("elsewhere"), "other", Path("there"))


def test_model_store_cli_lists_the_dotenv_store(project_dir: Path) -> None:
    version = ModelStore(project_dir / "store-from-dotenv", "digits").version_path(3)
    version.mkdir(parents=True)
    (version / "metadata.json").write_text(make_metadata("digits", 3).model_dump_json())

    env = environment_without_settings() | {"PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "model_store", "versions"],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "3\n", "")


def test_default_store_is_outside_every_installed_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SHARED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    default = StoreSettings().model_store
    assert isinstance(default, Path), "the default store is a folder"
    store = default.resolve()
    assert store == tmp_path / "models"
    installed = [Path(p) for p in (*site.getsitepackages(), sysconfig.get_paths()["purelib"])]
    packages = [Path(str(package.__file__)).resolve().parent for package in (app, model_store, training)]
    for folder in installed + packages:
        assert not store.is_relative_to(folder.resolve()), f"default store {store} is inside {folder}"
