"""The correction loop measured offline: does fine-tuning on users' corrections fix a population the
model was not trained for, without costing MNIST?

python -m bench.loop_offline --data-dir data/mnist

1. Trains the "current" model: `mnist-train --preset cnn --limit 20000 --epochs 3` (a short
   version of the recipe).
2. Draws typeset digits (`training.populations`): a "corrected" part, written as a corrections
   file with its true labels as users would correct them, and an "unseen" part, never trained on.
3. Fine-tunes the current model on the corrections, `--fine-tune-from 1 --feedback-file FILE`, twice: at
   the preset's precision, and as on a CPU without bfloat16 instructions (ONEDNN_MAX_CPU_ISA=AVX2,
   `--precision float32`, since mixed bfloat16 crawls there). Each is gated against the current model.
4. Reports accuracy on the unseen part and on MNIST's test set before and after, the corrections
   used, each fine-tune's wall time with the load average beside it, and the gate's verdict.

Writes bench/results/loop-offline.md and .json.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.serving.runtimes import OnnxForward
from bench.report import write_results
from model_store.forward import ONNX_FILE
from model_store.store import ModelStore
from training.feedback import save_corrections
from training.populations import draw
from training.quantize import outputs

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m bench.loop_offline"
RESULTS = ROOT / "bench" / "results"
# (name, extra environment, extra arguments) of each fine-tune.
FINE_TUNES: tuple[tuple[str, dict[str, str], list[str]], ...] = (
    ("preset precision (mixed bfloat16)", {}, []),
    ("AVX2 only, float32", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, ["--precision", "float32"]),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    parser.add_argument("--limit", type=int, default=20000, help="MNIST images the current model trains on")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the current model")
    parser.add_argument("--corrections", type=int, default=600, help="typeset digits users correct")
    parser.add_argument("--unseen", type=int, default=2000, help="typeset digits never trained on")
    parser.add_argument("--out", type=Path, default=RESULTS / "loop-offline.md")
    return parser.parse_args(argv)


def train(store: Path | str, data_dir: Path, arguments: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One `mnist-train` run, niced, in its own process (so the environment applies to it alone)."""
    command = [sys.executable, "-m", "training.train", "--preset", "cnn", "--store", str(store)]
    command += ["--data-dir", str(data_dir), "--no-download", "--verbose", "0", *arguments]
    load_before, started = os.getloadavg()[0], time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        ["nice", *command], env=os.environ | env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # On a shared machine the wall time says little alone; the CPU time is what an idle one spends.
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if result.returncode not in (0, 1):
        sys.exit(f"{PROG}: {' '.join(command)} failed:\n{result.stderr[-3000:]}")
    # As a user would type it: no temporary folders.
    shown = [part.replace(str(store), "models").replace(str(data_dir), "data/mnist") for part in arguments]
    shown = [str(Path(part).name) if part.endswith(".npz") else part for part in shown]
    variables = "".join(f"{name}={value} " for name, value in env.items())
    return {
        "command": f"{variables}mnist-train --preset cnn " + " ".join(shown),
        "wall_seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "exit": result.returncode,
    }


def accuracy(store: ModelStore, version: int, images: np.ndarray, labels: np.ndarray) -> float:
    metadata = store.read_metadata(version)
    forward = OnnxForward((store.version_path(version) / ONNX_FILE).read_bytes())
    return float(np.mean(outputs(forward, images, metadata.input).logits.argmax(axis=1) == labels))


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    store = ModelStore(work / "store")
    current = train(store.root, args.data_dir, ["--limit", str(args.limit), "--epochs", str(args.epochs)], {})
    unseen, corrected = draw("unseen", args.unseen), draw("corrected", args.corrections)
    corrections = work / "corrections.npz"
    ids = [f"typeset-{i}" for i in range(len(corrected.labels))]
    save_corrections(corrections, corrected.images, corrected.labels, ids, version=1)
    rows = [
        {
            "name": "current",
            "version": 1,
            **current,
            "unseen": accuracy(store, 1, unseen.images, unseen.labels),
            "mnist": store.read_metadata(1).evaluation.accuracy,
        }
    ]
    for name, env, extra in FINE_TUNES:
        before = set(store.versions())
        run = train(
            store.root,
            args.data_dir,
            ["--fine-tune-from", "1", "--feedback-file", str(corrections), "--gate-against", "1", *extra],
            env,
        )
        (version,) = set(store.versions()) - before
        metadata = store.read_metadata(version)
        assert metadata.gate is not None and metadata.training.feedback is not None
        rows.append(
            {
                "name": name,
                "version": version,
                **run,
                "fit_seconds": metadata.training.train_seconds,
                "unseen": accuracy(store, version, unseen.images, unseen.labels),
                "mnist": metadata.evaluation.accuracy,
                "gate": metadata.gate.model_dump(mode="json"),
                "feedback": metadata.training.feedback.model_dump(mode="json"),
            }
        )
    return {
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "cpu_count": os.cpu_count(),
        "runs": rows,
    }


def points(value: float) -> str:
    return f"{100 * value:.2f} %"


def render(result: dict[str, Any]) -> str:
    current, *tuned = result["runs"]
    feedback = tuned[0]["feedback"]
    lines = [
        "# The correction loop, measured offline",
        "",
        "Written by `python -m bench.loop_offline`. The current model is a short `cnn` run; users correct "
        "typeset digits (`training.populations`), a style MNIST lacks; the model is fine-tuned on the "
        "corrections and gated against the current model. Accuracy on the unseen part is over typeset "
        "digits never in the corrections file.",
        "",
        f"Corrections: {feedback['examples']} ({feedback['trained_on']} trained on, each "
        f"{feedback['repeats']} times an epoch, {points(feedback['share_of_epoch'])} of its digits; "
        f"{feedback['held_out']} held out). Unseen part: {result['arguments']['unseen']} digits. "
        f"{result['cpu_count']} cores, shared with other work: the load average is beside each wall time. "
        "CPU is the run's user and system time on both cores together, what it needs whatever the load; "
        "on an idle machine its wall time lies between half of that and all of it.",
        "",
        "| model | unseen typeset digits | error | MNIST test | wall (load before/after) | CPU | model.fit "
        "| gate |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["runs"]:
        gate = row.get("gate")
        verdict = "-" if gate is None else ("passed" if gate["passed"] else "rejected")
        fit = f"{row['fit_seconds']:.0f} s" if "fit_seconds" in row else "-"
        load = f"{row['load_before']:.1f}/{row['load_after']:.1f}"
        lines.append(
            f"| {row['name']} (v{row['version']}) | {points(row['unseen'])} | {points(1 - row['unseen'])} "
            f"| {points(row['mnist'])} | {row['wall_seconds']:.0f} s ({load}) | {row['cpu_seconds']:.0f} s "
            f"| {fit} | {verdict} |"
        )
    lines += ["", "The gate's reasons:", ""]
    lines += [f"- {row['name']}: {row['gate']['reason']}" for row in tuned]
    lines += ["", "Commands:", ""]
    lines += [f"- `{row['command']}`" for row in result["runs"]]
    lines.append("")
    error_before = 1 - current["unseen"]
    lines.append(
        "Error on the unseen part: "
        + ", ".join(
            f"{row['name']} {points(1 - row['unseen'])} ({(1 - row['unseen']) / error_before:.2f}x)"
            for row in tuned
        )
        + f" against {points(error_before)} before."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="loop-offline-") as work:
        result = measure(args, Path(work))
    write_results(args.out, result, render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
