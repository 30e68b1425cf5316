"""Soak test: a bounded run at fixed concurrency against the real service, watching errors and memory.

    python -m bench.soak --store models --data-dir data/mnist --seconds 60 --connections 64

Starts `app.main:create_app` under uvicorn (2 workers by default) on 127.0.0.1, checks one answer,
warms up, then drives POST /predict (multipart PNG of test digit 128) with wrk for --seconds while
sampling every worker's resident memory once a second. Reports req/s, errors, p50/p99 and, per
worker, RSS at start, after the warm-up (the baseline), at the end, its maximum, the growth over
the run and its trend; writes bench/results/soak-latest.md (and a timestamped copy).

Exit status 1 if any request failed (wrk counts connect, read, write, timeout and non-2xx) or
any worker grew by more than --max-growth-mib or --max-growth-pct over the run; 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.processes import rss_kib, service_env
from bench.servers import ROOT, Load, Server, start_server, wrk
from model_store.mnist_data import load_split

DIGIT_INDEX = 128  # an 8, the digit the README's examples use
KIB_PER_MIB = 1024


@dataclass
class RssTrace:
    """One worker's resident memory, sampled once a second: (seconds since start, MiB)."""

    pid: int
    samples: list[tuple[float, float]] = field(default_factory=list)
    baseline_at: float = 0.0  # when the measured run started (after the warm-up)

    @property
    def start_mib(self) -> float:
        return self.samples[0][1]

    @property
    def baseline_mib(self) -> float:
        return next((mib for at, mib in self.samples if at >= self.baseline_at), self.samples[-1][1])

    @property
    def end_mib(self) -> float:
        return self.samples[-1][1]

    @property
    def max_mib(self) -> float:
        return max(mib for _, mib in self.samples)

    @property
    def growth_mib(self) -> float:
        return self.end_mib - self.baseline_mib

    @property
    def growth_pct(self) -> float:
        return 100 * self.growth_mib / self.baseline_mib

    @property
    def trend_mib_per_minute(self) -> float:
        """Least-squares slope of RSS over the measured run: a leak shows as a steady climb."""
        run = [(at, mib) for at, mib in self.samples if at >= self.baseline_at]
        if len(run) < 3:
            return 0.0
        seconds, mib = np.array(run).T
        return float(np.polyfit(seconds, mib, 1)[0] * 60)


class RssSampler(threading.Thread):
    def __init__(self, pids: list[int], interval: float = 1.0) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.traces = {pid: RssTrace(pid) for pid in pids}
        self.interval = interval
        self.started = time.monotonic()
        self._stop_event = threading.Event()

    def sample(self) -> None:
        now = time.monotonic() - self.started
        for pid, trace in self.traces.items():
            # A worker that is gone is not sampled: the run's error count will say why.
            with contextlib.suppress(FileNotFoundError):
                trace.samples.append((now, rss_kib(pid) / KIB_PER_MIB))

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def mark_baseline(self) -> None:
        self.sample()
        for trace in self.traces.values():
            trace.baseline_at = trace.samples[-1][0]

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()


@dataclass
class SoakResult:
    seconds: int
    connections: int
    workers: int
    warmup_seconds: int
    warmup: Load | None
    load: Load
    rss: list[RssTrace]
    cold_start_seconds: float
    answers_before: int
    answers_after: int
    expected: int


@dataclass
class Limits:
    max_growth_mib: float = 100.0
    max_growth_pct: float = 25.0


