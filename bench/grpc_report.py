"""bench/results/grpc.md from `bench.grpc_load`'s cells: the tables, the ratios measured side by
side, and what gRPC saves per request."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass

from bench.servers import Load

OTHERS = ("v2-json", "v2-binary", "predict")
NAMES = {
    "grpc": "gRPC ModelInfer",
    "v2-json": "HTTP v2 JSON",
    "v2-binary": "HTTP v2 binary",
    "predict": "HTTP /predict",
}


@dataclass
class Cell:
    """One protocol, generator, concurrency and images per call: a Load per round."""

    protocol: str
    generator: str  # "python" (grpc.aio / httpx) or "wrk"
    connections: int
    images: int
    loads: list[Load]
    sent_bytes: int

    def median(self) -> Load:
        return Load(
            statistics.median(load.requests_per_second for load in self.loads),
            statistics.median(load.p50_ms for load in self.loads),
            statistics.median(load.p99_ms for load in self.loads),
            sum(load.errors for load in self.loads),
        )


def command(args: argparse.Namespace) -> str:
    """The command that reruns this benchmark, with the store and data named as in the docs."""
    words = ["python -m bench.grpc_load --store models --data-dir data/mnist"]
    if args.preset:
        words.append("--preset " + " ".join(args.preset))
    elif args.version:
        words.append(f"--version {args.version}")
    defaults = {"workers": 1, "connections": [1, 64], "batch": 128, "seconds": 5, "warmup": 1.0, "rounds": 3}
    for name, default in defaults.items():
        value = getattr(args, name)
        if value != default:
            shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            words.append(f"--{name} {shown}")
    if args.calls:
        words.append(f"--calls {args.calls}")
    if not args.wrk:
        words.append("--no-wrk")
    return " ".join(words)


def _row(cell: Cell) -> str:
    load = cell.median()
    return (
        f"| {NAMES[cell.protocol]} | {cell.connections} | {cell.images} | {load.requests_per_second:,.0f} "
        f"| {load.requests_per_second * cell.images:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} "
        f"| {load.errors} | {cell.sent_bytes:,} |"
    )


def _table(cells: list[Cell]) -> list[str]:
    return [
        "| protocol | calls in flight | digits per call | req/s | images/s | p50 ms | p99 ms | errors "
        "| request bytes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(_row(cell) for cell in cells),
    ]


def _ratio(ours: Load, theirs: Load) -> str:
    if theirs.requests_per_second <= 0:
        return "-"
    return f"{ours.requests_per_second / theirs.requests_per_second:.2f}×"


def _ratios(python: dict[tuple[str, int, int], Load]) -> list[str]:
    cases = sorted({(images, connections) for _, connections, images in python})
    lines = [
        "| digits per call | calls in flight | gRPC req/s | ÷ v2 JSON | ÷ v2 binary | ÷ /predict "
        "| p50 saved vs v2 JSON | p50 saved vs v2 binary |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for images, connections in cases:
        ours = python[("grpc", connections, images)]
        json_load, binary = (
            python[("v2-json", connections, images)],
            python[("v2-binary", connections, images)],
        )
        ratios = " | ".join(_ratio(ours, python[(other, connections, images)]) for other in OTHERS)
        lines.append(
            f"| {images} | {connections} | {ours.requests_per_second:,.0f} | {ratios} "
            f"| {json_load.p50_ms - ours.p50_ms:+.2f} ms | {binary.p50_ms - ours.p50_ms:+.2f} ms |"
        )
    return lines


def _per_request(python: dict[tuple[str, int, int], Load], connections: list[int]) -> list[str]:
    """What one call costs less over gRPC: latency alone, and server time at the top concurrency."""
    low, high = min(connections), max(connections)
    ours_low, ours_high = python[("grpc", low, 1)], python[("grpc", high, 1)]
    lines = []
    for other in ("v2-json", "v2-binary"):
        theirs_low, theirs_high = python[(other, low, 1)], python[(other, high, 1)]
        saved_latency = (theirs_low.p50_ms - ours_low.p50_ms) * 1000
        saved_capacity = (
            1e6 / theirs_high.requests_per_second - 1e6 / ours_high.requests_per_second
            if min(theirs_high.requests_per_second, ours_high.requests_per_second) > 0
            else float("nan")
        )
        lines.append(
            f"- against {NAMES[other]}: {saved_latency:+.0f} µs of p50 latency per one-digit call at "
            f"{low} in flight; {saved_capacity:+.0f} µs of the service's time per call at {high} in "
            "flight (1 ÷ req/s)."
        )
    return lines


def render_model(title: str, cells: list[Cell], args: argparse.Namespace) -> str:
    python = {(c.protocol, c.connections, c.images): c.median() for c in cells if c.generator == "python"}
    lines = [
        f"## {title}",
        "",
        "Every protocol driven by the same Python generator (grpc.aio, httpx):",
        "",
        *_table([cell for cell in cells if cell.generator == "python"]),
        "",
        "gRPC's req/s over each HTTP protocol's (above 1 gRPC is faster), and how much lower its p50 is:",
        "",
        *_ratios(python),
        "",
        "What gRPC saves per request (positive: gRPC costs less):",
        "",
        *_per_request(python, args.connections),
    ]
    wrk_cells = [cell for cell in cells if cell.generator == "wrk"]
    if wrk_cells:
        lines += [
            "",
            "The HTTP protocols under wrk, the generator of the other benchmarks (C, not Python: its "
            "numbers are not comparable with the gRPC row above, only with each other):",
            "",
            *_table(wrk_cells),
        ]
    return "\n".join(lines)


def render(runs: list[tuple[str, list[Cell]]], args: argparse.Namespace, cpus: int) -> str:
    header = [
        "# gRPC against HTTP",
        "",
        f"One service at {args.workers} worker(s) with both ports on 127.0.0.1; {cpus} CPUs, shared by "
        f"the service and the load generator. Each cell runs {args.seconds} s"
        + (f" or {args.calls} calls" if args.calls else "")
        + f" after a {args.warmup:g} s warm-up; the median of {args.rounds} rounds, each round "
        "starting at another protocol. One call carries test digit 128 (a batch: test digits from "
        f"128 on, {args.batch} per call) as a raw UINT8 tensor (gRPC, v2 binary), JSON numbers (v2 "
        "JSON) or a PNG (/predict; a batch as one .npy array to /predict/batch). gRPC uses one channel "
        "for all calls in flight, httpx one HTTP/1.1 connection per call in flight.",
        "",
        "Rerun (the store holding the versions, the folder of the MNIST files):",
        "",
        "```sh",
        command(args),
        "```",
    ]
    body = [render_model(title, cells, args) for title, cells in runs]
    return "\n".join(header) + "\n\n" + "\n\n".join(body) + "\n"
