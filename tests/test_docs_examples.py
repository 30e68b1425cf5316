"""The examples in the README and the docs run as written, against a real service.

Every shell block made only of `curl` calls (and the variables they use) runs in bash against a live
uvicorn, with `localhost:8000` pointed at it; curl fails on any 4xx or 5xx. Every Python block that
talks to the service runs too. The sample answers shown have the keys the service really sends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from model_store.mnist_data import load_split
from tests.app.conftest import publish_copy
from tests.conftest import REPO_ROOT
from tests.support.live_server import RunningServer, service_env, uvicorn_server
from tests.support.paths import SAMPLE_DIGIT

pytestmark = pytest.mark.e2e

DOCUMENTED = "localhost:8000"
ADMIN_TOKEN = "docs-examples-admin-token-0123456789"
PAGES = ["README.md", "docs/index.md", "docs/getting-started.md", "docs/api.md", "docs/client.md"]
PAGES += ["docs/operations.md", "docs/trust.md"]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
CALL_LINE = re.compile(r"^(curl |AUTH=)")


def blocks(language: set[str]) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for kind, body in FENCE.findall((REPO_ROOT / page).read_text()):
            if kind in language:
                found.append((page, body))
    return found


def calls_only(body: str) -> bool:
    lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return bool(lines) and all(CALL_LINE.match(line) for line in lines)


SHELL = [(page, body) for page, body in blocks({"sh", "bash"}) if calls_only(body)]
PYTHON = [(page, body) for page, body in blocks({"python"}) if DOCUMENTED in body or "127.0.0.1:8000" in body]


@pytest.fixture(scope="module")
def docs_server(
    trained_store: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Three versions (the examples pin, canary and shadow the older ones), admin routes and the
    prediction log on."""
    folder = tmp_path_factory.mktemp("docs-server")
    store = Path(shutil.copytree(trained_store, folder / "store"))
    assert [publish_copy(store), publish_copy(store)] == [2, 3]
    env = service_env(
        store,
        mnist_dir,
        admin_token=ADMIN_TOKEN,
        loaded_versions="1,2,3",
        reload_poll_seconds="0",
        prediction_log="on",  # as served by default: the feedback examples need it
        database_url=f"sqlite:///{folder / 'log.db'}",
    )
    with uvicorn_server(env, folder / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def example_files(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """The files the examples send: real test digits as the docs name them."""
    test_split = load_split(mnist_dir, "test")
    folder = tmp_path_factory.mktemp("docs-files")
    for name, index in (("digit.png", 0), ("a.png", 1), ("b.png", 2)):
        Image.fromarray(test_split.images[index]).save(folder / name)
    (folder / "samples").mkdir()
    shutil.copyfile(SAMPLE_DIGIT, folder / "samples" / "digit.png")
    np.save(folder / "digits.npy", test_split.images[:3])
    tensor = {
        "name": "images",
        "shape": [1, 784],
        "datatype": "UINT8",
        "data": test_split.images[0].ravel().tolist(),
    }
    (folder / "v2.json").write_text(json.dumps({"inputs": [tensor]}))
    return folder


def test_the_docs_hold_examples_to_run() -> None:
    assert len(SHELL) >= 8 and len(PYTHON) >= 3, (len(SHELL), len(PYTHON))


@pytest.mark.parametrize(("page", "body"), SHELL, ids=[f"{page}-{i}" for i, (page, _) in enumerate(SHELL)])
def test_every_curl_example_answers_2xx(
    page: str, body: str, docs_server: RunningServer, example_files: Path
) -> None:
    script = 'set -euo pipefail\ncurl() { command curl --silent --show-error --fail-with-body "$@"; }\n'
    script += body.replace(DOCUMENTED, docs_server.url.removeprefix("http://"))
    env = os.environ | {"MNIST_ADMIN_TOKEN": ADMIN_TOKEN}
    result = subprocess.run(
        ["bash", "-c", script], cwd=example_files, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, f"{page}:\n{body}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    # The admin examples change the routing; each starts from the newest version, unpinned.
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    httpx.delete(f"{docs_server.url}/admin/routing", headers=auth)
    httpx.delete(f"{docs_server.url}/admin/pin", headers=auth)


@pytest.mark.parametrize(("page", "body"), PYTHON, ids=[f"{page}-{i}" for i, (page, _) in enumerate(PYTHON)])
def test_every_python_example_runs(
    page: str, body: str, docs_server: RunningServer, example_files: Path
) -> None:
    address = docs_server.url.removeprefix("http://")
    code = body.replace("127.0.0.1:8000", address).replace(DOCUMENTED, address)
    result = subprocess.run([sys.executable, "-c", code], cwd=example_files, capture_output=True, text=True)
    assert result.returncode == 0, f"{page}:\n{body}\n{result.stderr[-3000:]}"


def sample_answer(page: str, after: str) -> dict[str, object]:
    text = (REPO_ROOT / page).read_text()
    start = text.index("{", text.index(after))
    return dict(json.JSONDecoder().raw_decode(text[start:])[0])


def test_the_sample_answers_have_the_services_keys(docs_server: RunningServer, example_files: Path) -> None:
    sample = httpx.get(f"{docs_server.url}/test/128").json()
    assert set(sample_answer("README.md", "$ curl localhost:8000/test/128")) == set(sample)
    assert sample["prediction"] == sample["label"] == 8
    with (example_files / "digit.png").open("rb") as image:
        answer = httpx.post(f"{docs_server.url}/predict", files={"file": image}).json()
    assert set(sample_answer("docs/api.md", "```json")) == set(answer)
