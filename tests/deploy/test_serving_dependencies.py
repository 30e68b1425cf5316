"""The serving image installs pyproject's base dependencies: exactly what the service runs.

What the service runs comes from real import data: the import graph of app/, model_store/ and
mnist_client/ (grimp, as lint-imports reads it, lazy imports included), and the distributions whose
modules are loaded once every module of those packages is imported in a fresh interpreter. Each
distribution either side needs must come with the base dependencies (TensorFlow, Keras and tf2onnx
only with the `train` extra, and only behind lazy imports); and every distribution the base
dependencies bring in, their extras' too, must be one the service loads or one that a loaded one
requires, so that a `[extra]` or a leftover dependency cannot put unused packages into the serving
image (as `uvicorn[standard]` did: its reloader, WebSockets and YAML).
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Iterable
from functools import cache

import grimp
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.live_server import environment_without_settings
from tests.support.paths import REPO_ROOT
from tests.support.project import PYPROJECT

SERVING_PACKAGES = ("app", "model_store", "mnist_client")
# Imported only inside the functions that train, explain by integrated gradients or serve a version
# without its ONNX export: the `train` extra (the default image) has them, the serving image not.
TRAIN_ONLY = {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx"}
# Used, but not imported by the service's own modules (so not in their import graph): each is an
# optional dependency of one the service imports, which it uses when installed.
USED_THROUGH = {
    "uvloop": "uvicorn's event loop (`loop='auto'` picks it)",
    "httptools": "uvicorn's HTTP parser (`http='auto'` picks it)",
    "orjson": "python-json-logger's formatter (app/operations/logs.py imports pythonjsonlogger.orjson)",
    "psycopg": "SQLAlchemy's PostgreSQL dialect for a postgresql+psycopg:// MNIST_DATABASE_URL",
    "psycopg-binary": "psycopg's compiled implementation, which psycopg loads when it is installed",
}
# Every module of the service's packages, imported with only the given distributions installed: the
# others are hidden as the serving image lacks them (an optional import, such as grpc's of
# grpc_tools or uvicorn's of watchfiles, then finds nothing, as there). Prints the distributions loaded.
IMPORT_WITH_ONLY = """
import importlib, importlib.abc, json, pkgutil, re, sys
from importlib.metadata import distributions, packages_distributions
from pathlib import Path
allowed, packages = set(json.loads(sys.argv[1])), sys.argv[2:]
owners = packages_distributions()
def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.partition(".")[0]
        if top in owners and top not in packages and not allowed & {canonical(d) for d in owners[top]}:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: not installed)", name=name)
        return None
sys.meta_path.insert(0, Hide())
for package in packages:
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(module.name)
files = {}
for distribution in distributions():
    for file in distribution.files or []:
        files[str(Path(distribution.locate_file(file)).resolve())] = distribution.metadata["Name"]
loaded = [getattr(module, "__file__", None) for module in list(sys.modules.values())]
print(json.dumps(sorted({files.get(str(Path(f).resolve()), "") for f in loaded if f} - {""})))
"""


def names(distributions: Iterable[str]) -> set[str]:
    return {canonicalize_name(name) for name in distributions}


def requirements_of(distribution: str, extras: Iterable[str] = ()) -> list[Requirement]:
    """What an installed distribution requires here, with these of its extras."""
    found = []
    for text in importlib.metadata.requires(distribution) or []:
        requirement = Requirement(text)
        environments = [{"extra": extra} for extra in ("", *extras)]
        if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
            found.append(requirement)
    return found


def closure(requirements: Iterable[Requirement]) -> set[str]:
    """Every distribution these requirements install here, transitively (markers for this machine)."""
    found: set[str] = set()
    pending = [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        pending += [
            r for r in requirements_of(name, requirement.extras) if canonicalize_name(r.name) not in found
        ]
        found.add(name)
    return found


def base_requirements() -> list[Requirement]:
    return [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]


def train_requirements() -> list[Requirement]:
    return [Requirement(text) for text in PYPROJECT["project"]["optional-dependencies"]["train"]]


@cache
def imported_by_the_code() -> set[str]:
    """Distributions of the external packages that the service's modules import, anywhere in them."""
    graph = grimp.build_graph(*SERVING_PACKAGES, include_external_packages=True, cache_dir=None)
    owners = importlib.metadata.packages_distributions()
    found = set()
    for module in graph.modules:
        top = module.split(".")[0]
        if top not in SERVING_PACKAGES and top not in sys.stdlib_module_names and top != "__future__":
            assert top in owners, f"no installed distribution provides {top}"
            found |= names(owners[top])
    return found


@cache
def loaded_at_import() -> set[str]:
    """Distributions loaded once every module of the service's packages is imported, in a fresh
    interpreter that sees only the base dependencies' distributions. Fails if any import needs another."""
    allowed = sorted(closure(base_requirements()) | {"mnist-serve"})
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_WITH_ONLY, json.dumps(allowed), *SERVING_PACKAGES],
        cwd=REPO_ROOT,
        env=environment_without_settings(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return names(json.loads(result.stdout.splitlines()[-1])) - {"mnist-serve"}


@pytest.mark.slow  # builds a virtual environment of the base dependencies
def test_every_module_of_the_service_imports_with_the_base_dependencies_alone() -> None:
    loaded = loaded_at_import()
    assert {"fastapi", "numpy", "grpcio", "opencv-python-headless"} <= loaded, "the import data is real"
    assert not loaded & TRAIN_ONLY


def test_everything_the_service_imports_is_a_base_dependency_or_trains() -> None:
    declared = closure(base_requirements())
    outside = imported_by_the_code() - declared
    assert outside <= TRAIN_ONLY, sorted(outside - TRAIN_ONLY)
    assert names(r.name for r in train_requirements()) & outside == outside, "TensorFlow comes with `train`"
    assert not names(r.name for r in base_requirements()) & TRAIN_ONLY


def test_the_base_dependencies_bring_in_nothing_the_service_does_not_use() -> None:
    used = imported_by_the_code() | set(USED_THROUGH)
    needed = closure(Requirement(name) for name in used - TRAIN_ONLY)
    unused = closure(base_requirements()) - needed
    assert unused == set(), f"installed by the base dependencies, used by nothing in the service: {unused}"
