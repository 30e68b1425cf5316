"""The import structure: the contracts in pyproject.toml hold, and no module imports itself back.

A cycle that works only because one edge is deferred into a function still ties the modules
together; the graph counts lazy imports too, so such a cycle fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "training", "model_store", "bench", "mnist_client")


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def visit(module: str) -> None:
        nonlocal counter
        index[module] = low[module] = counter
        counter += 1
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    sys.path.insert(0, str(ROOT))
    try:
        return grimp.build_graph(*PACKAGES, cache_dir=None)
    finally:
        sys.path.remove(str(ROOT))


def test_no_import_cycle(graph: grimp.ImportGraph) -> None:
    assert import_cycles(graph) == []


def test_the_cycle_finder_sees_a_cycle() -> None:
    cyclic = grimp.ImportGraph()
    cyclic.add_import(importer="pkg.a", imported="pkg.b")
    cyclic.add_import(importer="pkg.b", imported="pkg.a")
    cyclic.add_module("pkg.c")
    assert import_cycles(cyclic) == [["pkg.a", "pkg.b"]]


def test_the_package_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is in the test extra: bash scripts/setup.sh installs it"
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


# The contract package is small and boring: what runs a model, answers HTTP or reads photographs
# belongs to the service (or training), so `import model_store` loads none of it. The upload
# normalisation is the one module that reads photographs: the service, training's robustness
# uploads and the gRPC client all run it, so all three answer the same digit.
SERVING_LIBRARIES = ("onnxruntime", "fastapi", "starlette", "cv2")
SHARED_PHOTO_READER = {"model_store.normalisation"}


@pytest.fixture(scope="module")
def graph_with_libraries() -> grimp.ImportGraph:
    sys.path.insert(0, str(ROOT))
    try:
        return grimp.build_graph(
            "model_store", "mnist_client", include_external_packages=True, cache_dir=None
        )
    finally:
        sys.path.remove(str(ROOT))


def test_the_contract_imports_no_serving_library(graph_with_libraries: grimp.ImportGraph) -> None:
    graph = graph_with_libraries
    modules = graph.find_descendants("model_store") - SHARED_PHOTO_READER
    assert "model_store.store" in modules
    offending = sorted(
        (module, library)
        for module in modules
        for library in graph.find_modules_directly_imported_by(module) & set(SERVING_LIBRARIES)
    )
    assert offending == []


def test_the_contract_rule_is_one_of_the_linted_contracts() -> None:
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    forbidden = {
        module
        for contract in contracts
        if contract["type"] == "forbidden" and contract["source_modules"] == ["model_store"]
        for module in contract["forbidden_modules"]
    }
    assert set(SERVING_LIBRARIES) <= forbidden


# The architecture page (docs/architecture.md) draws the packages and a request's path as Mermaid
# flowcharts; these tests hold the drawing to the code, so the page cannot drift from it.
ARCHITECTURE = ROOT / "docs" / "architecture.md"
MERMAID = re.compile(r"^```mermaid\n(.*?)^```", re.MULTILINE | re.DOTALL)
BOX = re.compile(r'(\w+)\["([^"]+)"\]')
ARROW = re.compile(r"(\w+)(?:\[\"[^\"]*\"\])? *-->(?:\|[^|]*\|)? *(\w+)")
NAMED_MODULE = re.compile(r"`((?:app|training|model_store|mnist_client|bench|scripts)/[\w/]+\.py)`")


def diagrams() -> list[str]:
    return MERMAID.findall(ARCHITECTURE.read_text())


def boxes(diagram: str) -> dict[str, list[str]]:
    """Each box's id and the files or folders its label names ("app/api/", "app/main.py")."""
    return {box: [part.strip() for part in label.split(",")] for box, label in BOX.findall(diagram)}


def arrows(diagram: str) -> set[tuple[str, str]]:
    return {(source, target) for source, target in ARROW.findall(diagram)}


def dotted(path: str) -> str:
    """`app/api/` -> app.api, `app/main.py` -> app.main, `app/__init__.py` -> app."""
    return path.removesuffix("/").removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def box_of(module: str, named: dict[str, list[str]]) -> str | None:
    """The box holding `module`: one that names its file, else the one naming its nearest folder."""
    best: tuple[int, str] | None = None
    for box, paths in named.items():
        for path in paths:
            name = dotted(path)
            if path.endswith(".py") and module == name:
                return box
            inside = path.endswith("/") and (module == name or module.startswith(name + "."))
            if inside and (best is None or len(name) > best[0]):
                best = (len(name), box)
    return best[1] if best else None


def test_every_module_the_architecture_page_names_exists() -> None:
    named = set(NAMED_MODULE.findall(ARCHITECTURE.read_text()))
    for diagram in diagrams():
        named |= {path for paths in boxes(diagram).values() for path in paths}
    assert named, "the page names no module"
    assert sorted(path for path in named if not (ROOT / path).exists()) == []


def test_the_package_diagram_draws_every_import_between_boxes(graph: grimp.ImportGraph) -> None:
    packages = diagrams()[0]
    named = boxes(packages)
    modules = {
        module for module in graph.modules if module.split(".")[0] in ("app", "training", "model_store")
    }
    unplaced = sorted(module for module in modules if box_of(module, named) is None)
    assert unplaced == [], "modules in no box of the package diagram"
    real = {
        (box_of(importer, named), box_of(imported, named))
        for importer in modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported in modules
    }
    real = {(source, target) for source, target in real if source != target}
    drawn = arrows(packages)
    assert sorted(drawn - real) == [], "arrows drawn that no import makes"
    assert sorted(real - drawn) == [], "imports between packages that the diagram does not draw"


def test_each_step_of_a_requests_path_imports_the_next(graph: grimp.ImportGraph) -> None:
    path = diagrams()[1]
    named = boxes(path)
    for source, target in sorted(arrows(path)):
        (importer,), (imported,) = named[source], named[target]
        assert graph.direct_import_exists(importer=dotted(importer), imported=dotted(imported)), (
            f"{importer} does not import {imported}"
        )
