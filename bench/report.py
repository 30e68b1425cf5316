"""What bench/run.py measured, turned into ratios, targets, a markdown report and a plot.

Plain functions of the measurements (no timing, no servers), so tests can run them on real data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import ROOT, Load

RESULTS = ROOT / "bench" / "results"

MAX_BATCH = 128  # the default MNIST_BATCH_MAX_SIZE: the most images one forward pass holds
PEERS = ("bentoml", "litserve")
PRECISIONS = ("float32", "int8")
# The performance targets (docs/performance.md), for the precision served by default and for
# float32: `cnn`'s throughput at the top concurrency against the combined limit of HTTP and the
# float32 model; p50 at one connection above the empty endpoint; the peers; an upload's
# normalisation. Ours against the empty endpoint is reported as information, no longer a target:
# FastAPI stays the HTTP path.
COMBINED_LIMIT_TARGETS = {"cnn": 0.7}
LATENCY_TARGET_MS = 0.5
PEER_THROUGHPUT_TARGET = 3.0
PEER_P99_TARGET = 0.25
NORMALISATION_TARGET = 2.0
RSS_AFTER_PREDICTIONS = 200  # the worker's memory is read after this many single-image predictions

Sweep = dict[int, dict[int, Load]]  # workers -> connections -> load


@dataclass
class Scenarios:
    """The measurements of our service beyond the sweep (on its largest worker count)."""

    workers: int
    cold_start_seconds: float
    rss_mib_per_worker: list[float]
    batch_images: int  # images per .npy request to /predict/batch
    batch_images_per_second: float
    batch_errors: int
    batch_in_process_images_per_second: float  # the same batch through the forward pass, in process
    alone_c8: Load
    beside_large: Load  # a single image at c=8 beside two clients posting 10,000-image batches
    large_batches_done: int
    # At the top concurrency, one after the other: the native 28x28 PNG and a 112x112 dark-on-light
    # JPEG of the same digit, which takes the whole upload normalisation.
    native_upload: Load | None = None
    normalised_upload: Load | None = None

    @property
    def normalisation_cost(self) -> float | None:
        """A normalised upload's cost per request, in native uploads (target: at most 2)."""
        if self.native_upload is None or self.normalised_upload is None:
            return None
        return self.native_upload.requests_per_second / self.normalised_upload.requests_per_second


@dataclass
class PrecisionRun:
    """One serving precision of a version, measured in process and in one worker."""

    forward: dict[int, float]  # batch size -> images/s of ServingModel.forward
    answer: dict[int, float]  # batch size -> images/s of ServingModel.answer (forward + verdicts)
    rss_mib: float | None = None  # one worker's resident memory after RSS_AFTER_PREDICTIONS answers


@dataclass
class ModelRun:
    model: str  # e.g. "mnist v1 (seed preset)"
    preset: str
    sweeps: dict[str, Sweep]  # server -> its sweep at each worker count
    forward: dict[int, float]  # batch size -> images/s of ServingModel.forward, in process
    answer: dict[int, float]  # batch size -> images/s of ServingModel.answer (forward + verdicts)
    skipped: dict[str, str] = field(default_factory=dict)  # server -> why it did not run
    scenarios: Scenarios | None = None
    runtime: str = ""  # what ran ServingModel's forward pass (onnxruntime, tensorflow)
    # server -> req/s at the top concurrency in each round of `bench.run.take_turns` (ours, empty)
    turns: dict[str, list[float]] = field(default_factory=dict)
    # The precision `ours` serves (MNIST_PRECISION=auto); `forward` and `answer` above are its.
    precision: str = "float32"
    precisions: dict[str, PrecisionRun] = field(default_factory=dict)  # "float32", "int8"
    # The version's publish-time proof of its int8 export (the metadata's `int8` section), if any.
    int8_proof: dict[str, Any] | None = None


@dataclass
class Ratios:
    top: int  # the highest concurrency measured (64 by default)
    ours_over_empty: float
    forward_images_per_second: float
    forward_batch: int
    combined_limit: float
    ours_over_combined: float
    c1_overhead_ms: float | None  # ours' p50 minus the empty endpoint's, at 1 connection
    best_peer: str | None
    ours_over_peer: float | None
    ours_p99_over_peer_p99: float | None


@dataclass
class Target:
    name: str
    measured: str
    goal: str
    passed: bool


