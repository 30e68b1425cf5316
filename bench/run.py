"""Benchmark the service against its ceiling, a naive baseline and two serving frameworks, side by side.

    python -m bench.run --store models --data-dir data/mnist --preset seed cnn
    python -m bench.run --store models --version 3 --quick

For each model version (the newest of each --preset, or --version, or the newest), starts each
server on 127.0.0.1 at 1 and 2 workers and drives it with wrk at each concurrency:
  empty    - FastAPI receiving the same upload and answering a constant (the HTTP ceiling)
  ours     - app.main:create_app, at the precision MNIST_PRECISION=auto picks for the version
  ours-int8 / ours-float32 - the same pinned to the other precision, where the version has an
             int8 export
  naive    - keras `model.predict` per request (the baseline)
  bentoml  - BentoML 1.4, adaptive batching (bench/peers/bentoml_service.py)
  litserve - LitServe, its batching on (bench/peers/litserve_server.py)
The peers run from an interpreter that has them (`python -m bench.peers.setup` makes one); without
it they are skipped, with the reason in the report. Then ours and the empty endpoint, both up, take
turns at the top concurrency for --turns rounds (their ratio, robust to a slow minute). Then, per
precision, the forward pass and the whole answer in process at batch sizes 1-128 (the median call,
the precisions taking turns), one worker's
memory after 200 predictions; ours' batch endpoint, cold start, RSS and latency beside
10,000-image batches; and the int8 export's publish-time proof from the metadata. Writes
bench/results/latest.md (tables, ratios and targets), latest.json and throughput.png.
Absolute numbers depend on the machine and what else runs on it; the ratios are the result.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
from PIL import Image

from bench.digits import encode
from bench.peers.model import MODEL_PATH_ENV
from bench.processes import service_env
from bench.report import (
    MAX_BATCH,
    PEERS,
    RESULTS,
    RSS_AFTER_PREDICTIONS,
    ModelRun,
    PrecisionRun,
    Scenarios,
    Sweep,
    best_workers,
    write,
)
from bench.servers import ROOT, SERVERS, Load, Server, start_server, wrk
from model_store.metadata import MODEL_FILE
from model_store.mnist_data import load_split
from model_store.reporting import fail, one_line_errors
from model_store.store import ModelStore

if TYPE_CHECKING:
    from app.serving.model import ServingModel

PROG = "bench.run"
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, MAX_BATCH)
OPTIONAL = ("naive", *PEERS)


# Rounds in which the forward passes measured together take turns.
ROUNDS = 10


def time_interleaved(
    forwards: Mapping[str, Callable[[np.ndarray], object]], batch: np.ndarray, seconds: float
) -> dict[str, float]:
    """Median seconds of one call of each forward pass. They take turns in short rounds, so load
    from other processes that comes and goes falls on all of them alike."""
    for forward in forwards.values():
        for _ in range(3):
            forward(batch)
    times: dict[str, list[float]] = {name: [] for name in forwards}
    for _ in range(ROUNDS):
        for name, forward in forwards.items():
            deadline = time.perf_counter() + seconds / ROUNDS
            calls = 0
            while calls < 2 or time.perf_counter() < deadline:
                started = time.perf_counter()
                forward(batch)
                times[name].append(time.perf_counter() - started)
                calls += 1
    return {name: statistics.median(values) for name, values in times.items()}


def in_process_rate(
    run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, seconds: float, windows: int = 3
) -> float:
    """Images per second of `run` called on `batch` over and over, after one warm-up call: the best
    of a few windows, so a moment when another process has the cores does not count as the limit."""
    run(batch)
    rates = []
    for _ in range(windows):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / windows:
            run(batch)
            count += len(batch)
        rates.append(count / (time.perf_counter() - started))
    return max(rates)


def compiled(store: ModelStore, version: int, precision: str) -> ServingModel:
    """The `ServingModel` the service would run at `precision`, on the runtime the settings choose,
    with every core (one process), warmed up as the service does before it opens its port."""
    from app.config import Settings
    from app.serving.model import ServingModel

    settings = Settings().model_copy(update={"workers": 1, "precision": precision})
    serving = ServingModel.compile(store.load(version), runtime=settings.runtime_choice())
    serving.warm_up()
    return serving


def in_process(
    servings: dict[str, ServingModel], images: np.ndarray, seconds: float
) -> dict[str, PrecisionRun]:
    """The compute limit of each precision: images/s of the forward pass and of the whole answer
    (with the verdicts) at each batch size, called directly, from the median call. The four take
    turns in short rounds, so a busy moment on the machine falls on every one of them alike."""
    from threadpoolctl import threadpool_limits

    runs = {precision: PrecisionRun({}, {}) for precision in servings}
    with threadpool_limits(1, user_api="blas"):  # as the service runs the verdicts
        for size in BATCH_SIZES:
            ways = {
                f"{precision} {step}": getattr(serving, step)
                for precision, serving in servings.items()
                for step in ("forward", "answer")
            }
            seconds_per_call = time_interleaved(ways, images[:size], seconds)
            for precision, run in runs.items():
                run.forward[size] = size / seconds_per_call[f"{precision} forward"]
                run.answer[size] = size / seconds_per_call[f"{precision} answer"]
    return runs


def rss_after_predictions(kind: str, env: dict[str, str], pngs: list[bytes], log_dir: Path) -> float:
    """One worker's resident memory after answering each of `pngs` once, one after the other."""
    server = start_server(kind, 1, env, log_dir)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for png in pngs:
                client.post("/predict", files={"file": ("digit.png", png, "image/png")}).raise_for_status()
        return server.rss_mib()[0]
    finally:
        server.stop()


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


