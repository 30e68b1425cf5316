"""Three real replicas behind a real nginx running the project's proxy rules, under wrk load.

Each replica is `mnist-serve` (one worker) on 127.0.0.1 serving one shared model store. nginx runs
deploy/nginx.conf with its upstream pointed at the three ports (no Docker DNS here) and includes
deploy/nginx-proxy.conf unchanged. wrk POSTs a real MNIST digit to /predict over 64 connections for
a bounded time while a replica is killed, stopped, or a new version is published. Each test waits on
conditions it observes (the nginx access log, the replicas' answers), never on a fixed sleep.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from model_store.metadata import ModelMetadata
from model_store.mnist_data import load_split
from model_store.store import ModelStore
from tests.support.live_server import RunningServer, free_port, service_env, spawn, wait_ready
from tests.support.nginx import (
    for_nginx_version,
    installed_nginx_version,
    nginx_grpc_listen_port,
    nginx_listen_port,
    nginx_text,
)
from tests.support.paths import REPO_ROOT

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(), reason="no nginx"
    ),
    pytest.mark.skipif(shutil.which("wrk") is None, reason="no wrk (scripts/test.sh installs it)"),
]

REPLICAS = 3
CONNECTIONS = 64
LOAD_SECONDS = 12
DRAIN_SECONDS = 10  # MNIST_GRACEFUL_SHUTDOWN_SECONDS of the replicas
POLL_SECONDS = 1.0  # MNIST_RELOAD_POLL_SECONDS of the replicas
# docs/deployment.md: a new version is served by every replica within the poll interval plus the
# time one replica takes to load, validate and warm up a version (well under this on any machine).
LOAD_BOUND_SECONDS = 30.0
WRK_SCRIPT = REPO_ROOT / "bench" / "wrk_post.lua"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
LOG_LINE = re.compile(
    r'"(?P<request>[^"]*)" (?P<status>\d+) \d+ upstream=(?P<upstream>.*?) upstream_status=(?P<statuses>.*?) '
    r"request_time=.* request_id=(?P<request_id>\S*) model_version=(?P<version>\S*)$"
)


@dataclass
class Replica:
    server: RunningServer
    port: int
    grpc_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class LogLine:
    request: str
    status: int
    upstreams: list[str]
    request_id: str
    version: str


@dataclass
class Proxy:
    url: str
    access_log: Path
    grpc_address: str

    def lines(self) -> list[LogLine]:
        out = []
        text = self.access_log.read_text()
        # nginx may be half way through writing the last line: only whole lines are read.
        for raw in text[: text.rfind("\n") + 1].splitlines():
            match = LOG_LINE.search(raw)
            assert match, f"unexpected access log line: {raw}"
            upstreams = [u.strip() for u in match["upstream"].split(",")]
            out.append(
                LogLine(
                    match["request"], int(match["status"]), upstreams, match["request_id"], match["version"]
                )
            )
        return out


@dataclass
class WrkResult:
    requests: int
    errors: int  # connect + read + write + timeout + non-2xx/3xx, as bench/wrk_post.lua counts them
    non_2xx: int
    output: str


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `condition()` holds; returns the seconds it took. Fails after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"not within {timeout} s: {what}")


@pytest.fixture(scope="module")
def store(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shared") / "store"
    shutil.copytree(trained_store, path)
    return path


def start_replica(store: Path, mnist_dir: Path, log_path: Path) -> Replica:
    port, grpc_port = free_port(), free_port()
    env = os.environ | service_env(
        store,
        mnist_dir,
        host="127.0.0.1",
        port=str(port),
        grpc_port=str(grpc_port),
        workers="1",
        reload_poll_seconds=str(POLL_SECONDS),
        graceful_shutdown_seconds=str(DRAIN_SECONDS),
        log_json="false",
    )
    return Replica(spawn([sys.executable, "-m", "app.cli"], port, log_path, env=env), port, grpc_port)


@pytest.fixture(scope="module")
def pool(store: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    """Three `mnist-serve` processes (the image's CMD) on one store, shared by the tests."""
    logs = tmp_path_factory.mktemp("replicas")
    started = [start_replica(store, mnist_dir, logs / f"replica-{i}.log") for i in range(REPLICAS)]
    try:
        yield started
    finally:
        for replica in started:
            if replica.server.process.poll() is None:
                replica.server.process.send_signal(signal.SIGTERM)
        for replica in started:
            try:
                replica.server.process.wait(DRAIN_SECONDS + 20)
            except subprocess.TimeoutExpired:
                replica.server.process.kill()
                replica.server.process.wait()


@pytest.fixture
def replicas(pool: list[Replica], store: Path, mnist_dir: Path, tmp_path: Path) -> list[Replica]:
    """The pool, with any replica that an earlier test stopped replaced by a new one; all ready."""
    for index, replica in enumerate(pool):
        if replica.server.process.poll() is not None:
            pool[index] = start_replica(store, mnist_dir, tmp_path / f"replica-{index}.log")
    for replica in pool:
        wait_ready(replica.server)
    return list(pool)


def render_nginx_conf(
    tmp_path: Path,
    listen_port: int,
    upstream_ports: list[int],
    grpc_listen_port: int,
    grpc_upstream_ports: list[int],
) -> Path:
    """deploy/nginx.conf for three local replicas: the same upstream options, the same proxy rules."""
    text = nginx_text(REPO_ROOT / "deploy" / "nginx-proxy.conf")
    text = re.sub(r"^user .*;$", "", text, flags=re.M)  # runs as whoever starts it
    text = re.sub(r"^\s*resolver(_timeout)? .*;$", "", text, flags=re.M)  # no Docker DNS
    text = text.replace("/var/run/nginx.pid", str(tmp_path / "nginx.pid"))
    text = text.replace("error_log /dev/stderr", f"error_log {tmp_path / 'error.log'}")
    text = text.replace("access_log /dev/stdout", f"access_log {tmp_path / 'access.log'}")
    # Each upstream's one `server api:PORT` becomes the replicas' ports for that protocol.
    for upstream, ports in (("api", upstream_ports), ("api_grpc", grpc_upstream_ports)):
        [server] = re.findall(rf"upstream {upstream} {{[^}}]*?^(\s*server api:\d+ .*;)$", text, flags=re.M)
        options = [o for o in server.strip().rstrip(";").split()[2:] if o != "resolve"]
        servers = "\n".join(f"        server 127.0.0.1:{port} {' '.join(options)};" for port in ports)
        text = text.replace(server, servers)
    for port, local in ((nginx_listen_port(), listen_port), (nginx_grpc_listen_port(), grpc_listen_port)):
        assert text.count(f"listen {port};") == 1
        text = text.replace(f"listen {port};", f"listen 127.0.0.1:{local};")
    text = for_nginx_version(text, installed_nginx_version(NGINX))
    temp_paths = "".join(
        f"{kind}_temp_path {tmp_path / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    text = text.replace("http {", "http {" + temp_paths + "uwsgi_temp_path /tmp; scgi_temp_path /tmp;", 1)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    return conf


@pytest.fixture
def proxy(replicas: list[Replica], tmp_path: Path) -> Iterator[Proxy]:
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    port, grpc_port = free_port(), free_port()
    conf = render_nginx_conf(
        nginx_dir, port, [r.port for r in replicas], grpc_port, [r.grpc_port for r in replicas]
    )
    command = [NGINX, "-p", str(nginx_dir), "-c", str(conf), "-e", str(nginx_dir / "error.log")]
    process = subprocess.Popen([*command, "-g", "daemon off;"], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            return httpx.get(f"{url}/nginx-health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 30, "nginx answers /nginx-health")
        yield Proxy(url, nginx_dir / "access.log", f"127.0.0.1:{grpc_port}")
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful stop
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def digit_png(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    test = load_split(mnist_dir, "test")
    out = io.BytesIO()
    Image.fromarray(test.images[0]).save(out, format="PNG")
    path = tmp_path_factory.mktemp("wrk") / "digit.png"
    path.write_bytes(out.getvalue())
    return path


@pytest.fixture
def load(proxy: Proxy, digit_png: Path) -> Iterator[Callable[[], WrkResult]]:
    """Start wrk against nginx now; the callable waits for it to finish and returns its counts."""
    env = os.environ | {"BENCH_BODY": str(digit_png)}
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{LOAD_SECONDS}s", "--timeout", "10s"]
    command += ["-s", str(WRK_SCRIPT), f"{proxy.url}/predict"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish() -> WrkResult:
        output, _ = process.communicate(timeout=LOAD_SECONDS + 60)
        assert process.returncode == 0, output
        [line] = [ln for ln in output.splitlines() if ln.startswith("BENCH_JSON ")]
        summary = json.loads(line.removeprefix("BENCH_JSON "))
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        return WrkResult(summary["requests"], summary["errors"], int(non_2xx[1]) if non_2xx else 0, output)

    try:
        yield finish
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def served_by(proxy: Proxy, replica: Replica) -> int:
    return sum(1 for line in proxy.lines() if line.upstreams[-1] == replica.address and line.status == 200)


def assert_no_failed_request(result: WrkResult, proxy: Proxy, cut_responses: int = 0) -> None:
    """No error and no non-2xx answer; `cut_responses` read errors are allowed where a replica was
    SIGKILLed: a response whose first bytes had left it cannot be retried by any proxy."""
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", result.output
    )
    reads = int(socket_errors[2]) if socket_errors else 0
    assert result.non_2xx == 0 and result.errors - min(reads, cut_responses) == 0, result.output
    assert result.requests > 200, result.output
    statuses = [line.status for line in proxy.lines() if line.request.startswith("POST /predict")]
    # 499: wrk closed its connections at the end of the run with requests still in flight.
    assert set(statuses) <= {200, 499} and statuses.count(499) <= CONNECTIONS, sorted(set(statuses))


def test_sigkill_of_a_replica_loses_no_request(
    replicas: list[Replica], proxy: Proxy, load: Callable[[], WrkResult]
) -> None:
    victim = replicas[0]
    wait_for(lambda: served_by(proxy, victim) >= 50, 30, "the victim serves part of the load")
    # Requests in flight at the kill may be retried and logged before the kill is noticed here,
    # so the retries are looked for from the line count taken before the signal.
    before_kill = len(proxy.lines())
    victim.server.process.send_signal(signal.SIGKILL)
    victim.server.process.wait(10)
    killed_at = len(proxy.lines())
    others = replicas[1:]
    wait_for(lambda: len(proxy.lines()) >= killed_at + 200, LOAD_SECONDS, "the load goes on after the kill")
    result = load()
    # Seen once in 14,609 requests in a CI rehearsal, never in four runs before: one response cut
    # mid-write by the kill. Everything that had not started to answer was retried elsewhere.
    assert_no_failed_request(result, proxy, cut_responses=1)
    after = proxy.lines()[killed_at:]
    # Requests that met the dead replica were answered by another one: the retry did happen.
    retried = [
        line
        for line in proxy.lines()[before_kill:]
        if len(line.upstreams) > 1 and line.upstreams[0] == victim.address
    ]
    assert retried, "no request was sent to the killed replica after the kill; the test proved nothing"
    assert all(line.upstreams[-1] in {r.address for r in others} for line in after[CONNECTIONS:])
    print(f"\nSIGKILL: {result.requests} requests, 0 failed, {len(retried)} retried on another replica")


def test_sigterm_of_a_replica_drains_and_loses_no_request(
    replicas: list[Replica], proxy: Proxy, load: Callable[[], WrkResult]
) -> None:
    victim = replicas[1]
    wait_for(lambda: served_by(proxy, victim) >= 50, 30, "the victim serves part of the load")
    victim.server.process.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    victim.server.process.wait(DRAIN_SECONDS + 15)
    exit_seconds = time.monotonic() - stopping
    stopped_at = len(proxy.lines())
    wait_for(lambda: len(proxy.lines()) >= stopped_at + 200, LOAD_SECONDS, "the load goes on after the stop")
    result = load()
    assert_no_failed_request(result, proxy)
    log = victim.server.log()
    assert victim.server.process.returncode in (0, -signal.SIGTERM), log[-3000:]
    assert "Application shutdown complete" in log, log[-3000:]
    assert exit_seconds <= DRAIN_SECONDS + 5, f"took {exit_seconds:.1f} s to exit"
    print(f"\nSIGTERM: exited in {exit_seconds:.1f} s; {result.requests} requests, 0 failed")


def publish_copy(store: Path, of_version: int = 1) -> int:
    """Publish the files of `of_version` again as a new version, as mnist-train publishes one."""
    model_store = ModelStore(store, "mnist")
    source = model_store.version_path(of_version)

    def write(folder: Path, version: int) -> ModelMetadata:
        shutil.copytree(source, folder, dirs_exist_ok=True)
        return model_store.read_metadata(of_version)

    return model_store.publish(write)


def served_version(replica: Replica) -> int:
    return int(httpx.get(f"{replica.server.url}/model", timeout=5).json()["metadata"]["version"])


def test_new_version_reaches_every_replica_and_every_response_names_it(
    replicas: list[Replica], proxy: Proxy, load: Callable[[], WrkResult], store: Path
) -> None:
    old = max(served_version(replica) for replica in replicas)
    wait_for(lambda: len(proxy.lines()) >= 200, 30, "the load is running")
    before = len(proxy.lines())
    new = publish_copy(store, old)
    assert new == old + 1
    published = time.monotonic()
    switch_seconds = []
    for replica in replicas:
        wait_for(lambda r=replica: served_version(r) == new, POLL_SECONDS + LOAD_BOUND_SECONDS, "switch")  # type: ignore[misc]
        switch_seconds.append(time.monotonic() - published)
    switched = len(proxy.lines())
    result = load()
    assert_no_failed_request(result, proxy)
    # Every answered request (not those wrk abandoned at the end of the run: 499, no answer).
    lines = [
        line for line in proxy.lines() if line.request.startswith("POST /predict") and line.status == 200
    ]
    assert {line.version for line in lines} <= {str(old), str(new)}, "every response names its version"
    assert {line.version for line in lines[:before]} == {str(old)}
    # At most one request per connection was in flight when the last replica switched.
    after = lines[switched + CONNECTIONS :]
    assert after and {line.version for line in after} == {str(new)}
    assert {line.upstreams[-1] for line in after} == {r.address for r in replicas}
    print(f"\nnew version served by all {REPLICAS} replicas {max(switch_seconds):.1f} s after publishing")


def test_request_ids_pass_through_nginx(replicas: list[Replica], proxy: Proxy) -> None:
    kept = httpx.get(f"{proxy.url}/healthz", headers={"X-Request-ID": "client-id-42"}, timeout=10)
    assert kept.status_code == 200 and kept.headers["x-request-id"] == "client-id-42"
    unsafe = httpx.get(f"{proxy.url}/healthz", headers={"X-Request-ID": "no spaces allowed"}, timeout=10)
    assert unsafe.headers["x-request-id"] not in ("", "no spaces allowed")
    generated = httpx.get(f"{proxy.url}/healthz", timeout=10).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated), "nginx's $request_id"
    # nginx writes its access log line after the response has gone out: wait for it, do not race it.
    wait_for(
        lambda: {"client-id-42", generated} <= {line.request_id for line in proxy.lines()},
        LOAD_BOUND_SECONDS,
        "both request ids in nginx's access log",
    )


def test_grpc_calls_through_nginx_reach_every_replica(
    replicas: list[Replica], proxy: Proxy, mnist_dir: Path
) -> None:
    """docker-compose.yml's `lb` publishes gRPC too: each call is balanced, not each connection."""
    import tritonclient.grpc as triton

    test = load_split(mnist_dir, "test")
    client = triton.InferenceServerClient(proxy.grpc_address)
    try:
        assert client.is_server_ready()
        for index in range(30):
            images = triton.InferInput("images", [1, 784], "UINT8")
            images.set_data_from_numpy(test.images[index].reshape(1, 784))
            result = client.infer("mnist", [images])
            assert int(result.as_numpy("digit")[0]) == int(test.labels[index])
    finally:
        client.close()
    grpc_ports = {f"127.0.0.1:{replica.grpc_port}" for replica in replicas}
    calls = [line for line in proxy.lines() if "/inference.GRPCInferenceService/ModelInfer" in line.request]
    assert len(calls) == 30 and {line.status for line in calls} == {200}
    assert {line.upstreams[-1] for line in calls} == grpc_ports, "one connection, every replica answered"