def best_workers(sweep: Sweep) -> int:
    """The worker count with the most requests per second at the highest concurrency."""
    top = max(next(iter(sweep.values())))
    return max(sweep, key=lambda workers: sweep[workers][top].requests_per_second)


def best(run: ModelRun, server: str) -> dict[int, Load]:
    sweep = run.sweeps[server]
    return sweep[best_workers(sweep)]


def combined_limit(empty_per_second: float, forward_per_second: float) -> float:
    """Requests per second if each paid the empty endpoint's HTTP cost and one image's share of the
    best forward pass, one after the other: 1 / (1/empty + 1/forward)."""
    return 1 / (1 / empty_per_second + 1 / forward_per_second)


def ours_servers(run: ModelRun) -> list[str]:
    """`ours` (the precision served by default), then the other precision pinned, if it ran."""
    return [server for server in ("ours", *(f"ours-{p}" for p in PRECISIONS)) if server in run.sweeps]


def ratios(run: ModelRun, server: str = "ours") -> Ratios:
    """`server` (one of ours_servers) against the empty endpoint, the peers, and the combined limit
    of HTTP and the float32 forward pass (the served one where float32 was not measured apart)."""
    ours, empty = best(run, server), best(run, "empty")
    top = max(ours)
    float32 = run.precisions["float32"].forward if "float32" in run.precisions else run.forward
    forward_batch = max(float32, key=float32.__getitem__)
    forward = float32[forward_batch]
    limit = combined_limit(empty[top].requests_per_second, forward)
    overhead = ours[1].p50_ms - empty[1].p50_ms if 1 in ours and 1 in empty else None
    peers = [peer for peer in PEERS if peer in run.sweeps]
    peer = max(peers, key=lambda p: best(run, p)[top].requests_per_second) if peers else None
    peer_load = best(run, peer)[top] if peer else None
    return Ratios(
        top=top,
        ours_over_empty=ours[top].requests_per_second / empty[top].requests_per_second,
        forward_images_per_second=forward,
        forward_batch=forward_batch,
        combined_limit=limit,
        ours_over_combined=ours[top].requests_per_second / limit,
        c1_overhead_ms=overhead,
        best_peer=peer,
        ours_over_peer=ours[top].requests_per_second / peer_load.requests_per_second if peer_load else None,
        ours_p99_over_peer_p99=ours[top].p99_ms / peer_load.p99_ms if peer_load else None,
    )


def turn_ratios(run: ModelRun) -> list[float]:
    """Ours over the empty endpoint in each round of taking turns: runs seconds apart, so the
    machine's slow and fast minutes touch both sides of each ratio alike."""
    ours, empty = run.turns.get("ours", []), run.turns.get("empty", [])
    return [mine / theirs for mine, theirs in zip(ours, empty, strict=True) if theirs]


def targets(run: ModelRun, found: Ratios, server: str = "ours") -> list[Target]:
    """The targets that apply to this run's preset (the others apply to every preset), for `server`;
    the upload normalisation is measured on `ours` alone."""
    result = []
    if run.preset in COMBINED_LIMIT_TARGETS:
        goal = COMBINED_LIMIT_TARGETS[run.preset]
        name = f"throughput at c={found.top}, ours / combined limit of float32"
        value = found.ours_over_combined
        result.append(Target(name, f"{value:.2f}x", f">= {goal}x", value >= goal))
    if found.c1_overhead_ms is not None:
        result.append(
            Target(
                "p50 at c=1 above the empty endpoint",
                f"{found.c1_overhead_ms:.2f} ms",
                f"<= {LATENCY_TARGET_MS} ms",
                found.c1_overhead_ms <= LATENCY_TARGET_MS,
            )
        )
    cost = run.scenarios.normalisation_cost if run.scenarios is not None and server == "ours" else None
    if cost is not None:
        result.append(
            Target(
                "cost per request of a 112x112 JPEG, in native 28x28 PNGs",
                f"{cost:.2f}x",
                f"<= {NORMALISATION_TARGET}x",
                cost <= NORMALISATION_TARGET,
            )
        )
    if found.ours_over_peer is not None and found.ours_p99_over_peer_p99 is not None:
        result.append(
            Target(
                f"throughput at c={found.top}, ours / {found.best_peer}",
                f"{found.ours_over_peer:.2f}x",
                f">= {PEER_THROUGHPUT_TARGET}x",
                found.ours_over_peer >= PEER_THROUGHPUT_TARGET,
            )
        )
        result.append(
            Target(
                f"p99 at c={found.top}, ours / {found.best_peer}",
                f"{found.ours_p99_over_peer_p99:.2f}",
                f"<= {PEER_P99_TARGET}",
                found.ours_p99_over_peer_p99 <= PEER_P99_TARGET,
            )
        )
    return result


