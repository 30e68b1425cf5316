"""The build context .dockerignore leaves: every file the packages need, nothing private or heavy."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.dockerignore import build_context_files, is_ignored, read_dockerignore
from tests.support.paths import REPO_ROOT
from tests.support.project import (
    PYPROJECT,
)

MUST_BE_IGNORED = [
    ".venv/bin/python",
    ".git/HEAD",
    "data/mnist/train-images-idx3-ubyte.gz",
    "model_store/mnist/1/model.keras",
    "model_store/mnist/17/saved_model.pb",
    "model_store/mnist/17/variables/variables.index",
    "model_store/other/3/metadata.json",
    "model_store/mnist/.tmp-0123abcd/model.keras",
    "artifacts/report.html",
    "app/__pycache__/main.cpython-311.pyc",
    "model_store/__pycache__/store.cpython-311.pyc",
    ".pytest_cache/v/cache/lastfailed",
    ".ruff_cache/0.6.0/123",
    ".mypy_cache/3.11/app/main.data.json",
    ".hypothesis/unicode_data/14.0.0/charmap.json.gz",
    "mnist_serve.egg-info/PKG-INFO",
    "tests/conftest.py",
    "tests/deploy/test_dockerignore.py",
    "postman/node_modules/newman/package.json",
    ".env",
    "samples/digit.png",
    "logs/train-full.log",
]
MUST_BE_SENT = [
    "pyproject.toml",
    "app/main.py",
    "app/api/routes/health.py",
    "training/train.py",
    "model_store/store.py",
    "model_store/__main__.py",
]


@pytest.mark.parametrize("path", MUST_BE_IGNORED)
def test_dockerignore_keeps_out(path: str) -> None:
    assert is_ignored(path, read_dockerignore()), f"{path} would be sent to the Docker daemon"


@pytest.mark.parametrize("path", MUST_BE_SENT)
def test_dockerignore_lets_through(path: str) -> None:
    assert not is_ignored(path, read_dockerignore()), f"{path} is needed to build the wheel"


def test_build_context_holds_every_package_file() -> None:
    """Whatever setuptools packs into the wheel (packages and package data) reaches the build."""
    sent = set(build_context_files())
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    package_data = PYPROJECT["tool"]["setuptools"].get("package-data", {})
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in tracked:
        top = rel.split("/")[0]
        if not any(re.fullmatch(pattern.replace("*", ".*"), top) for pattern in include):
            continue
        package = rel.rsplit("/", 1)[0].replace("/", ".")
        data = any(
            re.fullmatch(glob.replace("*", "[^/]*"), rel.split("/", 1)[1])
            for glob in package_data.get(top, [])
        )
        if (rel.endswith(".py") or data) and (REPO_ROOT / rel).exists():
            assert rel in sent, f"{rel} (package {package}) is missing from the build context"
    readme = PYPROJECT["project"].get("readme")
    if readme and (REPO_ROOT / readme).exists():
        assert readme in sent, "pyproject.toml names the readme: the wheel build reads it"


def test_build_context_is_small() -> None:
    sent = build_context_files()
    size = sum((REPO_ROOT / rel).stat().st_size for rel in sent)
    assert size < 5 * 1024 * 1024, f"build context is {size / 1e6:.1f} MB: data or models leaking in?"
    assert not [rel for rel in sent if rel.endswith((".gz", ".keras", ".pb", ".npz", ".h5"))]
