"""Every route table in the README and the docs names routes the app has, with the status codes its
OpenAPI document gives them, whether they need a key, and leaves no route out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT
from tests.support.project import app_openapi

PAGES = ["README.md", "docs/api.md"]
# Served by FastAPI itself or by the page's static route, outside the OpenAPI document.
OUTSIDE_OPENAPI = {"/", "/docs", "/openapi.json"}
HTTP_METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH"}
KEY_CODES = ("401", "403", "429")


@dataclass(frozen=True)
class Row:
    page: str
    methods: frozenset[str]
    paths: tuple[str, ...]
    key: str
    codes: frozenset[int] | None  # None where the table has no status-code column

    def covers(self, method: str, path: str) -> bool:
        return method in self.methods and any(matches(documented, path) for documented in self.paths)


def shape(path: str) -> str:
    """A path with its parameters' names left out: `/test/{index}` and `/test/{i}` are one route."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def matches(documented: str, path: str) -> bool:
    if documented.endswith("/..."):
        return path.startswith(documented.removesuffix("..."))
    return shape(documented) == shape(path)


def expand(path: str) -> list[str]:
    """`/v2/models/{name}[/versions/{v}]/infer` -> without and with the optional part."""
    optional = re.search(r"\[([^\]]*)\]", path)
    if optional is None:
        return [path]
    before, after = path[: optional.start()], path[optional.end() :]
    return [*expand(before + after), *expand(before + optional.group(1) + after)]


def route_rows(page: str) -> list[Row]:
    rows, header = [], None
    for line in (REPO_ROOT / page).read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if cells[0].startswith("---") or header[:2] != ["method", "path"]:
            continue
        methods = frozenset(m.strip() for m in re.split(r"[,/]", cells[0]))
        if not methods <= HTTP_METHODS:
            continue  # gRPC
        status = next((i for i, name in enumerate(header) if "status" in name), None)
        codes = frozenset(int(c) for c in re.findall(r"\b\d{3}\b", cells[status])) if status else None
        paths = tuple(p for documented in re.findall(r"`([^`]+)`", cells[1]) for p in expand(documented))
        rows.append(Row(page, methods, paths, cells[header.index("key")], codes))
    return rows


def operations() -> dict[tuple[str, str], dict[str, object]]:
    """(method, path) -> operation, of the app as an operator runs it (keys and admin routes on)."""
    return {
        (method.upper(), path): operation
        for path, by_method in app_openapi(operator=True)["paths"].items()
        for method, operation in by_method.items()
    }


ROWS = [row for page in PAGES for row in route_rows(page)]


def test_each_page_has_a_route_table() -> None:
    assert {row.page for row in ROWS} == set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_every_route_of_the_app_is_in_the_pages_table(page: str) -> None:
    rows = [row for row in ROWS if row.page == page]
    missing = [f"{m} {p}" for m, p in operations() if not any(row.covers(m, p) for row in rows)]
    assert not missing, f"{page} leaves out {missing}"


@pytest.mark.parametrize(
    "row", ROWS, ids=[f"{r.page}:{'/'.join(sorted(r.methods))} {r.paths[0]}" for r in ROWS]
)
def test_every_documented_route_exists_with_its_status_codes_and_key(row: Row) -> None:
    documented = operations()
    covered = []
    for path in row.paths:
        if path in OUTSIDE_OPENAPI:
            continue
        found = [(m, p) for (m, p) in documented if m in row.methods and matches(path, p)]
        assert found, f"{row.page}: {'/'.join(sorted(row.methods))} {path} is not a route of the app"
        covered += found
    if not covered:
        return
    if row.codes is not None:
        codes = {int(c) for key in covered for c in documented[key]["responses"]}  # type: ignore[attr-defined]
        assert row.codes == codes, (
            f"{row.page}: {row.paths[0]} lists {sorted(row.codes)}, the app {sorted(codes)}"
        )
    needs_key = {bool(documented[key].get("security")) for key in covered}
    assert needs_key == {row.key != "no"}, f"{row.page}: {row.paths[0]}: key column {row.key!r}"


@pytest.mark.parametrize("page", PAGES)
def test_the_key_legend_names_the_codes_a_key_adds(page: str) -> None:
    text = (REPO_ROOT / page).read_text()
    start = re.search(r"\*?Key\*?:", text)
    assert start is not None, f"{page} has no key legend"
    legend = text[start.start() : start.start() + 400]
    assert all(code in legend for code in KEY_CODES), legend


def test_the_table_reader_sees_a_wrong_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A made-up route and a missing code are caught (so the tests above can fail)."""
    page = tmp_path / "page.md"
    page.write_text(
        "| method | path | key | status codes |\n| --- | --- | --- | --- |\n"
        "| GET | `/v2/models/{name}[/versions/{v}]/ready` | no | 200, 404 |\n"
        "| GET | `/explain` | yes | 200 |\n"
    )
    monkeypatch.setattr("tests.test_route_tables.REPO_ROOT", tmp_path)
    rows = route_rows("page.md")

    assert rows[0].paths == ("/v2/models/{name}/ready", "/v2/models/{name}/versions/{v}/ready")
    with pytest.raises(AssertionError, match="lists"):
        test_every_documented_route_exists_with_its_status_codes_and_key(rows[0])
    with pytest.raises(AssertionError, match="not a route of the app"):
        test_every_documented_route_exists_with_its_status_codes_and_key(rows[1])