def npy_file(path: Path, images: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, images)
    path.write_bytes(buffer.getvalue())
    return path


def ours_scenarios(
    server: Server, workers: int, files: dict[str, Path], args: argparse.Namespace
) -> Scenarios:
    batch = wrk(f"{server.url}/predict/batch", 2, args.seconds, files["batch"], "raw", "application/x-npy")
    beside, done = under_large_batches(server.url, files["digit"], files["large"], args.seconds)
    top = max(args.connections)
    native = wrk(f"{server.url}/predict", top, args.seconds, files["digit"], "multipart")
    normalised = wrk(f"{server.url}/predict", top, args.seconds, files["upload"], "multipart")
    return Scenarios(
        workers=workers,
        cold_start_seconds=server.cold_start_seconds,
        rss_mib_per_worker=server.rss_mib(),
        batch_images=args.batch_images,
        batch_images_per_second=batch.requests_per_second * args.batch_images,
        batch_errors=batch.errors,
        batch_in_process_images_per_second=0.0,  # filled in once the servers are down
        alone_c8=wrk(f"{server.url}/predict", 8, args.seconds, files["digit"], "multipart"),
        beside_large=beside,
        large_batches_done=done,
        native_upload=native,
        normalised_upload=normalised,
    )


def check_answers(server: Server, digit_png: Path) -> None:
    """One upload before the load: a server that cannot answer it is not benchmarked."""
    files = {server.spec.field: ("digit.png", digit_png.read_bytes(), "image/png")}
    response = httpx.post(f"{server.url}/predict", files=files, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"POST /predict answered {response.status_code}: {response.text[:200]}")


def sweep_server(
    kind: str, env: dict[str, str], python: str, files: dict[str, Path], args: argparse.Namespace
) -> tuple[Sweep, Scenarios | None]:
    sweep: Sweep = {}
    scenarios = None
    spec = SERVERS[kind]
    for workers in args.workers:
        server = start_server(kind, workers, env, args.logs, python=python)
        try:
            check_answers(server, files["digit"])
            url = f"{server.url}/predict"
            # Every worker traced, warmed and reached (and the peers' batchers trained) before timing.
            wrk(url, max(args.connections), args.warmup, files["digit"], "multipart", field=spec.field)
            sweep[workers] = {
                c: wrk(url, c, args.seconds, files["digit"], "multipart", field=spec.field)
                for c in args.connections
            }
            print(kind, workers, {c: load.__dict__ for c, load in sweep[workers].items()}, flush=True)
            if kind == "ours" and workers == max(args.workers):
                scenarios = ours_scenarios(server, workers, files, args)
        finally:
            server.stop()
    return sweep, scenarios


