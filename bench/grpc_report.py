"""bench/results/grpc.md from `bench.grpc_load`'s cells: the tables, the ratios measured side by
side, and what gRPC saves per request."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass

from bench.servers import Load

OTHERS = ("v2-json", "v2-binary", "predict")
GRPC_GENERATOR = "grpc.aio"
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
    generator: str  # grpc.aio; asyncio, httpx or wrk
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
    defaults = {
        "workers": 1,
        "connections": [1, 64],
        "batch": 128,
        "batch_connections": [1, 8],
        "seconds": 5,
        "warmup": 1.0,
        "rounds": 3,
    }
    for name, default in defaults.items():
        value = getattr(args, name)
        if value != default:
            shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            words.append(f"--{name.replace('_', '-')} {shown}")
    if args.calls:
        words.append(f"--calls {args.calls}")
    if not args.wrk:
        words.append("--no-wrk")
    return " ".join(words)


Medians = dict[tuple[str, str, int, int], Load]  # (protocol, generator, in flight, digits per call)


def _row(cell: Cell) -> str:
    load = cell.median()
    return (
        f"| {NAMES[cell.protocol]} | {cell.generator} | {cell.connections} | {cell.images} "
        f"| {load.requests_per_second:,.0f} | {load.requests_per_second * cell.images:,.0f} "
        f"| {load.p50_ms:.2f} | {load.p99_ms:.2f} | {load.errors} | {cell.sent_bytes:,} |"
    )


def _table(cells: list[Cell]) -> list[str]:
    return [
        "| protocol | generator | calls in flight | digits per call | req/s | images/s | p50 ms | p99 ms "
        "| errors | request bytes |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(_row(cell) for cell in cells),
    ]


def _ratio(ours: Load, theirs: Load) -> str:
    if theirs.requests_per_second <= 0:
        return "-"
    return f"{ours.requests_per_second / theirs.requests_per_second:.2f}×"


def _http_generators(medians: Medians) -> list[str]:
    return sorted({generator for protocol, generator, _, _ in medians if protocol != "grpc"})


def _ratios(medians: Medians) -> list[str]:
    cases = sorted({(images, connections) for _, _, connections, images in medians})
    lines = [
        "| digits per call | calls in flight | HTTP generator | gRPC req/s | ÷ v2 JSON | ÷ v2 binary "
        "| ÷ /predict | p50 saved vs v2 JSON | p50 saved vs v2 binary |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for images, connections in cases:
        ours = medians[("grpc", GRPC_GENERATOR, connections, images)]
        for generator in _http_generators(medians):
            theirs = {other: medians[(other, generator, connections, images)] for other in OTHERS}
            ratios = " | ".join(_ratio(ours, theirs[other]) for other in OTHERS)
            lines.append(
                f"| {images} | {connections} | {generator} | {ours.requests_per_second:,.0f} | {ratios} "
                f"| {theirs['v2-json'].p50_ms - ours.p50_ms:+.2f} ms "
                f"| {theirs['v2-binary'].p50_ms - ours.p50_ms:+.2f} ms |"
            )
    return lines


def _per_request(medians: Medians, connections: list[int]) -> list[str]:
    """What one call costs less over gRPC: its latency alone, and the server's time per call at the
    top concurrency (1 ÷ req/s), against each HTTP protocol as each generator drove it."""
    low, high = min(connections), max(connections)
    ours_low = medians[("grpc", GRPC_GENERATOR, low, 1)]
    ours_high = medians[("grpc", GRPC_GENERATOR, high, 1)]
    lines = []
    for other in ("v2-json", "v2-binary"):
        for generator in _http_generators(medians):
            theirs_low = medians[(other, generator, low, 1)]
            theirs_high = medians[(other, generator, high, 1)]
            rates = (theirs_high.requests_per_second, ours_high.requests_per_second)
            per_call = 1e6 / rates[0] - 1e6 / rates[1] if min(rates) > 0 else float("nan")
            lines.append(
                f"- against {NAMES[other]} ({generator}): "
                f"{(theirs_low.p50_ms - ours_low.p50_ms) * 1000:+,.0f} µs of p50 latency at {low} in "
                f"flight; {per_call:+,.0f} µs per call at {high} in flight."
            )
    return lines


def render_model(title: str, cells: list[Cell], args: argparse.Namespace) -> str:
    medians = {(c.protocol, c.generator, c.connections, c.images): c.median() for c in cells}
    return "\n".join(
        [
            f"## {title}",
            "",
            *_table(cells),
            "",
            "gRPC's req/s over each HTTP protocol's as each HTTP generator drove it (above 1: gRPC "
            "serves more), and how much lower gRPC's p50 is:",
            "",
            *_ratios(medians),
            "",
            "What gRPC saves per one-digit call (positive: gRPC costs less):",
            "",
            *_per_request(medians, args.connections),
        ]
    )


def render(runs: list[tuple[str, list[Cell]]], args: argparse.Namespace, cpus: int) -> str:
    header = [
        "# gRPC against HTTP",
        "",
        f"One service ({args.workers} worker{'s' if args.workers > 1 else ''}) with both ports on "
        f"127.0.0.1; {cpus} CPUs, shared by the service, the load generator and whatever else ran. "
        f"Each cell runs {args.seconds} s"
        + (f" or {args.calls} calls" if args.calls else "")
        + f" after a {args.warmup:g} s warm-up; the median of {args.rounds} "
        f"round{'s' if args.rounds > 1 else ''}, each round starting at another protocol. A call "
        "carries test digit 128 (a batch: test digits from 128 on) as a raw UINT8 tensor (gRPC, v2 "
        "binary), JSON numbers (v2 JSON) or a PNG (/predict; a batch as one .npy array to "
        "/predict/batch); answers are read as bytes, unparsed.",
        "",
        "Generators: gRPC by grpc.aio (one channel for every call in flight, grpc's C core "
        "beneath); HTTP by asyncio (HTTP/1.1 on asyncio streams, a keep-alive connection per call "
        "in flight, prepared bytes: the least Python can spend per request, gRPC's counterpart), "
        "by httpx (a pooled connection per call in flight, as an application would call) and by wrk "
        "(C, as in the other benchmarks). The generators differ in cost; each ratio names the one "
        f"that drove HTTP. The batch rows stop at {max(args.batch_connections)} in flight: "
        f"{max(args.connections)} × {args.batch} digits would pass the service's queue "
        "(`MNIST_BATCH_QUEUE_SIZE`) and measure its load shedding instead.",
        "",
        "Rerun (the store holding the versions, the folder of the MNIST files):",
        "",
        "```sh",
        command(args),
        "```",
    ]
    body = [render_model(title, cells, args) for title, cells in runs]
    return "\n".join(header) + "\n\n" + "\n\n".join(body) + "\n"
