"""The docs are a product too: the site builds, every path they name exists, and the product speaks
of itself only (no work items, no build machine's paths, no dated runs) in the docs, the generated
reports, and the code's comments and docstrings. The examples themselves run in test_docs_examples.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import RESULTS, load, render
from tests.conftest import REPO_ROOT

PROSE = sorted(
    [
        REPO_ROOT / "README.md",
        REPO_ROOT / "CHANGELOG.md",
        *(REPO_ROOT / "docs").rglob("*.md"),
        *(REPO_ROOT / "bench" / "results").rglob("*.md"),
    ]
)
CODE_FOLDERS = (
    "app",
    "training",
    "model_store",
    "mnist_client",
    "bench",
    "scripts",
    "tests",
    "deploy",
    "postman",
)
CODE_SUFFIXES = {".py", ".sh", ".yml", ".yaml", ".js", ".html", ".conf", ".lua", ".toml"}
CODE = sorted(
    [REPO_ROOT / name for name in ("Dockerfile", "docker-compose.yml", "pyproject.toml", "mkdocs.yml")]
    + [
        path
        for folder in CODE_FOLDERS
        for path in (REPO_ROOT / folder).rglob("*")
        if path.suffix in CODE_SUFFIXES and "node_modules" not in path.parts and path != Path(__file__)
    ]
)

# Written so that this file does not match them itself.
WORK_ITEM = re.compile(r"\bissues?\s+#?\d+" + "", re.IGNORECASE)
MACHINE_PATH = re.compile(r"(?<![\w.])/" + "work" + r"/|\.\./" + "shared" + r"\b")
CLOCK_TIME = re.compile(r"\b\d{1,2}:\d\d(?:-\d{1,2}:\d\d)? " + "UTC" + r"\b")
DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
THIS_MACHINE = re.compile(r"\bthis (?:" + "machine|session" + r")\b", re.IGNORECASE)


def leaks(text: str, patterns: list[re.Pattern[str]]) -> list[str]:
    return [
        f"{number}: {line.strip()[:120]}"
        for number, line in enumerate(text.splitlines(), 1)
        if any(pattern.search(line) for pattern in patterns)
    ]


@pytest.mark.parametrize("path", PROSE, ids=[str(p.relative_to(REPO_ROOT)) for p in PROSE])
def test_the_docs_speak_of_the_product_only(path: Path) -> None:
    patterns = [WORK_ITEM, MACHINE_PATH, CLOCK_TIME, THIS_MACHINE]
    if path.name != "CHANGELOG.md":  # a release has a date; a run does not
        patterns.append(DATE)
    found = leaks(path.read_text(), patterns)
    assert not found, f"{path.relative_to(REPO_ROOT)}:\n" + "\n".join(found)


def test_the_code_speaks_of_the_product_only() -> None:
    found = [
        f"{path.relative_to(REPO_ROOT)}:{leak}"
        for path in CODE
        for leak in leaks(path.read_text(errors="replace"), [WORK_ITEM, MACHINE_PATH, CLOCK_TIME])
    ]
    assert not found, "\n".join(found)


def test_a_generated_benchmark_report_speaks_of_the_product_only() -> None:
    runs, header = load((RESULTS / "latest.json").read_text())
    report = render(runs, header)
    assert not leaks(report, [WORK_ITEM, MACHINE_PATH, CLOCK_TIME, DATE, THIS_MACHINE])


REPO_PATH = re.compile(
    r"`((?:app|training|model_store|mnist_client|bench|scripts|tests|deploy|docs|postman)/[\w./-]*)"
)


@pytest.mark.parametrize("path", PROSE, ids=[str(p.relative_to(REPO_ROOT)) for p in PROSE])
def test_every_file_the_docs_name_exists(path: Path) -> None:
    missing = sorted(
        {
            name
            for name in REPO_PATH.findall(path.read_text())
            if not any(REPO_ROOT.glob(name.rstrip("/") + "*"))
        }
    )
    assert not missing, f"{path.relative_to(REPO_ROOT)} names files that are not there: {missing}"


def test_the_readme_is_a_front_page() -> None:
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_site_builds_without_a_broken_link_or_anchor(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    configuration = (tmp_path / "site" / "configuration" / "index.html").read_text()
    assert "MNIST_LOADED_VERSIONS=3,5" in configuration
    performance = (tmp_path / "site" / "performance" / "index.html").read_text()
    assert "ours / bentoml" in performance  # the benchmark's own report, included
