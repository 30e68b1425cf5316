"""Every documented setting works as documented: set the way a shell user sets it, read as shown.

docs/configuration.md is generated from the settings classes (scripts/reference_pages.py);
these tests keep the page fresh and complete, and prove each example on it through the process
environment and through `.env`, never by building `Settings(...)` in Python.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from app.config import Settings
from model_store.settings import StoreSettings
from tests.app.conftest import publish_copy
from tests.conftest import REPO_ROOT
from tests.support.live_server import environment_without_settings, free_port, running, spawn
from training.arguments import parse_args

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from reference_pages import OTHER_VARIABLES, PAGE, env_name, grouped_service_fields, shell_form

FIELDS = sorted(Settings.model_fields.items())
# Read by the code but not settings a user sets: the CLI's hand-off to its workers, and a bench knob.
INTERNAL_VARIABLES = {"MNIST_SERVE_STARTUP_FAILURE_FILE", "MNIST_BENCH_WITHOUT"}


def example(info: FieldInfo) -> Any:
    assert info.examples, "every setting has an example"
    return info.examples[0]


def plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


@pytest.fixture
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No MNIST_* variable set and an empty working folder (no stray .env)."""
    for name in list(os.environ):
        if name.startswith("MNIST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_configuration_page_is_generated_from_the_code() -> None:
    script = REPO_ROOT / "scripts" / "reference_pages.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("name", "info"), FIELDS, ids=[name for name, _ in FIELDS])
def test_every_setting_is_described_with_an_example(name: str, info: FieldInfo) -> None:
    assert info.description and info.description.endswith("."), f"{env_name(name)} needs a description"
    assert info.examples, f"{env_name(name)} needs an example"
    assert plain(example(info)) != plain(info.get_default(call_default_factory=True)), (
        "an example equal to the default proves nothing"
    )
    assert f"`{env_name(name)}={shell_form(example(info))}`" in PAGE.read_text()


@pytest.mark.parametrize(("name", "info"), FIELDS, ids=[name for name, _ in FIELDS])
def test_every_example_set_in_the_environment_is_read_as_documented(
    name: str, info: FieldInfo, clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env_name(name), shell_form(example(info)))
    assert plain(getattr(Settings(), name)) == plain(example(info))


@pytest.mark.parametrize(("name", "info"), FIELDS, ids=[name for name, _ in FIELDS])
def test_every_example_written_in_dotenv_is_read_as_documented(
    name: str, info: FieldInfo, clean_environment: Path
) -> None:
    (clean_environment / ".env").write_text(f"{env_name(name)}={shell_form(example(info))}\n")
    assert plain(getattr(Settings(), name)) == plain(example(info))


def test_training_reads_the_shared_settings_from_the_environment(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = {}
    for name, info in StoreSettings.model_fields.items():
        monkeypatch.setenv(env_name(name), shell_form(example(info)))
        expected[name] = example(info)
    args = parse_args([])
    assert (args.store, args.name, args.data_dir) == (
        expected["model_store"],
        expected["model_name"],
        expected["data_dir"],
    )


@pytest.mark.parametrize(
    ("versions", "origins"),
    [
        ("3,5", "http://a.example,http://b.example"),
        (" 3 , 5 ", " http://a.example , http://b.example "),
        ("[3, 5]", '["http://a.example", "http://b.example"]'),
    ],
)
def test_list_settings_take_the_comma_form_and_json(
    versions: str, origins: str, clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNIST_LOADED_VERSIONS", versions)
    monkeypatch.setenv("MNIST_CORS_ORIGINS", origins)
    settings = Settings()
    assert settings.loaded_versions == [3, 5]
    assert settings.cors_origins == ["http://a.example", "http://b.example"]


def test_a_wrong_list_item_is_one_line_naming_the_variable(clean_environment: Path) -> None:
    env = environment_without_settings() | {"MNIST_LOADED_VERSIONS": "3,x"}
    result = subprocess.run([sys.executable, "-m", "app.cli"], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("mnist-serve: error: MNIST_LOADED_VERSIONS")


def variables_read_by_the_code() -> set[str]:
    """Every MNIST_* name the code reads from the environment: settings, os.environ, shell ${...}."""
    names = {env_name(name) for name in Settings.model_fields}
    patterns = [
        r"environ\.get\(\s*\"(MNIST_[A-Z_]+)\"",
        r"\$\{(MNIST_[A-Z_]+)",
        r"environ\[\"(MNIST_[A-Z_]+)\"\]",
    ]
    for folder in ("app", "training", "model_store", "mnist_client", "scripts"):
        for path in (REPO_ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".sh"):
                text = path.read_text()
                for pattern in patterns:
                    names.update(re.findall(pattern, text))
    return names - INTERNAL_VARIABLES


def test_every_variable_the_code_reads_is_documented() -> None:
    page = PAGE.read_text()
    missing = sorted(name for name in variables_read_by_the_code() if f"`{name}`" not in page)
    assert not missing, f"read by the code but not in docs/configuration.md: {missing}"
    assert {name for name, *_ in OTHER_VARIABLES} <= variables_read_by_the_code()


def test_every_service_setting_is_listed_under_one_purpose() -> None:
    grouped = [name for fields in grouped_service_fields().values() for name in fields]
    service = [name for name in Settings.model_fields if name not in StoreSettings.model_fields]
    assert sorted(grouped) == sorted(service)
    page = PAGE.read_text()
    for heading, fields in grouped_service_fields().items():
        section = page.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
        assert all(f"`{env_name(name)}`" in section for name in fields), heading


# Where the packages read the environment themselves, and why that is not a setting: the CLI's
# hand-off to its workers, prometheus_client's own variable, TensorFlow's own oneDNN switches
# (read to predict what TensorFlow will do, never set by us).
DIRECT_READERS = {"app/startup.py", "app/operations/metrics.py", "training/precision.py"}


def test_the_packages_read_the_environment_only_through_the_settings() -> None:
    reading = re.compile(
        r"os\.environ\.get\(|os\.getenv\(|os\.environ\[[^]]+\](?!\s*=)|choose_precision\(.*os\.environ"
    )
    readers = {
        str(path.relative_to(REPO_ROOT))
        for package in ("app", "training", "model_store")
        for path in (REPO_ROOT / package).rglob("*.py")
        if reading.search(path.read_text())
    }
    assert readers <= DIRECT_READERS, sorted(readers - DIRECT_READERS)


@pytest.mark.e2e
def test_mnist_serve_loads_the_versions_listed_in_the_environment(
    trained_store: Path, tmp_path: Path
) -> None:
    """The documented `MNIST_LOADED_VERSIONS=3,5 mnist-serve`, run as a shell user runs it."""
    store = Path(shutil.copytree(trained_store, tmp_path / "store"))
    assert [publish_copy(store) for _ in range(5)] == [2, 3, 4, 5, 6]
    port = free_port()
    env = environment_without_settings()
    env |= {"MNIST_MODEL_STORE": str(store), "MNIST_LOADED_VERSIONS": "3,5", "MNIST_PORT": str(port)}
    mnist_serve = Path(sys.executable).with_name("mnist-serve")
    with running(spawn([str(mnist_serve)], port, tmp_path / "server.log", env=env, cwd=tmp_path)) as server:
        ready = {
            version: httpx.get(f"{server.url}/v2/models/mnist/versions/{version}/ready").status_code
            for version in range(1, 7)
        }
    assert {version for version, status in ready.items() if status == 200} == {3, 5, 6}, ready
