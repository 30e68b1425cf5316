"""The docs are a product too: the site builds, every path they name exists, and the product speaks
of itself only (no work items, no build machine's paths, no dated runs) in the docs, the generated
reports, and the code's comments and docstrings. The examples themselves run in test_docs_examples.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import RESULTS, load, render
from tests.conftest import REPO_ROOT
from tests.support.project import app_openapi

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
# Words of the workshop the product was built in, not of the product: where its seed network came
# from, the time limits of the work, the build network, the machine and the runs it happened on, and
# goals ticked off as lists.
WORKSHOP = re.compile(
    r"\bnote" + r"book\b|\b15-" + r"minute\b|\bbud" + r"get\b|\bCI " + r"here\b|\bbusy \d+-core"
    r"|\bthe run " + r"before this one\b",
    re.IGNORECASE,
)
VERDICT_LIST = re.compile(r"\b(?:PA" + r"SS|FA" + r"IL)\b|:\s(?:pa" + r"ss|not met)\b")
# The user-facing prose: the README, the docs and the reports they include (not the changelog,
# which records the history as the lead words it).
USER_PROSE = [path for path in PROSE if path.name != "CHANGELOG.md"]
APP_CODE = sorted((REPO_ROOT / "app").rglob("*.py"))


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


@pytest.mark.parametrize("path", USER_PROSE, ids=[str(p.relative_to(REPO_ROOT)) for p in USER_PROSE])
def test_the_docs_use_no_workshop_words(path: Path) -> None:
    found = leaks(path.read_text(), [WORKSHOP, VERDICT_LIST])
    assert not found, f"{path.relative_to(REPO_ROOT)}:\n" + "\n".join(found)


def test_the_services_docstrings_and_openapi_use_no_workshop_words() -> None:
    """The app's docstrings and descriptions become /openapi.json and the /docs page."""
    found = [
        f"{path.relative_to(REPO_ROOT)}:{leak}"
        for path in APP_CODE
        for leak in leaks(path.read_text(), [WORKSHOP, VERDICT_LIST])
    ]
    found += [f"/openapi.json:{leak}" for leak in leaks(json.dumps(app_openapi(), indent=1), [WORKSHOP])]
    assert not found, "\n".join(found)


def test_the_workshop_words_are_caught() -> None:
    """The patterns above match what they are for, so the tests that use them can fail."""
    caught = [
        "the " + "notebook's network",
        "within the 15-" + "minute budget",
        "CI " + "here reaches only the package registries",
        "on a busy 2-" + "core machine",
        "the run before " + "this one measured",
        "| 0.61 ms | FA" + "IL |",
        "3.24x, 0.08: pa" + "ss",
    ]
    assert all(leaks(text, [WORKSHOP, VERDICT_LIST]) for text in caught)
    assert not leaks("a forward pass; tests fail when stale", [WORKSHOP, VERDICT_LIST])


def test_a_generated_benchmark_report_speaks_of_the_product_only() -> None:
    runs, header = load((RESULTS / "latest.json").read_text())
    report = render(runs, header)
    assert not leaks(
        report, [WORK_ITEM, MACHINE_PATH, CLOCK_TIME, DATE, THIS_MACHINE, WORKSHOP, VERDICT_LIST]
    )


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
