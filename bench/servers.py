"""The servers the benchmarks drive, how to start one and wait until every worker is ready, and wrk.

Each server runs in a session of its own, so stopping it reaches every process it spawned (LitServe's
inference workers, BentoML's circus arbiter), not only the one the bench started.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.peers.model import READY_MARKER
from bench.processes import children, cmdline, free_port, rss_kib, stop

ROOT = Path(__file__).resolve().parents[1]
WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")
UVICORN_READY = "Application startup complete."  # uvicorn logs it once per worker

Command = Callable[[str, int, int], list[str]]  # (python, port, workers) -> argv


def _uvicorn(*target: str) -> Command:
    def command(python: str, port: int, workers: int) -> list[str]:
        # Info level for uvicorn's startup line, which each worker logs once ready.
        address = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        return [python, "-m", "uvicorn", *target, *address, "--log-level", "info", "--no-access-log"]

    return command


def _bentoml(python: str, port: int, workers: int) -> list[str]:
    # The worker count reaches @bentoml.service through BENCH_WORKERS.
    service = "bench.peers.bentoml_service:DigitService"
    return [python, "-m", "bentoml", "serve", service, "--host", "127.0.0.1", "--port", str(port)]


def _litserve(python: str, port: int, workers: int) -> list[str]:
    return [python, "-m", "bench.peers.litserve_server"]  # port and workers through the environment


@dataclass(frozen=True)
class ServerSpec:
    command: Command
    ready_marker: str  # a line each worker prints once it can answer
    ready_path: str = "/readyz"
    field: str = "file"  # the multipart field the upload goes in
    peer: bool = False  # a serving framework run from the peers' interpreter
    settings: tuple[tuple[str, str], ...] = ()  # environment variables of this server alone
    ours: bool = False  # app.main, so several workers share one Prometheus directory


SERVERS = {
    "empty": ServerSpec(_uvicorn("bench.empty_app:app"), UVICORN_READY),
    # At the precision MNIST_PRECISION=auto picks for the version (what a user gets), and pinned.
    "ours": ServerSpec(_uvicorn("app.cli:worker_app", "--factory"), UVICORN_READY, ours=True),
    **{
        f"ours-{precision}": ServerSpec(
            _uvicorn("app.cli:worker_app", "--factory"),
            UVICORN_READY,
            settings=(("MNIST_PRECISION", precision),),
            ours=True,
        )
        for precision in ("float32", "int8")
    },
    "naive": ServerSpec(_uvicorn("bench.naive_app:app"), UVICORN_READY),
    "bentoml": ServerSpec(_bentoml, READY_MARKER, field="images", peer=True),
    "litserve": ServerSpec(_litserve, READY_MARKER, ready_path="/health", peer=True),
}


@dataclass
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    cold_start_seconds: float
    spec: ServerSpec

    def rss_mib(self) -> list[float]:
        """Resident memory of each process serving requests (the workers, or the lone process)."""
        return [round(rss_kib(pid) / 1024, 1) for pid in self.worker_pids()]

    def worker_pids(self) -> list[int]:
        """The processes serving requests: uvicorn's workers, or the lone process."""
        workers = [pid for pid in children(self.process.pid) if "spawn_main" in cmdline(pid)]
        return workers or [self.process.pid]

    def stop(self) -> None:
        stop(self.process, group=True)


def start_server(
    kind: str,
    workers: int,
    env: dict[str, str],
    log_dir: Path | None = None,
    timeout: float = 180,
    python: str = sys.executable,
    root: Path = ROOT,
) -> Server:
    """Start one of SERVERS from the checkout `root` and wait until every worker is ready; its
    output goes to log_dir."""
    spec = SERVERS[kind]
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="bench-logs-"))
    port = free_port()
    # MNIST_WORKERS as `mnist-serve --workers` sets it: the service shares the cores among them.
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"} | env | dict(spec.settings)
    env |= {"BENCH_PORT": str(port), "BENCH_WORKERS": str(workers), "MNIST_WORKERS": str(workers)}
    if spec.ours and workers > 1:
        # As `mnist-serve --workers N` runs it: /metrics adds up every worker's numbers.
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")
    started = time.perf_counter()
    log_path = log_dir / f"{kind}-{workers}.log"
    log_path.write_bytes(b"")
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            spec.command(python, port, workers),
            cwd=root,
            env=env | {"PYTHONPATH": str(root)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, f"http://127.0.0.1:{port}", 0.0, spec)
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(f"{kind} server exited with {process.returncode}; see {log_path}")
        # Ready when every worker has finished its startup (model loaded and warmed), not the first.
        if log_path.read_text(errors="replace").count(spec.ready_marker) >= workers:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}{spec.ready_path}", timeout=1).status_code == 200:
                    server.cold_start_seconds = time.perf_counter() - started
                    return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{kind} server not ready after {timeout} s; see {log_path}")


def wrk(
    url: str,
    connections: int,
    seconds: int,
    body: Path,
    mode: str,
    content_type: str = "",
    field: str = "file",
    header: str = "",
) -> Load:
    env = os.environ | {
        "BENCH_BODY": str(body),
        "BENCH_MODE": mode,
        "BENCH_TYPE": content_type,
        "BENCH_FIELD": field,
        "BENCH_HEADER": header,
    }
    threads = min(connections, 2)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    command += ["-s", str(WRK_SCRIPT), url]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("BENCH_JSON"))
    result = json.loads(line.removeprefix("BENCH_JSON "))
    return Load(
        requests_per_second=result["requests"] / result["seconds"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        errors=result["errors"],
    )