def render_run(run: ModelRun) -> str:
    found = ratios(run)
    lines = [
        f"## {run.model}",
        "",
        f"`ours` serves {run.precision}, the precision MNIST_PRECISION=auto picks for this version"
        + (
            f"; {', '.join(f'`{s}`' for s in ours_servers(run)[1:])} the same service pinned to it."
            if len(ours_servers(run)) > 1
            else "."
        ),
        "Each server at 1 and 2 workers; the ratios use each one's best (most req/s at "
        f"c={found.top}, marked *).",
        "",
        "| server | workers | connections | req/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for server, sweep in run.sweeps.items():
        chosen = best_workers(sweep)
        for workers, by_connections in sweep.items():
            mark = "*" if workers == chosen and len(sweep) > 1 else ""
            for c, load in by_connections.items():
                lines.append(
                    f"| {server} | {workers}{mark} | {c} | {load.requests_per_second:,.0f} | "
                    f"{load.p50_ms:.2f} | {load.p99_ms:.2f} | {load.errors} |"
                )
    if run.skipped:
        lines += ["", *(f"- {server}: skipped, {reason}" for server, reason in run.skipped.items())]
    # The targets are the project's goals, not the reader's: docs/development.md lists them.
    lines += ["", *_ratio_lines(run, found)]
    lines += ["", "| batch size | " + " | ".join(str(size) for size in run.forward) + " |"]
    lines.append("| --- |" + " ---: |" * len(run.forward))
    lines.append("| forward, images/s | " + " | ".join(f"{v:,.0f}" for v in run.forward.values()) + " |")
    lines.append("| answer, images/s | " + " | ".join(f"{v:,.0f}" for v in run.answer.values()) + " |")
    lines += ["", *_precision_lines(run), *_scenario_lines(run.scenarios, run.forward), ""]
    return "\n".join(lines)


def _precision_of(run: ModelRun, server: str) -> str:
    return run.precision if server == "ours" else server.removeprefix("ours-")


def _ratio_lines(run: ModelRun, found: Ratios) -> list[str]:
    ours = best(run, "ours")
    lines = ["| ratio | " + " | ".join(f"c={c}" for c in ours) + " |", "| --- |" + " ---: |" * len(ours)]
    for other in ("empty", "naive", *PEERS, *ours_servers(run)[1:]):
        if other in run.sweeps:
            theirs = best(run, other)
            cells = [_times(ours[c].requests_per_second, theirs[c].requests_per_second) for c in ours]
            lines.append(f"| ours / {other} | " + " | ".join(cells) + " |")
    lines.append(
        "| ours p99 / p50 | " + " | ".join(f"{ours[c].p99_ms / ours[c].p50_ms:.1f}" for c in ours) + " |"
    )
    forward_of = "float32 " if "float32" in run.precisions else ""
    lines += [
        "",
        f"- forward: in-process images/s of `ServingModel.forward`, {forward_of}on "
        f"{run.runtime or 'its runtime'}, the best over batch sizes 1-{MAX_BATCH}: "
        f"{found.forward_images_per_second:,.0f} at batch {found.forward_batch}",
        f"- combined limit at c={found.top}: 1 / (1/empty + 1/forward) = {found.combined_limit:,.0f} "
        f"req/s; ours / combined limit = {found.ours_over_combined:.2f}x; ours / empty = "
        f"{found.ours_over_empty:.2f}x (information: FastAPI on uvicorn stays the HTTP path)",
    ]
    turns = turn_ratios(run)
    if turns:
        lines.append(
            f"- taking turns ({len(turns)} rounds at c={found.top}, ours and empty up together, one "
            f"after the other in each round): ours / empty = {statistics.median(turns):.2f}x, the median "
            f"of the rounds' {', '.join(f'{ratio:.2f}x' for ratio in turns)}"
        )
    if found.c1_overhead_ms is not None:
        lines.append(f"- p50 at c=1, ours minus empty: {found.c1_overhead_ms:.2f} ms")
    if found.best_peer is not None:
        lines.append(
            f"- against the better peer ({found.best_peer}) at c={found.top}: {found.ours_over_peer:.2f}x "
            f"the throughput, {found.ours_p99_over_peer_p99:.2f}x the p99"
        )
    return lines


def _precision_lines(run: ModelRun) -> list[str]:
    """float32 beside int8: the publish-time proof, the forward pass, the service, the memory."""
    measured = [p for p in PRECISIONS if p in run.precisions]
    if not measured:
        return []
    served = {p: next((s for s in ours_servers(run) if _precision_of(run, s) == p), None) for p in measured}
    header = " | ".join(f"{p}{' (served)' if p == run.precision else ''}" for p in measured)
    lines = ["| precision | " + header + " |", "| --- |" + " ---: |" * len(measured)]

    def row(name: str, cells: list[str]) -> None:
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    proof = run.int8_proof
    if proof is not None:
        for key, name in (
            ("accuracy", "test accuracy"),
            ("mnist_c_mean", "MNIST-C mean accuracy"),
            ("uploads", "uploads accuracy"),
            ("negatives_flagged", "negatives flagged"),
        ):
            row(name, [_percent(proof[p].get(key)) if p in proof else "-" for p in measured])
        row(
            "verdicts as float32's",
            [_percent(1.0 if p == "float32" else proof["verdict_agreement"]) for p in measured],
        )
    for size in (1, 8, 32, MAX_BATCH):
        row(
            f"forward, images/s at batch {size}",
            [_rate(run.precisions[p].forward.get(size)) for p in measured],
        )
    row(
        f"answer, images/s at batch {MAX_BATCH}",
        [_rate(run.precisions[p].answer.get(MAX_BATCH)) for p in measured],
    )
    for c in sorted({1, max(best(run, "ours"))}):
        loads = [best(run, s)[c] if s is not None and c in best(run, s) else None for s in served.values()]
        row(f"req/s at c={c}", [_rate(load.requests_per_second) if load else "-" for load in loads])
        row(f"p99 ms at c={c}", [f"{load.p99_ms:.2f}" if load else "-" for load in loads])
    row(
        f"worker RSS after {RSS_AFTER_PREDICTIONS} predictions, MiB",
        [f"{rss:.0f}" if (rss := run.precisions[p].rss_mib) is not None else "-" for p in measured],
    )
    lines.append("")
    if proof is not None:
        lines += [f"- int8 by default: {'yes' if proof['default'] else 'no'}, {proof['reason']}", ""]
    return lines


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _times(ours: float, theirs: float) -> str:
    """A throughput ratio; a server that answered nothing in the time (naive at high load) gives none."""
    return f"{ours / theirs:.2f}x" if theirs else "-"


def _scenario_lines(scenarios: Scenarios | None, forward: dict[int, float]) -> list[str]:
    if scenarios is None:
        return []
    s, batch = scenarios, scenarios.batch_images_per_second
    lines = [
        f"Our service at {s.workers} worker{'s' if s.workers > 1 else ''}:",
        "",
        f"- batch endpoint ({s.batch_images} images per .npy request, 2 connections): {batch:,.0f} images/s "
        f"= {batch / s.batch_in_process_images_per_second:.2f}x the in-process forward pass on the same "
        f"batch ({s.batch_in_process_images_per_second:,.0f} images/s); errors {s.batch_errors}",
        f"- cold start to ready: {s.cold_start_seconds:.2f} s",
        f"- RSS per worker: {s.rss_mib_per_worker} MiB",
    ]
    if s.native_upload is not None and s.normalised_upload is not None:
        native, normalised = s.native_upload, s.normalised_upload
        lines.append(
            f"- uploads that need the full normalisation: a 112x112 dark-on-light JPEG at "
            f"{normalised.requests_per_second:,.0f} req/s (p50 {normalised.p50_ms:.2f} ms) against the "
            f"native 28x28 PNG's {native.requests_per_second:,.0f} req/s (p50 {native.p50_ms:.2f} ms) "
            f"measured just before it"
        )
    if MAX_BATCH in forward:
        pass_ms = 1000 * MAX_BATCH / forward[MAX_BATCH]
        beside, alone = s.beside_large, s.alone_c8
        lines.append(
            f"- a single image beside 10,000-image batches (c=8, two clients posting them without pause, "
            f"{s.large_batches_done} done): p50 {beside.p50_ms:.2f} ms, p99 {beside.p99_ms:.2f} ms, "
            f"{beside.errors} errors; alone: p50 {alone.p50_ms:.2f} ms, p99 {alone.p99_ms:.2f} ms; one "
            f"forward pass of {MAX_BATCH} images takes {pass_ms:.2f} ms in process, so the p99 beside "
            f"them is {beside.p99_ms / pass_ms:.1f} passes"
        )
    return lines


def render(runs: list[ModelRun], header: str) -> str:
    return "\n".join([header, "", *(render_run(run) for run in runs)])


def dump(runs: list[ModelRun], header: str) -> str:
    return json.dumps({"header": header, "runs": [dataclasses.asdict(run) for run in runs]}, indent=1)


def load(text: str) -> tuple[list[ModelRun], str]:
    """The runs and header `dump` wrote (JSON turned the integer keys into strings)."""
    raw = json.loads(text)

    def loads(by_connections: dict[str, dict[str, float]]) -> dict[int, Load]:
        return {int(c): Load(**values) for c, values in by_connections.items()}  # type: ignore[arg-type]

    runs = []
    for run in raw["runs"]:
        scenarios = run["scenarios"]
        if scenarios is not None:
            loads_of = {
                key: Load(**scenarios[key])
                for key in ("alone_c8", "beside_large", "native_upload", "normalised_upload")
                if scenarios.get(key) is not None
            }
            scenarios = Scenarios(**(scenarios | loads_of))
        sweeps = {
            server: {int(workers): loads(by_c) for workers, by_c in sweep.items()}
            for server, sweep in run["sweeps"].items()
        }
        forward, answer = (
            {int(size): rate for size, rate in run[key].items()} for key in ("forward", "answer")
        )
        precisions = {
            name: PrecisionRun(
                {int(size): rate for size, rate in measured["forward"].items()},
                {int(size): rate for size, rate in measured["answer"].items()},
                measured.get("rss_mib"),
            )
            for name, measured in run.get("precisions", {}).items()
        }
        runs.append(
            ModelRun(
                run["model"],
                run["preset"],
                sweeps,
                forward,
                answer,
                skipped=run["skipped"],
                scenarios=scenarios,
                runtime=run.get("runtime", ""),
                turns=run.get("turns", {}),
                precision=run.get("precision", "float32"),
                precisions=precisions,
                int8_proof=run.get("int8_proof"),
            )
        )
    return runs, raw["header"]


def write(runs: list[ModelRun], header: str, out: Path) -> str:
    """latest.json (the measurements), latest.md and throughput.png; earlier runs live in git."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(dump(runs, header))
    report = render(runs, header)
    (out / "latest.md").write_text(report)
    plot(runs, out / "throughput.png")
    return report


def main(argv: list[str] | None = None) -> int:
    """Render latest.md and throughput.png again from a latest.json, without measuring again."""
    parser = argparse.ArgumentParser(prog="bench.report", description=main.__doc__)
    parser.add_argument("json", type=Path, nargs="?", default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    try:
        runs, header = load(args.json.read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.exit(1, f"bench.report: error: {args.json}: cannot read the measurements ({exc})\n")
    print(write(runs, header, args.json.parent))
    return 0


def plot(runs: list[ModelRun], path: Path) -> None:
    """Throughput against connections, one line per server at its best worker count, a panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.5), squeeze=False)
    for axis, run in zip(axes[0], runs, strict=True):
        for server, sweep in run.sweeps.items():
            workers = best_workers(sweep)
            loads = sweep[workers]
            axis.plot(
                list(loads),
                [load.requests_per_second for load in loads.values()],
                marker="o",
                label=f"{server} ({workers} worker{'s' if workers > 1 else ''})",
            )
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        connections = sorted({c for sweep in run.sweeps.values() for loads in sweep.values() for c in loads})
        axis.set_xticks(connections, [str(c) for c in connections])
        axis.set_xlabel("connections")
        axis.set_ylabel("requests / s")
        axis.set_title(run.model)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())


def write_results(out: Path, result: dict[str, Any], markdown: str) -> None:
    """A benchmark's report: `out` (markdown) beside its `.json` twin, and the markdown on stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(markdown)