def wait_for_workers(server: Server, workers: int, timeout: float = 120) -> list[int]:
    """Every worker started and holding a model: /readyz answers as soon as the first one is up,
    so wait until there are `workers` of them with resident memory within 20 % of each other."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = server.worker_pids() if workers > 1 else [server.process.pid]
        try:
            rss = [rss_kib(pid) for pid in pids]
        except FileNotFoundError:
            rss = []
        if len(pids) == workers and rss and min(rss) > 0.8 * max(rss):
            return pids
        time.sleep(0.5)
    raise RuntimeError(f"{workers} workers not all up after {timeout} s")


def predicted(url: str, png: bytes) -> int:
    response = httpx.post(f"{url}/predict", files={"file": ("digit.png", png, "image/png")}, timeout=30)
    response.raise_for_status()
    return int(response.json()["prediction"])


def run_soak(
    store: Path,
    data_dir: Path,
    seconds: int = 60,
    connections: int = 64,
    workers: int = 2,
    warmup_seconds: int = 5,
    log_dir: Path | None = None,
) -> SoakResult:
    """Start the service, warm it up, load it for `seconds`, sampling RSS; stop it; return the numbers."""
    test = load_split(data_dir, "test")
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    digit_png = work / "digit.png"
    Image.fromarray(test.images[DIGIT_INDEX]).save(digit_png)
    png = digit_png.read_bytes()
    env = service_env(store, data_dir, reload_poll_seconds="0")
    server = start_server("ours", workers, env, log_dir or work)
    try:
        sampler = RssSampler(wait_for_workers(server, workers))
        sampler.start()
        url = f"{server.url}/predict"
        before = predicted(server.url, png)
        warmup = wrk(url, connections, warmup_seconds, digit_png, "multipart") if warmup_seconds else None
        sampler.mark_baseline()
        load = wrk(url, connections, seconds, digit_png, "multipart")
        sampler.stop()
        after = predicted(server.url, png)
    finally:
        server.stop()
    return SoakResult(
        seconds=seconds,
        connections=connections,
        workers=workers,
        warmup_seconds=warmup_seconds,
        warmup=warmup,
        load=load,
        rss=list(sampler.traces.values()),
        cold_start_seconds=server.cold_start_seconds,
        answers_before=before,
        answers_after=after,
        expected=int(test.labels[DIGIT_INDEX]),
    )


def problems(result: SoakResult, limits: Limits) -> list[str]:
    found = []
    if result.load.errors:
        found.append(f"{result.load.errors} requests failed")
    if result.answers_before != result.expected or result.answers_after != result.expected:
        found.append(
            f"digit {DIGIT_INDEX} predicted {result.answers_before} before and {result.answers_after} "
            f"after the run; it is a {result.expected}"
        )
    for trace in result.rss:
        if trace.growth_mib > limits.max_growth_mib or trace.growth_pct > limits.max_growth_pct:
            found.append(
                f"worker {trace.pid} grew {trace.growth_mib:.1f} MiB ({trace.growth_pct:.1f} %); "
                f"limits {limits.max_growth_mib} MiB, {limits.max_growth_pct} %"
            )
    return found


def render(result: SoakResult, limits: Limits) -> str:
    load = result.load
    verdict = problems(result, limits)
    lines = [
        f"Soak of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: POST /predict (multipart PNG of test digit "
        f"{DIGIT_INDEX}), {result.connections} connections for {result.seconds} s after a "
        f"{result.warmup_seconds} s warm-up; {result.workers} uvicorn workers, {os.cpu_count()} CPUs; "
        f"cold start to ready {result.cold_start_seconds:.1f} s.",
        "",
        "| ≈ requests | req/s | p50 ms | p99 ms | errors |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {round(load.requests_per_second * result.seconds):,} | {load.requests_per_second:,.0f} | "
        f"{load.p50_ms:.2f} | {load.p99_ms:.2f} | {load.errors} |",
        "",
        "| worker pid | RSS start MiB | after warm-up | end | max | growth MiB | growth % | trend MiB/min |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for trace in result.rss:
        lines.append(
            f"| {trace.pid} | {trace.start_mib:.1f} | {trace.baseline_mib:.1f} | {trace.end_mib:.1f} | "
            f"{trace.max_mib:.1f} | {trace.growth_mib:+.1f} | {trace.growth_pct:+.1f} | "
            f"{trace.trend_mib_per_minute:+.1f} |"
        )
    lines += [
        "",
        f"Limits: zero errors; per worker, growth from after the warm-up to the end at most "
        f"{limits.max_growth_mib:g} MiB and {limits.max_growth_pct:g} %.",
        "",
        "Result: " + ("PASS" if not verdict else "FAIL: " + "; ".join(verdict)),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--store", type=Path, default=Path(os.environ.get("MNIST_MODEL_STORE", ROOT / "models"))
    )
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5, help="seconds of load before the RSS baseline")
    parser.add_argument("--max-growth-mib", type=float, default=Limits.max_growth_mib)
    parser.add_argument("--max-growth-pct", type=float, default=Limits.max_growth_pct)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    limits = Limits(args.max_growth_mib, args.max_growth_pct)
    result = run_soak(args.store, args.data_dir, args.seconds, args.connections, args.workers, args.warmup)
    report = render(result, limits)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (args.out / f"soak-{stamp}.md").write_text(report)
    (args.out / "soak-latest.md").write_text(report)
    print(report)
    return 1 if problems(result, limits) else 0


if __name__ == "__main__":
    sys.exit(main())
