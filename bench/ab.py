"""A/B of two checkouts of the service on one store: the same requests, in alternating rounds.

Each variant is a checkout (this one, or an earlier commit exported by `git archive`), served by
one uvicorn worker from the same model store. Both servers stay up; the rounds alternate between
them (A, B, A, B, ...) so a noisy neighbour on the machine hurts both alike, and the report gives
each figure's median over the rounds.

Two scenarios:

- `predict`: `/predict` with a test digit's PNG under wrk at 64 connections (throughput) and at
  one connection (p50 latency): what a change of the hot path costs or buys. Beside them, the
  server's CPU time per request: wrk shares the cores with the server, so throughput moves with
  whatever else the machine does, and the CPU a request costs moves much less.
- `beside-uploads`: one client's `/predict` at one connection (its p50 and p99) while a few other
  clients keep uploading photos that take milliseconds to decode and normalise: whether that work
  holds up the event loop every request shares.

    python -m bench.ab --baseline HEAD~1 --scenario predict
    python -m bench.ab --baseline HEAD~1 --scenario beside-uploads --markdown bench/results/beside-uploads.md
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bench.digits import encode
from bench.processes import cpu_seconds, service_env
from bench.servers import ROOT, Load, Server, start_server, wrk
from model_store.mnist_data import load_split

STORE = ROOT / "tests" / "fixtures" / "store"
DIGIT_INDEX = 128
# The uploads beside: dark-on-light photos of a digit with paper grain, each a different size.
PHOTO_SIDES = (128, 640, 1600)
PHOTO_CLIENTS = 3
PREDICT_LOADS = ("64 connections", "1 connection")


@dataclass
class Rounds:
    """Each round's wrk result for one variant and one load."""

    loads: list[Load] = field(default_factory=list)
    cpu_ms_per_request: list[float] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(load, attribute) for load in self.loads)

    def cpu_median(self) -> str:
        """The server's CPU per request, or a dash where the requests counted are not all it served."""
        return f"{statistics.median(self.cpu_ms_per_request):.3f}" if self.cpu_ms_per_request else "-"


def export(revision: str, folder: Path) -> Path:
    """The checkout of `revision`, written into `folder` by git archive; a folder is taken as the
    checkout itself (a variant with local changes)."""
    if Path(revision).is_dir():
        return Path(revision)
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def photo(pixels: np.ndarray, side: int, seed: int) -> bytes:
    """A digit as a phone photographs it: dark ink on grainy grey paper, `side` px, JPEG."""
    rng = np.random.default_rng(seed)
    ink = np.asarray(Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR), np.float32)
    paper = 200 - ink * 0.7 + rng.normal(0, 6, (side, side))
    buffer = io.BytesIO()
    Image.fromarray(np.uint8(np.clip(paper, 0, 255))).convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@contextmanager
def servers(roots: dict[str, Path], data_dir: Path, log_dir: Path) -> Iterator[dict[str, Server]]:
    env = service_env(STORE, data_dir, reload_poll_seconds="0")
    started: dict[str, Server] = {}
    try:
        for name, root in roots.items():
            (log_dir / name).mkdir()
            # Each variant logs its answers to a new database of its own: a checkout's existing
            # one may hold millions of rows from earlier runs, and every insert would pay for them.
            database = {"MNIST_DATABASE_URL": f"sqlite:///{log_dir / name / 'predictions.db'}"}
            started[name] = start_server("ours", 1, env | database, log_dir / name, root=root)
        yield started
    finally:
        for server in started.values():
            server.stop()


def server_cpu(server: Server) -> float:
    return sum(cpu_seconds(pid) for pid in server.worker_pids())


