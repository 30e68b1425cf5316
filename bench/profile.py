"""Where the microseconds of one request go: one uvicorn worker under wrk, sampled by py-spy.

    python -m bench.profile --store models --data-dir data/mnist

Starts the service and the empty endpoint (bench/empty_app.py) with one worker each, drives each with
wrk at 64 connections posting test digit 128 as a multipart PNG, and meanwhile
  - reads the worker's CPU time per request from /proc (every thread: the event loop, the forward
    pass, the log writer, TensorFlow's own threads),
  - samples it with `py-spy record --gil --nonblocking`: only the thread holding the GIL, so a thread
    waiting on a queue or a lock is not counted as busy (without --gil, py-spy counts the access-log
    thread's idle wait in SimpleQueue.get as work),
  - records a flame graph (SVG) in a second window of the same length.
It prints a markdown table, CPU microseconds per request by where the GIL-holding samples were
(attributed to the innermost frame of a known package), and what ran outside the GIL.
Needs wrk and py-spy (`pip install -e '.[bench]'`). Absolute numbers depend on the machine; the
split between rows and the comparison with the empty endpoint are the result.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.asgi import digit_png
from bench.servers import ROOT, Load, service_env, start_server, wrk

# (row, substrings of a frame's file) in the order they are tried, innermost frame first.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("access log (record on the loop, JSON on its thread)", ("logging/", "pythonjsonlogger")),
    (
        "multipart parsing (python-multipart, our callbacks)",
        ("multipart/", "inputs/multipart", "formparsers", "tempfile"),
    ),
    ("TensorFlow call path", ("tensorflow/", "keras/")),
    ("LiteRT interpreter", ("ai_edge_litert", "tflite_runtime")),
    ("image decoding (Pillow)", ("PIL/",)),
    ("metrics (prometheus-client)", ("prometheus_client",)),
    ("response models and JSON (pydantic)", ("pydantic", "fastapi/encoders", "json/")),
    ("NumPy", ("numpy/",)),
    ("the app's own code", ("app/", "model_store/")),
    ("FastAPI and Starlette (routing, dependencies, middleware)", ("fastapi/", "starlette/")),
    ("uvicorn, httptools and asyncio", ("uvicorn/", "asyncio/", "httptools", "selectors", "concurrent/")),
]
OTHER = "other Python"
NATIVE = "native code holding the GIL (no Python frame)"
OUTSIDE = "outside the GIL (ONNX Runtime, BLAS for the verdict, system calls, zlib)"


@dataclass
class Profile:
    load: Load
    cpu_us: float  # CPU time of the worker per request, every thread
    counts: Counter[str]  # GIL-holding samples by category
    gil_share: float  # share of wall time some thread held the GIL


def category(stack: list[str]) -> str:
    if not stack:
        return NATIVE
    for frame in reversed(stack):
        for name, needles in CATEGORIES:
            if any(needle in frame for needle in needles):
                return name
    return OTHER


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample(pid: int, seconds: int, rate: int, out: Path, kind: str) -> None:
    command = ["py-spy", "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate)]
    command += ["--gil", "--nonblocking", "--format", kind, "--output", str(out)]
    subprocess.run(command, check=True, capture_output=True)


def profile(kind: str, env: dict[str, str], args: argparse.Namespace, out_dir: Path) -> Profile:
    server = start_server(kind, 1, env, out_dir)
    try:
        pid = server.process.pid  # one worker: uvicorn serves in its own process
        url = f"{server.url}/predict"
        wrk(url, args.connections, 3, args.digit, "multipart")  # warm-up
        raw = out_dir / f"{kind}.raw"
        measured: list[tuple[Load, float]] = []

        def measure() -> None:
            before = cpu_seconds(pid)
            load = wrk(url, args.connections, args.seconds, args.digit, "multipart")
            requests = load.requests_per_second * args.seconds
            measured.append((load, 1e6 * (cpu_seconds(pid) - before) / requests))

        driver = threading.Thread(target=measure)
        driver.start()
        time.sleep(1)  # the profile covers the middle of the wrk run, not its ramp
        sample(pid, args.seconds - 2, args.rate, raw, "raw")
        driver.join()
        if kind == "ours":
            driver = threading.Thread(
                target=wrk, args=(url, args.connections, args.seconds, args.digit, "multipart")
            )
            driver.start()
            time.sleep(1)
            sample(pid, args.seconds - 2, args.rate, out_dir / "flamegraph.svg", "flamegraph")
            driver.join()
    finally:
        server.stop()
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        counts[category(stack.split(";")[1:])] += int(count)
    held = sum(counts.values()) / (args.rate * (args.seconds - 2))
    ((load, cpu_us),) = measured
    return Profile(load, cpu_us, counts, held)


def table(results: dict[str, Profile]) -> str:
    """CPU microseconds per request: the GIL-holding samples split by category, the rest outside."""
    per_request: dict[str, dict[str, float]] = {}
    for kind, result in results.items():
        # py-spy's GIL detection is approximate; the measured CPU time is the bound.
        busy_us = min(1e6 * result.gil_share / result.load.requests_per_second, result.cpu_us)
        total = sum(result.counts.values()) or 1
        rows = {name: busy_us * count / total for name, count in result.counts.items()}
        rows[OUTSIDE] = result.cpu_us - busy_us
        per_request[kind] = rows
    names = sorted(
        {name for rows in per_request.values() for name in rows}, key=lambda n: -per_request["ours"].get(n, 0)
    )
    lines = ["| where | ours, us/request | empty endpoint, us/request |", "| --- | ---: | ---: |"]
    for name in names:
        ours, empty = per_request["ours"].get(name, 0), per_request["empty"].get(name, 0)
        lines.append(f"| {name} | {ours:.0f} | {empty:.0f} |")
    ours_cpu, empty_cpu = results["ours"].cpu_us, results["empty"].cpu_us
    lines.append(f"| **CPU per request, every thread** | **{ours_cpu:.0f}** | **{empty_cpu:.0f}** |")
    lines.append("")
    for kind, result in results.items():
        load = result.load
        lines.append(
            f"{kind}: {load.requests_per_second:,.0f} req/s at this load, p50 {load.p50_ms:.2f} ms  "
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", type=Path, default=Path(os.environ.get("MNIST_MODEL_STORE", ROOT / "models"))
    )
    parser.add_argument("--version", type=int)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "profile")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("wrk", "py-spy") if shutil.which(tool) is None]
    if missing:
        found = " and ".join(missing)
        parser.error(f"{found} not found: install wrk (apt-get install wrk) and py-spy (pip install py-spy)")
    if args.seconds < 5:
        parser.error("--seconds must be at least 5")
    args.out.mkdir(parents=True, exist_ok=True)
    args.digit = args.out / "digit.png"
    args.digit.write_bytes(digit_png(args.data_dir))
    env = service_env(args.store, args.data_dir, MNIST_MODEL_VERSION=str(args.version or ""))
    results = {kind: profile(kind, env, args, args.out) for kind in ("ours", "empty")}
    report = table(results)
    (args.out / "profile.md").write_text(report + "\n")
    print(report)
    print(f"\nflame graph: {args.out / 'flamegraph.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
