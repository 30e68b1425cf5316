"""The code stays lint-clean, formatted and type-checked, with the settings in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.live_server import REPO_ROOT


def project_python_files() -> set[Path]:
    """Every Python file of the project under version control."""
    listed = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert listed, "git ls-files found no Python files"
    return {Path(name) for name in listed}


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_code_passes(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_sees_every_python_file() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--show-files", "."],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seen = {Path(line).resolve().relative_to(REPO_ROOT) for line in result.stdout.split()}
    assert project_python_files() - seen == set()


def test_mypy_checks_every_python_file() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    roots = [Path(entry) for entry in config["files"]]
    unchecked = {path for path in project_python_files() if not any(path.is_relative_to(r) for r in roots)}
    assert unchecked == set()
