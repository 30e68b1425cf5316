"""Write the measured numbers of the README and the docs from the result files, so the prose cannot
drift from the measurements.

    python scripts/result_pages.py                       # rewrite every generated region
    python scripts/result_pages.py --check               # exit 1 when a region is stale
    python scripts/result_pages.py --models-from models  # bench/results/models.json from a store

A page marks a generated region `<!-- generated: NAME -->...<!-- end generated -->` (inline or as
a block); RENDERERS says what each NAME holds. The sources, all in `bench/results/`: `latest.json`
(`bench.run`: throughput, latency, memory, the int8 proofs), `models.json` (the published
versions' metadata, summarised by `--models-from`), `training.json` (per-step training timings,
optional) and `image.md` (`bench.image`: the serving image). tests/test_result_pages.py fails when a
page is stale.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from bench.claims import DEFAULT_SERVED_PRECISION  # noqa: E402
from bench.report import ModelRun, best, load, ratios, targets  # noqa: E402

# The precision the default `cnn` serves, everywhere the docs say so, is bench/claims.py's (a test
# checks every default training path against it). The numbers follow it: the benchmark's `ours`
# column when the run served this precision, `ours-<precision>` when pinned.
CNN_SERVED_PRECISION = DEFAULT_SERVED_PRECISION
# The full image (`EXTRAS=train`) as `buildah images` reports it after its trim, from the build of
# tests/deploy/test_image.py; bench.image measures the serving image only (image.md).
FULL_IMAGE_GB = 2.08
PRESETS = ("seed", "cnn")
SEED_NETWORK = "the classic dense Keras MNIST example (784-1000-10, SGD)"
REGION = re.compile(r"(<!-- generated: ([\w-]+) -->)(.*?)(<!-- end generated -->)", re.DOTALL)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass
class Results:
    """Every result file, read once."""

    folder: Path = RESULTS

    @cached_property
    def runs(self) -> dict[str, ModelRun]:
        runs, _ = load((self.folder / "latest.json").read_text())
        return {run.preset: run for run in runs}

    @cached_property
    def header(self) -> str:
        return str(json.loads((self.folder / "latest.json").read_text())["header"])

    @cached_property
    def models(self) -> dict[str, dict[str, Any]]:
        return dict(json.loads((self.folder / "models.json").read_text())["presets"])

    @cached_property
    def precision_runs(self) -> list[dict[str, Any]]:
        return list(json.loads((self.folder / "models.json").read_text()).get("precision_runs", []))

    @cached_property
    def training(self) -> dict[str, Any] | None:
        path = self.folder / "training.json"
        return dict(json.loads(path.read_text())["presets"]) if path.is_file() else None

    @cached_property
    def loop_offline(self) -> dict[str, Any] | None:
        path = self.folder / "loop-offline.json"
        return json.loads(path.read_text()) if path.exists() else None

    @cached_property
    def loop(self) -> dict[str, Any] | None:
        path = self.folder / "loop.json"
        return json.loads(path.read_text()) if path.exists() else None

    @cached_property
    def test_suite(self) -> dict[str, Any] | None:
        path = self.folder / "test-suite.json"
        return json.loads(path.read_text()) if path.exists() else None

    @cached_property
    def serving_image_mb(self) -> float:
        """The serving image's size, the newest build `bench.image` measured (image.md's last column)."""
        for line in (self.folder / "image.md").read_text().splitlines():
            if line.startswith("| image (all layers) |"):
                return float(line.strip("| ").split("|")[-1])
        raise ValueError("image.md has no 'image (all layers)' row")

    @cached_property
    def cores(self) -> int:
        match = re.search(r"(\d+) CPUs", self.header)
        if match is None:
            raise ValueError("latest.json's header does not say how many CPUs the run had")
        return int(match.group(1))


def served_precision(preset: str) -> str:
    return CNN_SERVED_PRECISION if preset == "cnn" else "float32"


def served_server(run: ModelRun) -> str:
    """The benchmark's column for the precision the docs say the preset serves."""
    precision = served_precision(run.preset)
    return "ours" if run.precision == precision else f"ours-{precision}"