def beside_uploads(url: str, photos: list[Path], seconds: int, digit: Path) -> Load:
    """The probe's wrk at one connection while PHOTO_CLIENTS other wrk clients upload photos."""
    uploaders = [
        threading.Thread(
            target=wrk, args=(f"{url}/predict", 1, seconds + 2, photos[i % len(photos)], "multipart")
        )
        for i in range(PHOTO_CLIENTS)
    ]
    for uploader in uploaders:
        uploader.start()
    try:
        return wrk(f"{url}/predict", 1, seconds, digit, "multipart")
    finally:
        for uploader in uploaders:
            uploader.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="variant A: a git revision, or a checkout's folder")
    parser.add_argument(
        "--candidate", default=None, help="variant B: a revision or a folder (default: this checkout)"
    )
    parser.add_argument("--scenario", choices=("predict", "beside-uploads"), default="predict")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant and load")
    parser.add_argument("--seconds", type=int, default=8, help="wrk's duration per round")
    parser.add_argument("--data-dir", type=Path, default=Path("data/mnist"), help="the MNIST files")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)

    pixels = load_split(args.data_dir, "test").images[DIGIT_INDEX]
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as scratch:
        work = Path(scratch)
        (work / "a").mkdir()
        roots = {"A": export(args.baseline, work / "a")}
        if args.candidate is None:
            roots["B"] = ROOT
        else:
            (work / "b").mkdir()
            roots["B"] = export(args.candidate, work / "b")
        digit = work / "digit.png"
        digit.write_bytes(encode(pixels))
        photos = []
        for side in PHOTO_SIDES:
            photos.append(work / f"photo-{side}.jpg")
            photos[-1].write_bytes(photo(pixels, side, side))
        loads = (
            ("64 connections", "1 connection")
            if args.scenario == "predict"
            else ("1 connection beside uploads",)
        )
        results = {(name, load): Rounds() for name in roots for load in loads}
        with servers(roots, args.data_dir, work) as running:
            for round_number in range(args.rounds):
                order = list(running) if round_number % 2 == 0 else list(reversed(running))
                for name in order:
                    url = running[name].url
                    for load in loads:
                        cpu_before = server_cpu(running[name])
                        if load == "64 connections":
                            result = wrk(f"{url}/predict", 64, args.seconds, digit, "multipart")
                        elif load == "1 connection":
                            result = wrk(f"{url}/predict", 1, args.seconds, digit, "multipart")
                        else:
                            result = beside_uploads(url, photos, args.seconds, digit)
                        results[name, load].loads.append(result)
                        if load in PREDICT_LOADS:
                            requests = result.requests_per_second * args.seconds
                            cpu_ms = (server_cpu(running[name]) - cpu_before) * 1000 / max(requests, 1)
                            results[name, load].cpu_ms_per_request.append(cpu_ms)
                        print(
                            f"round {round_number + 1} {name} {load}: {result}", file=sys.stderr, flush=True
                        )
    table = report(args, results, loads)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)


def report(args: argparse.Namespace, results: dict[tuple[str, str], Rounds], loads: tuple[str, ...]) -> str:
    candidate = args.candidate or "this checkout"
    lines = [
        f"Variant A: `{args.baseline}`; variant B: {candidate}. One uvicorn worker each, the fixture store,",
        f"`/predict` with test digit {DIGIT_INDEX} as a multipart PNG; {args.rounds} alternating rounds of "
        f"{args.seconds} s, medians.",
        "",
        "| load | variant | requests/s | p50 ms | p99 ms | server CPU ms/request | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for load in loads:
        for name in ("A", "B"):
            rounds = results[name, load]
            lines.append(
                f"| {load} | {name} | {rounds.median('requests_per_second'):.0f} | "
                f"{rounds.median('p50_ms'):.3f} | {rounds.median('p99_ms'):.3f} | "
                f"{rounds.cpu_median()} | {sum(load.errors for load in rounds.loads)} |"
            )
    for load in loads:
        a, b = results["A", load], results["B", load]
        gain = a.median("requests_per_second") / b.median("requests_per_second") - 1
        p50 = b.median("p50_ms") - a.median("p50_ms")
        p99 = b.median("p99_ms") - a.median("p99_ms")
        lines.append("")
        cpu = ""
        if a.cpu_ms_per_request and b.cpu_ms_per_request:
            ratio = statistics.median(b.cpu_ms_per_request) / statistics.median(a.cpu_ms_per_request) - 1
            cpu = f" B's server CPU per request is {ratio:+.1%} of A's."
        lines.append(
            f"{load}: A's throughput is {gain:+.1%} of B's; B's p50 is {p50:+.3f} ms and its p99 "
            f"{p99:+.3f} ms against A's.{cpu}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
