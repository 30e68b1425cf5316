"""Postman works out of the box: the shipped collection, and the one Postman makes of /openapi.json.

Both run with newman (Postman's command-line runner, pinned in postman/package.json) against a live
uvicorn on a freshly trained store, whose only version is 1. The shipped collection's own tests
(`pm.test`) must all pass; every request of the converted OpenAPI document must answer 2xx, which it
can only do because every parameter and body of the document carries a working example.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.conftest import REPO_ROOT
from tests.support.live_server import RunningServer, uvicorn_server

pytestmark = pytest.mark.e2e

POSTMAN = REPO_ROOT / "postman"
COLLECTION = POSTMAN / "mnist-serve.postman_collection.json"
ENVIRONMENT = POSTMAN / "local.postman_environment.json"
DIGIT = POSTMAN / "seven.png"
ADMIN_TOKEN = "postman-admin-token-0123456789abcdef"
# Operator routes the shipped collection leaves out: each changes what the service answers (a pin,
# a canary or shadow, a promotion), which a collection run against a live service must not do.
LEFT_OUT = {
    ("DELETE", "/admin/pin"),
    ("PUT", "/admin/routing"),
    ("POST", "/admin/routing/promote"),
    ("DELETE", "/admin/routing"),
}


def tool(name: str) -> Path:
    return POSTMAN / "node_modules" / ".bin" / name


@pytest.fixture(scope="module")
def tools() -> None:
    """newman and openapi-to-postmanv2, installed from postman/package-lock.json when missing."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("node and npm are needed to run newman (apt-get install nodejs npm)")
    if not (tool("newman").exists() and tool("openapi2postmanv2").exists()):
        command = [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(POSTMAN)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:  # no registry to install from: the tools are missing, not wrong
            pytest.skip(
                f"npm ci could not install newman: {(result.stderr.strip() or 'failed').splitlines()[-1]}"
            )


@pytest.fixture(scope="module")
def server(
    trained_store: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("postman-server")
    store = Path(shutil.copytree(trained_store, folder / "store"))  # the admin requests reload it
    env = {
        "MNIST_MODEL_STORE": str(store),
        "MNIST_DATA_DIR": str(mnist_dir),
        "MNIST_ADMIN_TOKEN": ADMIN_TOKEN,
        "MNIST_RELOAD_POLL_SECONDS": "0",
    }
    with uvicorn_server(env, folder / "server.log") as running:
        yield running


def newman(collection: Path, report: Path, *options: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    """`newman run` with the shipped environment; the result and its JSON report's `run`."""
    command = [str(tool("newman")), "run", str(collection), "-e", str(ENVIRONMENT), *options]
    command += ["--working-dir", str(POSTMAN), "--timeout-request", "120000", "--disable-unicode"]
    command += ["--color", "off", "--reporters", "cli,json", "--reporter-json-export", str(report)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert report.exists(), result.stdout[-4000:] + result.stderr[-4000:]
    return result, json.loads(report.read_text())["run"]


def requests_of(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        if "item" in item:
            yield from requests_of(item["item"])
        else:
            yield item


def operations() -> set[tuple[str, str]]:
    """Every (method, path template) of the OpenAPI document, admin routes included."""
    document = create_app(Settings(admin_token=ADMIN_TOKEN)).openapi()
    return {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}


def route_of(method: str, path: str, templates: set[tuple[str, str]]) -> tuple[str, str] | None:
    """The operation a collection request calls: a literal path before a templated one."""
    for template_method, template in sorted(templates, key=lambda t: t[1].count("{")):
        pattern = "".join(
            "[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{\w+\})", template)
        )
        if template_method == method and re.fullmatch(pattern, path):
            return template_method, template
    return None


def test_the_collection_calls_every_route() -> None:
    collection = json.loads(COLLECTION.read_text())
    templates = operations() | {("GET", "/")}
    called = set()
    for item in requests_of(collection["item"]):
        request = item["request"]
        path = "/" + "/".join(request["url"]["path"])
        route = route_of(request["method"], path, templates)
        assert route is not None, f"{item['name']}: {request['method']} {path} is no route of the service"
        called.add(route)
        tests = next(e for e in item["event"] if e["listen"] == "test")["script"]["exec"]
        assert any("pm.test(" in line for line in tests), f"{item['name']} has no pm.test"
    assert templates - LEFT_OUT - called == set()


def test_the_shipped_collection_passes(tools: None, server: RunningServer, tmp_path: Path) -> None:
    result, run = newman(
        COLLECTION, tmp_path / "report.json", "--env-var", f"baseUrl={server.url}",
        "--env-var", f"adminToken={ADMIN_TOKEN}",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    stats = run["stats"]
    count = sum(1 for _ in requests_of(json.loads(COLLECTION.read_text())["item"]))
    assert stats["requests"] == {"total": count, "pending": 0, "failed": 0}, stats
    assert stats["assertions"]["total"] >= 2 * count and stats["assertions"]["failed"] == 0, stats
    assert run["failures"] == []
    assert httpx.get(f"{server.url}/test/128").json()["prediction"] == 8


def without_admin(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept = []
    for item in items:
        if "item" in item:
            item["item"] = without_admin(item["item"])
            kept += [item] if item["item"] else []
        elif item["request"]["url"]["path"][0] != "admin":
            kept.append(item)
    return kept


def converted(server: RunningServer, folder: Path) -> Path:
    """The live /openapi.json as Postman imports it (parameters from the examples), made runnable."""
    (folder / "openapi.json").write_bytes(httpx.get(f"{server.url}/openapi.json").content)
    command = [str(tool("openapi2postmanv2")), "-s", str(folder / "openapi.json")]
    command += ["-o", str(folder / "converted.json"), "-O", "parametersResolution=Example"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    collection = json.loads((folder / "converted.json").read_text())
    # The operator routes change what is served (and a pin or canary needs a second version): the
    # shipped collection calls the safe ones with the admin token.
    collection["item"] = without_admin(collection["item"])
    for item in requests_of(collection["item"]):
        body = item["request"].get("body") or {}
        for field in body.get("formdata", []):
            # A document can name a file but not carry one: the converter leaves a file field empty
            # (a list of files becomes text), where a Postman user picks the file. Pick it here.
            if field["key"] == "file":
                field.update(type="file", src=str(DIGIT))
                field.pop("value", None)
        item["event"] = [
            {"listen": "test", "script": {"exec": ['pm.test("2xx", () => pm.response.to.be.success);']}}
        ]
    (folder / "converted.json").write_text(json.dumps(collection))
    return folder / "converted.json"


def test_the_openapi_document_imported_into_postman_answers_2xx(
    tools: None, server: RunningServer, tmp_path: Path
) -> None:
    collection = converted(server, tmp_path)
    requests = list(requests_of(json.loads(collection.read_text())["item"]))
    assert len(requests) == len(operations()) - sum(path.startswith("/admin") for _, path in operations())
    result, run = newman(collection, tmp_path / "report.json", "--env-var", f"baseUrl={server.url}")
    answers = {
        f"{e['item']['name']}: {e.get('response', {}).get('code')}"
        for e in run["executions"]
        if not 200 <= e.get("response", {}).get("code", 0) < 300
    }
    assert result.returncode == 0 and not answers, "\n".join(answers) or result.stdout[-6000:]
    assert run["stats"]["requests"] == {"total": len(requests), "pending": 0, "failed": 0}
    assert run["stats"]["assertions"] == {"total": len(requests), "pending": 0, "failed": 0}
