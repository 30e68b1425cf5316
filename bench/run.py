"""Benchmark the service against its ceiling and a naive baseline, side by side in one run.

    python -m bench.run --store model_store --data-dir ../shared/mnist

Starts three servers with the same uvicorn settings on 127.0.0.1 and drives each with wrk:
  empty  - FastAPI receiving the same upload and answering a constant (the ceiling)
  ours   - app.main:create_app
  naive  - keras `model.predict` per request (the baseline)
It reports req/s, p50, p99 and errors at each concurrency, batch-endpoint images/s against the
in-process forward pass, cold start to ready and RSS per worker, as a markdown table and ratios.
Absolute numbers depend on the machine and what else runs on it; the ratios are the result.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from model_store.mnist_data import load_split
from model_store.store import ModelStore

ROOT = Path(__file__).resolve().parents[1]
WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")
MAX_BATCH = 128  # the default MNIST_BATCH_MAX_SIZE: the most images one forward pass holds
SERVERS = {
    "empty": ["bench.empty_app:app"],
    "ours": ["app.main:create_app", "--factory"],
    "naive": ["bench.naive_app:app"],
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

    def rss_mib(self) -> list[float]:
        """Resident memory of each process serving requests (the workers, or the lone process)."""
        workers = [pid for pid in _children(self.process.pid) if "spawn_main" in _cmdline(pid)]
        pids = workers or [self.process.pid]
        return [round(_rss_kib(pid) / 1024, 1) for pid in pids]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    kind: str, workers: int, env: dict[str, str], log_dir: Path | None = None, timeout: float = 180
) -> Server:
    """Start one of SERVERS under uvicorn and wait for /readyz; its output goes to log_dir."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="bench-logs-"))
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", *SERVERS[kind], "--host", "127.0.0.1", "--port", str(port)]
    # Info level for uvicorn's "Application startup complete.", which each worker logs once ready.
    command += ["--workers", str(workers), "--log-level", "info", "--no-access-log"]
    started = time.perf_counter()
    log_path = log_dir / f"{kind}.log"
    log_path.write_bytes(b"")
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {process.returncode}")
        # Ready when every worker has finished its startup (model loaded and warmed), not the first.
        if log_path.read_text(errors="replace").count("Application startup complete.") >= workers:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return Server(process, url, time.perf_counter() - started)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{kind} server not ready after {timeout} s")


def wrk(url: str, connections: int, seconds: int, body: Path, mode: str, content_type: str = "") -> Load:
    env = os.environ | {"BENCH_BODY": str(body), "BENCH_MODE": mode, "BENCH_TYPE": content_type}
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


def in_process_images_per_second(
    store: Path, version: int | None, batch: np.ndarray, seconds: float = 5
) -> float:
    """The compute limit: the same compiled forward pass, called directly on a batch."""
    from app.serving.inference import ServingModel

    serving = ServingModel.compile(ModelStore(store).load(version))
    serving.forward(batch)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        serving.forward(batch)
        count += len(batch)
    return count / (time.perf_counter() - started)


