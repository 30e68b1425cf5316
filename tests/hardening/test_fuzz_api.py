"""Property-based fuzzing of the whole HTTP API: schemathesis reads /openapi.json from a real uvicorn
on 127.0.0.1 and sends schema-derived (and schema-violating) requests to every operation.

Checks: no 5xx, every response body matches the schema documented for its status, and every
content type is a documented one. Bounded: MNIST_FUZZ_EXAMPLES per operation (default 25), a
fixed seed (MNIST_FUZZ_SEED) so that CI sees the same cases each run; about 10 s of requests.
Nothing is excluded: the admin routes are fuzzed too, with the token.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.live_server import RunningServer, service_env, uvicorn_server

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "fuzzing-admin-token-0123456789"
EXAMPLES = int(os.environ.get("MNIST_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("MNIST_FUZZ_SEED", "20241125")
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"
# The versioned KServe routes only reach their logic for the served model and version; pinning
# them there lets the fuzzer exercise the body parsing (the unversioned routes still get random names).
CONFIG = """
[[operations]]
include-path-regex = "/versions/"
parameters = { "path.name" = "mnist", "path.version" = "1" }
"""


@pytest.fixture(scope="module")
def server(
    trained_store: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    # A copy: the fuzzer's admin requests pin, route and reload, and the session's store is shared.
    folder = tmp_path_factory.mktemp("fuzz")
    store = Path(shutil.copytree(trained_store, folder / "store"))
    env = service_env(store, mnist_dir, admin_token=ADMIN_TOKEN, reload_poll_seconds="0", log_json="false")
    log = folder / "server.log"
    with uvicorn_server(env, log) as running:
        yield running


def test_schemathesis_finds_no_server_error_or_schema_mismatch(server: RunningServer, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config), "run"]
    command += [f"{server.url}/openapi.json", "--checks", CHECKS, "--max-examples", str(EXAMPLES)]
    command += ["--seed", SEED, "--workers", "1", "--request-timeout", "60", "--no-color"]
    command += ["--header", f"Authorization: Bearer {ADMIN_TOKEN}"]
    schema = httpx.get(f"{server.url}/openapi.json").json()
    operations = sum(len(methods) for methods in schema["paths"].values())
    log_before = len(server.log())
    # Run in tmp_path: schemathesis keeps a cache folder in its working directory.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]

    assert f"Tested: {operations}" in output, (
        f"not all {operations} operations were fuzzed:\n{output[-3000:]}"
    )
    generated = re.search(r"(\d+) generated", output)
    assert generated and int(generated.group(1)) >= operations * EXAMPLES // 2, output[-3000:]
    log = server.log()[log_before:]
    assert "Traceback" not in log, log[-5000:]
    assert httpx.get(f"{server.url}/test/128").json()["prediction"] == 8


# Found by hand while fuzzing the KServe v2 body, whose OpenAPI entry has an example but no schema,
# so schemathesis cannot generate it.
def test_kserve_uint8_value_out_of_range_is_400(server: RunningServer) -> None:
    tensor = {"name": "images", "shape": [1, 784], "datatype": "UINT8", "data": [256] * 784}
    response = httpx.post(f"{server.url}/v2/models/mnist/infer", json={"inputs": [tensor]})
    assert response.status_code == 400, response.text


def test_kserve_non_ascii_digit_header_length_is_400(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.url}/v2/models/mnist/infer",
        content=b"{}",
        headers={b"Inference-Header-Content-Length": b"\xb2"},  # "²": isdigit() but not int()
    )
    assert response.status_code == 400, response.text