def other_server(run: ModelRun) -> str | None:
    """The other precision's column, if the run measured it."""
    flipped = "int8" if run.precision == "float32" else "float32"
    other = "ours" if served_server(run) != "ours" else f"ours-{flipped}"
    return other if other in run.sweeps else None


def precision_of(run: ModelRun, server: str) -> str:
    return run.precision if server == "ours" else server.removeprefix("ours-")


def percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def times(value: float) -> str:
    return f"{value:.2f}x"


def peer_ratios(run: ModelRun, server: str) -> dict[str, float]:
    """`server` at the top concurrency against each peer, the naive server and the empty endpoint."""
    ours = best(run, server)
    top = max(ours)
    return {
        other: ours[top].requests_per_second / best(run, other)[top].requests_per_second
        for other in ("bentoml", "litserve", "naive", "empty")
        if other in run.sweeps and best(run, other)[top].requests_per_second
    }


def worker_memory(results: Results) -> tuple[float, float]:
    """The least and most a serving worker held, over every measurement of the run (MiB)."""
    held = [
        mib
        for run in results.runs.values()
        for mib in [
            *(run.scenarios.rss_mib_per_worker if run.scenarios else []),
            *(p.rss_mib for p in run.precisions.values() if p.rss_mib is not None),
        ]
    ]
    return min(held), max(held)


# --- the regions ---------------------------------------------------------------------------------


def headline(results: Results) -> str:
    seed, cnn = results.runs["seed"], results.runs["cnn"]
    found = {preset: ratios(run, served_server(run)) for preset, run in results.runs.items()}
    worst_p99 = max(r.ours_p99_over_peer_p99 or 0 for r in found.values())
    return (
        f"{found['seed'].ours_over_peer:.1f}x BentoML's throughput on {SEED_NETWORK} and "
        f"{found['cnn'].ours_over_peer:.1f}x on the default CNN (served in "
        f"{served_precision(cnn.preset)}; `{seed.preset}` in float32), with at most {worst_p99:.2f}x "
        "their p99"
    )