def take_turns(
    workers: dict[str, int], env: dict[str, str], files: dict[str, Path], args: argparse.Namespace
) -> dict[str, list[float]]:
    """Requests per second at the top concurrency, round by round, the servers up together and
    driven in turn: a slow minute on a shared machine then lowers both sides of a ratio, not one."""
    servers = {kind: start_server(kind, count, env, args.logs) for kind, count in workers.items()}
    top = max(args.connections)
    try:
        urls = {kind: f"{server.url}/predict" for kind, server in servers.items()}
        for url in urls.values():
            wrk(url, top, args.warmup, files["digit"], "multipart")
        rates: dict[str, list[float]] = {kind: [] for kind in servers}
        for _ in range(args.turns):
            for kind, url in urls.items():
                rates[kind].append(
                    wrk(url, top, args.turn_seconds, files["digit"], "multipart").requests_per_second
                )
    finally:
        for server in servers.values():
            server.stop()
    print("taking turns", rates, flush=True)
    return rates


def served_precision(store: ModelStore, version: int) -> str:
    """What MNIST_PRECISION (auto unless set) makes the service run for this version."""
    from app.config import Settings
    from app.serving.model import wants_int8

    return "int8" if wants_int8(store.open(version), Settings().runtime_choice()) else "float32"


def run_model(
    store: ModelStore, version: int, files: dict[str, Path], test_images: np.ndarray, args: argparse.Namespace
) -> ModelRun:
    metadata = store.read_metadata(version)
    served = served_precision(store, version)
    # The other precision as well, where the version has an int8 export to compare.
    precisions = {served: "ours"}
    if metadata.int8 is not None:
        other = "float32" if served == "int8" else "int8"
        precisions[other] = f"ours-{other}"
    env = service_env(
        args.store,
        args.data_dir,
        max_array_images=str(max(args.batch_images, 10_000)),
        max_upload_bytes=str(64 * 1024 * 1024),
        model_version=str(version),
    ) | {MODEL_PATH_ENV: str((store.version_path(version) / MODEL_FILE).resolve())}
    run = ModelRun(
        model=f"{metadata.name} v{metadata.version} ({metadata.training.preset} preset)",
        preset=metadata.training.preset,
        sweeps={},
        forward={},
        answer={},
        precision=served,
        int8_proof=None if metadata.int8 is None else metadata.int8.model_dump(mode="json"),
    )
    for kind in ("empty", *precisions.values(), *(kind for kind in OPTIONAL if kind not in args.skip)):
        python = sys.executable
        if SERVERS[kind].peer:
            interpreter = args.peers[kind]
            if interpreter.python is None:
                run.skipped[kind] = interpreter.problem
                print(f"{kind}: skipped, {interpreter.problem}", flush=True)
                continue
            python = interpreter.python
        try:
            run.sweeps[kind], scenarios = sweep_server(kind, env, python, files, args)
        except (RuntimeError, OSError) as exc:
            if not SERVERS[kind].peer:
                raise
            run.skipped[kind] = str(exc)
            print(f"{kind}: skipped, {exc}", flush=True)
            continue
        run.scenarios = scenarios or run.scenarios
    if args.turns:
        chosen = {kind: best_workers(run.sweeps[kind]) for kind in ("empty", "ours")}
        run.turns = take_turns(chosen, env, files, args)
    pngs = [encode(image) for image in test_images[:RSS_AFTER_PREDICTIONS]]
    # Measured after the servers stopped, so it has the machine to itself as they did.
    servings = {precision: compiled(store, version, precision) for precision in precisions}
    run.precisions = in_process(servings, test_images, args.in_process_seconds)
    served_model = servings[served]
    run.forward, run.answer = run.precisions[served].forward, run.precisions[served].answer
    run.runtime = served_model.runtime
    if run.scenarios is not None:
        run.scenarios.batch_in_process_images_per_second = in_process_rate(
            served_model.forward, test_images[: args.batch_images], args.in_process_seconds
        )
    del servings, served_model
    for precision, kind in precisions.items():
        run.precisions[precision].rss_mib = rss_after_predictions(kind, env, pngs, args.logs)
    return run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", type=Path, default=Path(os.environ.get("MNIST_MODEL_STORE", ROOT / "models"))
    )
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="model version to serve (default: newest)")
    which.add_argument("--preset", nargs="+", help="the newest version of each preset, one after another")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="each server at each count")
    parser.add_argument("--seconds", type=int, help="duration of each wrk run (default 10, --quick 2)")
    parser.add_argument("--connections", type=int, nargs="+", help="default 1 8 32 64 (--quick: 1 8 64)")
    parser.add_argument("--skip", nargs="+", default=[], choices=OPTIONAL, help="servers to leave out")
    parser.add_argument("--quick", action="store_true", help="short runs: a rough picture in minutes")
    parser.add_argument(
        "--turns",
        type=int,
        help="rounds in which ours and the empty endpoint, both up, take turns at the top concurrency "
        "(default 5, --quick 2; 0: none)",
    )
    parser.add_argument("--batch-images", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 2 if args.quick else 10
    args.connections = args.connections or ([1, 8, 64] if args.quick else [1, 8, 32, 64])
    args.warmup = 1 if args.quick else 3
    if args.turns is None:
        args.turns = 2 if args.quick else 5
    args.turn_seconds = max(1, args.seconds // 2)
    args.in_process_seconds = 0.5 if args.quick else 2.0
    numbers = [args.seconds, *args.workers, *args.connections, args.batch_images]
    if min(numbers) < 1 or (args.version is not None and args.version < 1):
        parser.error("--seconds, --workers, --connections, --batch-images and --version must be at least 1")
    if args.turns < 0:
        parser.error("--turns must be 0 or more")
    if shutil.which("wrk") is None:
        fail(PROG, "wrk is not installed (apt-get install wrk)")
    return args


def versions_to_run(store: ModelStore, args: argparse.Namespace, prog: str = PROG) -> list[int]:
    """`--version`, or the newest of each `--preset`, or the newest."""
    if not args.preset:
        return [store.resolve(args.version)]
    newest_first = sorted(store.versions(), reverse=True)
    chosen = []
    for preset in args.preset:
        match = next((v for v in newest_first if store.read_metadata(v).training.preset == preset), None)
        if match is None:
            fail(
                prog,
                f"no version of preset {preset!r} in {store.root}; "
                f"train one with mnist-train --preset {preset}",
            )
        chosen.append(match)
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with one_line_errors(PROG):
        store = ModelStore(args.store)
        versions = versions_to_run(store, args)
        test = load_split(args.data_dir, "test")
    from bench.peers.setup import find_interpreter

    args.peers = {peer: find_interpreter(peer) for peer in PEERS if peer not in args.skip}
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    args.logs = work
    digit_png = work / "digit.png"
    Image.fromarray(test.images[128]).save(digit_png)
    files = {
        "digit": digit_png,
        "batch": npy_file(work / "batch.npy", test.images[: args.batch_images]),
        "large": npy_file(work / "large.npy", test.images),
        "upload": work / "upload.jpg",
    }
    # The same digit as a person's upload would be: dark ink on light paper, 112 px, JPEG.
    page = Image.fromarray(255 - test.images[128]).resize((112, 112), Image.Resampling.BILINEAR)
    page.save(files["upload"], "JPEG", quality=90)
    runs = [run_model(store, version, files, test.images, args) for version in versions]

    peers = ", ".join(f"{p} {i.version}" for p, i in args.peers.items() if i.python) or "none"
    header = (
        "# Benchmark\n\n"
        f"wrk {args.seconds} s per cell after a {args.warmup} s warm-up at {max(args.connections)} "
        f"connections, {os.cpu_count()} CPUs, one multipart PNG of test digit 128 per request, "
        f"the same `.keras` version behind every server; peers: {peers}."
    )
    print(write(runs, header, args.out))
    print(f"server logs: {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