def under_large_batches(url: str, digit_png: Path, large_npy: Path, seconds: int) -> tuple[Load, int]:
    """Single-image /predict at 8 connections while two clients keep posting 10,000-image batches:
    the latency a small request sees beside large ones (the batcher slices them)."""
    stop, answered = threading.Event(), []
    body = large_npy.read_bytes()

    def flood() -> None:
        with httpx.Client(timeout=300) as client:
            while not stop.is_set():
                response = client.post(
                    f"{url}/predict/batch", content=body, headers={"content-type": "application/x-npy"}
                )
                answered.append(response.status_code)

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        load = wrk(f"{url}/predict", 8, seconds, digit_png, "multipart")
    finally:
        stop.set()
        for thread in threads:
            thread.join(300)
    return load, sum(status == 200 for status in answered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", type=Path, default=Path(os.environ.get("MNIST_MODEL_STORE", ROOT / "models"))
    )
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    parser.add_argument("--version", type=int, help="model version to serve (default: newest)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--batch-images", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    facts: dict[str, object] = {}

    test = load_split(args.data_dir, "test")
    store = ModelStore(args.store)
    metadata = store.read_metadata(store.resolve(args.version))
    facts["model"] = f"{metadata.name} v{metadata.version} ({metadata.training.preset} preset)"
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    digit_png = work / "digit.png"
    Image.fromarray(test.images[128]).save(digit_png)
    batch_npy = work / "batch.npy"
    buffer = io.BytesIO()
    np.save(buffer, test.images[: args.batch_images])
    batch_npy.write_bytes(buffer.getvalue())
    large_npy = work / "large.npy"
    buffer = io.BytesIO()
    np.save(buffer, test.images)
    large_npy.write_bytes(buffer.getvalue())

    env = os.environ | {
        "MNIST_MODEL_STORE": str(args.store.resolve()),
        "MNIST_DATA_DIR": str(args.data_dir.resolve()),
        "MNIST_MAX_ARRAY_IMAGES": str(max(args.batch_images, 10_000)),
        "MNIST_MAX_UPLOAD_BYTES": str(64 * 1024 * 1024),
        "MNIST_MODEL_VERSION": str(args.version or ""),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(ROOT),
    }
    rows: dict[str, dict[int, Load]] = {}
    for kind in ("empty", "ours", "naive"):
        server = start_server(kind, args.workers, env, work)
        try:
            httpx.post(f"{server.url}/predict", files={"file": digit_png.read_bytes()}, timeout=30)
            rows[kind] = {
                c: wrk(f"{server.url}/predict", c, args.seconds, digit_png, "multipart")
                for c in args.connections
            }
            print(kind, {c: load.__dict__ for c, load in rows[kind].items()}, flush=True)
            if kind == "ours":
                facts["cold_start_seconds"] = round(server.cold_start_seconds, 2)
                facts["rss_mib_per_worker"] = server.rss_mib()
                batch_load = wrk(
                    f"{server.url}/predict/batch", 2, args.seconds, batch_npy, "raw", "application/x-npy"
                )
                facts["batch_images_per_second"] = batch_load.requests_per_second * args.batch_images
                facts["batch_errors"] = batch_load.errors
                facts["alone_c8"] = wrk(f"{server.url}/predict", 8, args.seconds, digit_png, "multipart")
                facts["beside_large"], facts["large_batches_done"] = under_large_batches(
                    server.url, digit_png, large_npy, args.seconds
                )
        finally:
            server.stop()
    # Measured after the servers stopped, so it has the machine to itself as they did.
    facts["in_process_images_per_second"] = in_process_images_per_second(
        args.store, args.version, test.images[: args.batch_images]
    )
    facts["max_batch_images_per_second"] = in_process_images_per_second(
        args.store, args.version, test.images[:MAX_BATCH]
    )

    report = render(rows, facts, args)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (args.out / f"{stamp}.md").write_text(report)
    (args.out / "latest.md").write_text(report)
    print(report)
    return 0


def render(rows: dict[str, dict[int, Load]], facts: dict[str, object], args: argparse.Namespace) -> str:
    lines = [
        f"Benchmark of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, model {facts['model']}: "
        f"{args.workers} uvicorn workers, wrk {args.seconds} s per cell, {os.cpu_count()} CPUs, "
        "one PNG of test digit 128 per request.",
        "",
        "| server | connections | req/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, by_connections in rows.items():
        for c, load in by_connections.items():
            lines.append(
                f"| {kind} | {c} | {load.requests_per_second:,.0f} | {load.p50_ms:.2f} | "
                f"{load.p99_ms:.2f} | {load.errors} |"
            )
    ours, empty, naive = rows["ours"], rows["empty"], rows["naive"]
    lines += ["", "| ratio | " + " | ".join(f"c={c}" for c in ours) + " |", "| --- |" + " ---: |" * len(ours)]
    lines.append(
        "| ours / empty | "
        + " | ".join(f"{ours[c].requests_per_second / empty[c].requests_per_second:.2f}x" for c in ours)
        + " |"
    )
    lines.append(
        "| ours / naive | "
        + " | ".join(f"{ours[c].requests_per_second / naive[c].requests_per_second:.0f}x" for c in ours)
        + " |"
    )
    lines.append(
        "| ours p99 / p50 | " + " | ".join(f"{ours[c].p99_ms / ours[c].p50_ms:.1f}" for c in ours) + " |"
    )
    batch, limit = float(facts["batch_images_per_second"]), float(facts["in_process_images_per_second"])  # type: ignore[arg-type]
    alone, beside = facts["alone_c8"], facts["beside_large"]
    assert isinstance(alone, Load) and isinstance(beside, Load)
    pass_ms = 1000 * MAX_BATCH / float(facts["max_batch_images_per_second"])  # type: ignore[arg-type]
    lines += [
        "",
        f"- batch endpoint ({args.batch_images} images per .npy request, 2 connections): "
        f"{batch:,.0f} images/s = {batch / limit:.2f}x the in-process forward pass ({limit:,.0f} images/s); "
        f"errors {facts['batch_errors']}",
        f"- cold start to ready: {facts['cold_start_seconds']} s",
        f"- a single image beside 10,000-image batches (c=8, two clients posting them without pause, "
        f"{facts['large_batches_done']} done): p50 {beside.p50_ms:.2f} ms, p99 {beside.p99_ms:.2f} ms, "
        f"{beside.errors} errors; alone: p50 {alone.p50_ms:.2f} ms, p99 {alone.p99_ms:.2f} ms; "
        f"one forward pass of {MAX_BATCH} images takes {pass_ms:.2f} ms in process, so the p99 beside "
        f"them is {beside.p99_ms / pass_ms:.1f} passes",
        f"- RSS per worker: {facts['rss_mib_per_worker']} MiB",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