def throughput(results: Results) -> str:
    lines = [
        "| model (precision served) | ours / BentoML | ours / LitServe | ours / `model.predict` per "
        "request | p99 ours / BentoML | ours / empty endpoint |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for preset in PRESETS:
        run = results.runs[preset]
        server = served_server(run)
        found, peers = ratios(run, server), peer_ratios(run, server)
        lines.append(
            f"| `{preset}` ({precision_of(run, server)}) | {times(peers['bentoml'])} | "
            f"{times(peers['litserve'])} | {peers['naive']:.0f}x | {found.ours_p99_over_peer_p99:.2f} | "
            f"{times(peers['empty'])} |"
        )
    return "\n" + "\n".join(lines) + "\n"


def cnn_precision(results: Results) -> str:
    run = results.runs["cnn"]
    served, other = served_server(run), other_server(run)
    proof = run.int8_proof or {}
    text = f"`cnn` serves {precision_of(run, served)} as the default paths train it"
    if other is not None:
        text += f"; in {precision_of(run, other)} it is {times(peer_ratios(run, other)['bentoml'])} BentoML"
    if proof:
        text += (
            f" (trained with `--robustness`, its 8-bit export's publish-time proof, "
            f"{percent(proof['int8']['accuracy'])} against float32's {percent(proof['float32']['accuracy'])} "
            f"and the same verdict on {percent(proof['verdict_agreement'])} of test digits, makes int8 "
            "its default)"
        )
    return text


def results_table(results: Results) -> str:
    lines = [
        "| model | ours / BentoML | p99 ours / BentoML | ours / LitServe | ours / combined limit | "
        "ours / empty | ours / naive |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for preset in PRESETS:
        run = results.runs[preset]
        for server, label in ((served_server(run), ""), (other_server(run), " pinned")):
            if server is None or (label and preset != "cnn"):
                continue
            found, peers = ratios(run, server), peer_ratios(run, server)
            full, naive = not label, f"{peers['naive']:.0f}x"
            lines.append(
                f"| `{preset}` ({precision_of(run, server)}{label}) | {times(peers['bentoml'])} | "
                f"{found.ours_p99_over_peer_p99:.2f} | {times(peers['litserve']) if full else ''} | "
                f"{times(found.ours_over_combined)} | {times(peers['empty']) if full else ''} | "
                f"{naive if full else ''} |"
            )
    return "\n" + "\n".join(lines) + "\n"


def int8_table(results: Results) -> str:
    """What int8 changes for `cnn`: the publish-time proof beside the same run's speed and memory."""
    run = results.runs["cnn"]
    proof = run.int8_proof or {}
    servers = {precision_of(run, s): s for s in (served_server(run), other_server(run)) if s is not None}
    columns = [p for p in ("float32", "int8") if p in proof and p in run.precisions]

    def row(name: str, cell: Callable[[str], str]) -> str:
        return f"| {name} | " + " | ".join(cell(p) for p in columns) + " |"

    def scores(p: str) -> dict[str, Any]:
        return dict(proof[p])

    def top(p: str) -> Any:
        loads = best(run, servers[p])
        return loads[max(loads)]

    agreement = {"float32": 1.0, "int8": proof.get("verdict_agreement", 0.0)}
    lines = [
        "| | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
        row("test accuracy", lambda p: percent(scores(p)["accuracy"])),
        row(
            "MNIST-C mean, uploads",
            lambda p: f"{percent(scores(p)['mnist_c_mean'])}, {percent(scores(p)['uploads'])}",
        ),
        row(
            "verdict as float32's, negatives flagged",
            lambda p: f"{percent(agreement[p])}, {percent(scores(p)['negatives_flagged'])}",
        ),
        row(
            "forward pass, images/s at batch 1 / 8 / 32 / 128",
            lambda p: " / ".join(f"{run.precisions[p].forward[size]:,.0f}" for size in (1, 8, 32, 128)),
        ),
        row(
            "`/predict` at 64 connections, req/s and p99",
            lambda p: f"{top(p).requests_per_second:,.0f}, {top(p).p99_ms:.1f} ms" if p in servers else "",
        ),
        row("a worker's memory after 200 predictions", lambda p: f"{run.precisions[p].rss_mib:.0f} MiB"),
    ]
    if "size_bytes" in proof:
        lines.append(f"\n`model.int8.onnx` is {proof['size_bytes'] / 1e6:.1f} MB.")
    return "\n" + "\n".join(lines) + "\n"


def targets_table(results: Results) -> str:
    """The goals `bench.report` checks, for each preset at the precision it serves."""
    lines = ["| preset (precision) | target | goal | measured | met |", "| --- | --- | ---: | ---: | --- |"]
    for preset in PRESETS:
        run = results.runs[preset]
        server = served_server(run)
        for target in targets(run, ratios(run, server), server):
            lines.append(
                f"| `{preset}` ({precision_of(run, server)}) | {target.name} | {target.goal} | "
                f"{target.measured} | {'yes' if target.passed else 'no'} |"
            )
    return "\n" + "\n".join(lines) + "\n"


def presets_table(results: Results) -> str:
    lines = [
        "| preset | network | clean accuracy | MNIST-C mean | uploads | training (`model.fit`) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    networks = {
        "cnn": "paper removal + 4 conv layers, trained on corrupted digits and non-digits",
        "seed": f"{SEED_NETWORK}, 50 epochs",
    }
    for preset in ("cnn", "seed"):
        card = results.models[preset]
        name = f"`{preset}` (default)" if preset == "cnn" else f"`{preset}`"
        lines.append(
            f"| {name} | {networks[preset]} | {percent(card['accuracy'])} ({card['correct']:,}) | "
            f"{percent(card['mnist_c_mean'])} | {percent(card['uploads'])} | "
            f"{training_time(results, preset)} |"
        )
    return "\n" + "\n".join(lines) + "\n"


def cnn_other_precision(results: Results) -> str:
    """The `cnn`'s recipe trained in the precision the published version did not train in."""
    runs = [run for run in results.precision_runs if run["preset"] == "cnn"]
    if not runs:
        return "not measured yet"
    run = runs[-1]
    return (
        f"{percent(run['accuracy'])} ({run['correct']:,} / 10,000) trained in {run['precision']}, at seed "
        f"{run['seed']}, as `auto` trains it on a CPU without bfloat16"
    )


def prediction_log_cost(results: Results) -> str:
    """The log's throughput against the log off, per database, from bench.prediction_log's report."""
    ratios = {}
    for line in (results.folder / "prediction-log.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("| ").split("|")]
        if cells[0] in ("sqlite", "postgresql"):
            ratios[cells[0]] = cells[-1]
    return f"{ratios['sqlite']} on SQLite and {ratios['postgresql']} on PostgreSQL"


def training_time(results: Results, preset: str) -> str:
    """The published version's `model.fit` seconds (per-step timings on other CPUs: training_steps)."""
    return f"{results.models[preset]['train_seconds']:.0f} s"


# bench.training_time's kinds of run, as the training page names them, in the order it lists them.
TRAINING_KINDS = {
    "bfloat16": "mixed bfloat16, CPU with native bfloat16 (what `auto` picks there)",
    "float32_native": "float32, the same CPU",
    "float32": "float32, oneDNN capped at AVX2 (what `auto` picks on an AVX2-only CPU)",
    "bfloat16_emulated": "mixed bfloat16 emulated (TensorFlow's own kernels, no bfloat16 instructions)",
}


def training_steps(results: Results) -> str:
    """The full `cnn` recipe's steps timed in each kind of run, and the whole fit in CPU time."""
    timed = (results.training or {}).get("cnn")
    if not timed:
        return "\nPer-step training timings are not measured yet.\n"
    first = next(timed[kind] for kind in TRAINING_KINDS if kind in timed)
    lines = [
        f"The `cnn`'s {first['epochs'] * first['steps_per_epoch']:,} steps ({first['epochs']} epochs of "
        f"{first['steps_per_epoch']}), batch {first['batch_size']}:",
        "",
        "| precision, CPU | CPU seconds per step | the whole fit, in CPU time |",
        "| --- | ---: | ---: |",
    ]
    for kind, label in TRAINING_KINDS.items():
        if kind in timed:
            run = timed[kind]
            fit = minutes(run["estimated_fit_cpu_seconds"])
            lines.append(f"| {label} | {run['cpu_seconds_per_step']:.3f} | {fit} |")
    return "\n" + "\n".join(lines) + "\n"


def training_kinds(results: Results) -> str:
    """The default model's fit on either kind of CPU, for the README's quick start."""
    timed = (results.training or {}).get("cnn", {})
    if "bfloat16" not in timed or "float32" not in timed:
        return "\nabout 14 minutes on 2 cores\n"
    native = minutes(timed["bfloat16"]["estimated_fit_cpu_seconds"])
    avx2 = minutes(timed["float32"]["estimated_fit_cpu_seconds"])
    return (
        f"\nabout {native} of CPU where it has bfloat16 instructions, {avx2} in float32 on an AVX2-only CPU\n"
    )


FINE_TUNE_TIMING = "cnn fine-tune, 600 corrections"  # bench.training_time's label for the fine-tune


def fine_tune_time(results: Results) -> str:
    """The fine-tune's fit (bench.training_time) and whole run (bench.loop_offline) on either CPU."""
    timed = (results.training or {}).get(FINE_TUNE_TIMING)
    offline = results.loop_offline
    if not timed or not offline:
        return "\nThe fine-tune's timings are not measured yet.\n"
    native_run, avx2_run = offline["runs"][1], offline["runs"][2]
    rows = [("native bfloat16 (`auto` picks mixed bfloat16)", timed["bfloat16"], native_run)]
    rows.append(("oneDNN capped at AVX2 (`auto` picks float32)", timed["float32"], avx2_run))
    lines = [
        "",
        "| CPU | the fit (`python -m bench.training_time --fine-tune 600`) "
        "| the whole run, CPU time (`python -m bench.loop_offline`) | its wall time (load average) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, fit, run in rows:
        lines.append(
            f"| {label} | {fit['epochs'] * fit['steps_per_epoch']} steps, "
            f"{fit['estimated_fit_cpu_seconds']:.0f} s of CPU | {run['cpu_seconds']:.0f} s "
            f"| {run['wall_seconds']:.0f} s ({run['load_before']:.0f}) |"
        )
    return "\n".join(lines) + "\n"


def loop_headline(results: Results) -> str:
    """One live turn of the loop (bench.loop): the unseen population's error, MNIST, and the time."""
    run = results.loop
    if not run:
        return "the live loop is not measured yet"
    before, after = run["before"], run["after"]
    promoted = next(
        (seconds for event, seconds in run["timeline"].items() if event.startswith("rollout ended")), None
    )
    corrections = (run["feedback"] or {}).get("examples", 0)
    shift = 100 * (after["mnist"] - before["mnist"])
    text = (
        f"in one live run, typeset digits' error fell from {percent(1 - before['unseen'])} to "
        f"{percent(1 - after['unseen'])} after {corrections} corrections, MNIST test accuracy moved "
        f"{shift:+.2f} points"
    )
    if promoted is not None:
        text += f", and the service {run['rollout']['state'].replace('_', ' ')} the new version "
        text += f"{minutes(promoted)} after the first correction"
    return text


def suite_minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} minutes" if seconds >= 90 else f"{seconds:.0f} s"


def suite_total(results: Results) -> str:
    """The whole suite from a fresh clone (scripts/suite_time.py, from a run of .ci/run)."""
    suite = results.test_suite
    if not suite:
        return "not timed yet"
    return f"about {suite_minutes(suite['total_seconds'])} on {suite['cores']} cores"


def suite_fast(results: Results) -> str:
    suite = results.test_suite
    return f"about {suite_minutes(suite['fast']['seconds'])}" if suite else "not timed yet"


def suite_breakdown(results: Results) -> str:
    suite = results.test_suite
    if not suite:
        return "not timed yet"
    fast, slow = suite["fast"]["seconds"], suite["slow"]["seconds"]
    setup = suite["total_seconds"] - fast - slow
    return (
        f"about {suite_minutes(suite['total_seconds'])}: {suite_minutes(setup)} of install, "
        f"{suite_minutes(fast)} of fast lane ({suite['fast']['tests']:,} tests), "
        f"{suite_minutes(slow)} of slow lane ({suite['slow']['tests']:,} tests)"
    )


def minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def full_image(results: Results) -> str:
    return f"{FULL_IMAGE_GB:.2f} GB"


def serving_image(results: Results) -> str:
    return f"{results.serving_image_mb / 1000:.2f} GB"


def memory(results: Results) -> str:
    low, high = worker_memory(results)
    return f"{low:.0f}-{high:.0f} MiB"


def sizing(results: Results) -> str:
    lines = [
        f"| model (precision) | workers | req/s at 64 connections | req/s per core ({results.cores} cores) "
        "| p99 ms | images/s per core, `/predict/batch` | a worker's memory, MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for preset in PRESETS:
        run = results.runs[preset]
        server = served_server(run)
        sweep = run.sweeps[server]
        for workers, loads in sweep.items():
            top = loads[max(loads)]
            scenario = run.scenarios if server == "ours" and run.scenarios else None
            batch = (
                f"{scenario.batch_images_per_second / results.cores:,.0f}"
                if scenario and workers == scenario.workers
                else ""
            )
            rss = (
                f"{statistics.mean(scenario.rss_mib_per_worker):.0f}"
                if scenario and workers == scenario.workers
                else ""
            )
            lines.append(
                f"| `{preset}` ({precision_of(run, server)}) | {workers} | {top.requests_per_second:,.0f} | "
                f"{top.requests_per_second / min(workers, results.cores):,.0f} | {top.p99_ms:.1f} | "
                f"{batch} | {rss} |"
            )
    return "\n" + "\n".join(lines) + "\n"


def cold_start(results: Results) -> str:
    starts = [run.scenarios.cold_start_seconds for run in results.runs.values() if run.scenarios]
    return f"{min(starts):.1f}-{max(starts):.1f} s"


def served_precisions(results: Results) -> str:
    return ", ".join(f"`{preset}`: {served_precision(preset)}" for preset in ("cnn", "seed"))


def int8_card(preset: str) -> Callable[[Results], str]:
    """A model card's int8 row, from the publish-time proof the benchmark read."""

    def render(results: Results) -> str:
        proof = results.runs[preset].int8_proof
        if proof is None:
            return "no int8 export"
        float32, int8 = proof["float32"], proof["int8"]
        text = (
            f"{'the default' if proof['default'] else 'opt-in'}: {percent(int8['accuracy'])} against "
            f"float32's {percent(float32['accuracy'])}, the same verdict on "
            f"{percent(proof['verdict_agreement'])} of test digits, MNIST-C {percent(int8['mnist_c_mean'])}, "
            f"uploads {percent(int8['uploads'])}, negatives flagged {percent(int8['negatives_flagged'])}"
        )
        if not proof["default"]:
            text += f" ({str(proof['reason']).removeprefix('not the default: ')})"
        return text

    return render


def robust_headline(results: Results) -> str:
    card = results.models["cnn"]
    return (
        f"the default model keeps {100 * card['uploads']:.1f} % on such uploads and "
        f"{100 * card['mnist_c_mean']:.1f} % on average under MNIST-C's corruptions"
    )


RENDERERS: dict[str, Callable[[Results], str]] = {
    "served-precisions": served_precisions,
    "cnn-int8": int8_card("cnn"),
    "seed-int8": int8_card("seed"),
    "robust-headline": robust_headline,
    "headline": headline,
    "throughput": throughput,
    "cnn-precision": cnn_precision,
    "results": results_table,
    "int8": int8_table,
    "targets": targets_table,
    "presets": presets_table,
    "training-steps": training_steps,
    "training-kinds": training_kinds,
    "cnn-other-precision": cnn_other_precision,
    "prediction-log-cost": prediction_log_cost,
    "fine-tune-time": fine_tune_time,
    "loop-headline": loop_headline,
    "suite-total": suite_total,
    "suite-fast": suite_fast,
    "suite-breakdown": suite_breakdown,
    "cnn-fit": lambda results: training_time(results, "cnn"),
    "seed-fit": lambda results: training_time(results, "seed"),
    "full-image": full_image,
    "serving-image": serving_image,
    "memory": memory,
    "sizing": sizing,
    "cold-start": cold_start,
}


def card_renderers() -> dict[str, Callable[[Results], str]]:
    """One model card's published numbers, inline: `<preset>-accuracy`, `-mnist-c`, `-uploads`."""

    def accuracy(preset: str) -> Callable[[Results], str]:
        return lambda r: (
            f"**{percent(r.models[preset]['accuracy'])}** ({r.models[preset]['correct']:,} / 10,000)"
        )

    def share(preset: str, key: str) -> Callable[[Results], str]:
        return lambda r: percent(r.models[preset][key])

    found: dict[str, Callable[[Results], str]] = {}
    for preset in PRESETS:
        found[f"{preset}-accuracy"] = accuracy(preset)
        found[f"{preset}-mnist-c"] = share(preset, "mnist_c_mean")
        found[f"{preset}-uploads"] = share(preset, "uploads")
    return found


RENDERERS |= card_renderers()


def rewrite(text: str, results: Results) -> str:
    def region(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in RENDERERS:
            raise KeyError(f"unknown generated region {name!r}")
        return match.group(1) + RENDERERS[name](results) + match.group(4)

    return REGION.sub(region, text)


def regions(text: str) -> list[str]:
    return [match.group(2) for match in REGION.finditer(text)]


# --- models.json ---------------------------------------------------------------------------------


def summarise_store(store: Path, name: str = "mnist") -> dict[str, Any]:
    """The newest version of each preset in a store, as the README and the model cards quote it."""
    from model_store.store import ModelStore

    models = ModelStore(store, name)
    presets: dict[str, dict[str, Any]] = {}
    for version in sorted(models.versions()):
        metadata = models.read_metadata(version)
        robustness = metadata.robustness
        presets[metadata.training.preset] = {
            "version": version,
            "seed": metadata.training.hyperparameters.get("seed"),
            "train_samples": metadata.training.train_samples,
            "accuracy": metadata.evaluation.accuracy,
            "correct": metadata.evaluation.correct,
            "mnist_c_mean": robustness.mnist_c_mean if robustness else None,
            "worst_family": robustness.worst_family if robustness else None,
            "uploads": robustness.families.get("upload") if robustness else None,
            "train_seconds": round(metadata.training.train_seconds, 1),
        }
    return {"source": "the newest version of each preset in a published store", "presets": presets}


def summarise_precision_run(store: Path, name: str = "mnist") -> dict[str, Any]:
    """The newest version of a store that trained a preset in another precision than the published
    one (`auto` on a CPU without bfloat16, or `ONEDNN_MAX_CPU_ISA=AVX2` on one with it)."""
    from model_store.store import ModelStore

    models = ModelStore(store, name)
    metadata = models.read_metadata(models.versions()[-1])
    precision = metadata.training.precision
    return {
        "preset": metadata.training.preset,
        "precision": precision.precision if precision else metadata.training.hyperparameters["precision"],
        "reason": precision.reason if precision else None,
        "seed": metadata.training.hyperparameters.get("seed"),
        "train_samples": metadata.training.train_samples,
        "accuracy": metadata.evaluation.accuracy,
        "correct": metadata.evaluation.correct,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated region is stale")
    parser.add_argument("--models-from", type=Path, metavar="STORE", help="summarise this store first")
    parser.add_argument(
        "--precision-run-from",
        type=Path,
        metavar="STORE",
        help="add this store's newest version, trained in the other precision, to models.json first",
    )
    args = parser.parse_args(argv)
    if args.models_from is not None:
        summary = summarise_store(args.models_from)
        (RESULTS / "models.json").write_text(json.dumps(summary, indent=1) + "\n")
    if args.precision_run_from is not None:
        summary = json.loads((RESULTS / "models.json").read_text())
        summary["precision_runs"] = [summarise_precision_run(args.precision_run_from)]
        (RESULTS / "models.json").write_text(json.dumps(summary, indent=1) + "\n")
    results = Results()
    stale = []
    for page in PAGES:
        text = page.read_text()
        try:
            fresh = rewrite(text, results)
        except KeyError as exc:
            sys.stderr.write(f"{os.path.relpath(page, ROOT)}: {exc.args[0]}\n")
            return 1
        if fresh == text:
            continue
        if args.check:
            stale.append(os.path.relpath(page, ROOT))
        else:
            page.write_text(fresh)
    if stale:
        sys.stderr.write(f"stale: {', '.join(stale)}; run python scripts/result_pages.py\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
