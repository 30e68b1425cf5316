"""How long a preset's training takes, on a CPU with native bfloat16 and on one without, from a
few hundred steps instead of a whole run.

python -m bench.training_time --preset cnn --steps 30 --out bench/results/training.json

Each measurement runs in a fresh process (oneDNN reads `ONEDNN_MAX_CPU_ISA` once, when TensorFlow
loads): the preset's recipe exactly as `mnist-train` fits it (the same split, corrupted batches,
outliers, network and optimizer), stopped after `--warmup` steps that are not timed (graph tracing,
oneDNN's kernel selection) and `--steps` that are. A CPU without bfloat16 instructions is this
CPU with oneDNN capped at AVX2. Three kinds:

- `bfloat16`: mixed bfloat16 with every ISA the CPU has (what `auto` trains in where it is native);
- `float32`: float32 with oneDNN capped at AVX2 (what `auto` trains in on an AVX2-only CPU);
- `bfloat16_emulated`: mixed bfloat16 capped at AVX2, what training in bfloat16 there would cost.

The fit's estimate is epochs x (steps per epoch x seconds per step + one validation pass). The
machine's load average before and after is recorded: other processes on the cores slow the steps.
`--epochs`, `--batch-size` and `--limit` measure a variant of the recipe the same way.

`--fine-tune N` measures `mnist-train --fine-tune-from ... --feedback` instead: the fine-tune's
recipe (FINE_TUNE_EPOCHS over FINE_TUNE_LIMIT MNIST images at a tenth of the learning rate) with N
users' corrections mixed in as training mixes them (typeset digits, `training.populations`, a
style MNIST lacks), from freshly built weights: starting from a version's weights changes no step's
cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.arguments import FINE_TUNE_EPOCHS, FINE_TUNE_LIMIT
from training.precision import cpu_flags

if TYPE_CHECKING:
    from training.feedback import Corrections

PROG = "python -m bench.training_time"
# kind -> (Keras dtype policy, the environment TensorFlow starts in)
KINDS: dict[str, tuple[str, dict[str, str]]] = {
    "bfloat16": ("mixed_bfloat16", {}),
    "float32": ("float32", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    "bfloat16_emulated": ("mixed_bfloat16", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "float32_native": ("float32", {}),
}
DEFAULT_KINDS = ("bfloat16", "float32", "bfloat16_emulated")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """In this process: `args.warmup` untimed and `args.steps` timed steps of the preset's fit."""
    import keras
    import numpy as np

    from model_store.mnist_data import load_split
    from model_store.preprocessing import to_model_input
    from training.feedback import mix_in
    from training.presets import PRESETS
    from training.splits import held_out_split, one_hot
    from training.train import dtype_policy, training_data

    preset = PRESETS[args.preset]
    defaults = preset.defaults
    limit = args.limit
    if args.fine_tune is not None:
        defaults = dataclasses.replace(
            defaults, epochs=FINE_TUNE_EPOCHS, learning_rate=defaults.learning_rate / 10
        )
        limit = limit or FINE_TUNE_LIMIT
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size}
    hp = dataclasses.replace(
        defaults, precision=args.precision, **{k: v for k, v in overrides.items() if v is not None}
    )
    keras.utils.set_random_seed(hp.seed)
    held_out, trained_on = held_out_split(load_split(args.data_dir, "train"), hp.holdout, hp.seed, limit)
    corrections = None
    if args.fine_tune is not None:
        feedback = mix_in(typeset_corrections(args.fine_tune), trained_on, hp.outliers > 0)
        trained_on, corrections = feedback.mixed, feedback.trained
    steps_per_epoch = -(-len(trained_on.labels) // hp.batch_size)
    ends: list[float] = []
    cpu_ends: list[float] = []

    class StepClock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
            ends.append(time.perf_counter())
            cpu_ends.append(time.process_time())
            if len(ends) > args.warmup + args.steps:
                self.model.stop_training = True

    with dtype_policy(hp.precision):
        model = preset.build(hp, steps_per_epoch)
        model.fit(**training_data(trained_on, hp, corrections), epochs=1, verbose=0, callbacks=[StepClock()])
        started = time.perf_counter()
        x_valid, y_valid = to_model_input(held_out.images), one_hot(held_out.labels)
        model.evaluate(x_valid, y_valid, batch_size=hp.batch_size, verbose=0)
        validation_seconds = time.perf_counter() - started
    timed = slice(args.warmup, args.warmup + args.steps + 1)
    seconds = float(np.diff(ends[timed]).mean())
    cpu_seconds = float(np.diff(cpu_ends[timed]).mean())
    return {
        "precision": hp.precision,
        "seconds_per_step": round(seconds, 4),
        "cpu_seconds_per_step": round(cpu_seconds, 4),
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "epochs": hp.epochs,
        "batch_size": hp.batch_size,
        "steps_per_epoch": steps_per_epoch,
        "validation_seconds": round(validation_seconds, 2),
        "estimated_fit_seconds": round(hp.epochs * (steps_per_epoch * seconds + validation_seconds)),
        # The steps' CPU time over the fit: what an otherwise idle machine spends, whatever the load.
        "estimated_fit_cpu_seconds": round(hp.epochs * steps_per_epoch * cpu_seconds),
    }


def typeset_corrections(count: int) -> Corrections:
    """`count` corrections as users' would be: typeset digits with their true labels."""
    import numpy as np

    from model_store.feedback_file import FeedbackExamples
    from training.feedback import corrections_from
    from training.populations import draw

    digits = draw("corrected", count)
    examples = FeedbackExamples(
        images=digits.images,
        labels=digits.labels.astype(np.uint8),
        prediction_ids=np.asarray([f"typeset-{i}" for i in range(count)]),
        versions=np.ones(count, np.int32),
        times=np.full(count, np.datetime64("2026-01-01T00:00", "ms")),
    )
    return corrections_from(examples, "", "typeset digits")


def measure_kind(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """`measure` in a child process with oneDNN capped as `kind` says."""
    precision, settings = KINDS[kind]
    unset = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS")
    env = {k: v for k, v in os.environ.items() if k not in unset} | settings
    steps = args.emulated_steps if kind == "bfloat16_emulated" else args.steps
    command = [sys.executable, "-m", "bench.training_time", "--child", precision, "--steps", str(steps)]
    command += ["--warmup", str(args.warmup), "--preset", args.preset, "--data-dir", str(args.data_dir)]
    for flag in ("epochs", "batch_size", "limit", "fine_tune"):
        if getattr(args, flag) is not None:
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{PROG}: {kind} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    result["environment"] = settings
    print(
        f"{kind}: {result['seconds_per_step']:.3f} s/step ({result['cpu_seconds_per_step']:.3f} s CPU), "
        f"fit ~{result['estimated_fit_seconds'] / 60:.1f} min",
        file=sys.stderr,
    )
    return result


def cpu_description() -> dict[str, Any]:
    model = next(
        (
            line.partition(":")[2].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    flags = cpu_flags()
    return {
        "model": model,
        "cores": len(os.sched_getaffinity(0)),
        "native_bfloat16": sorted(flags & {"avx512_bf16", "amx_bf16"}),
        "avx512f": "avx512f" in flags,
        "avx2": "avx2" in flags,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cnn")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    parser.add_argument("--steps", type=int, default=30, help="timed steps per kind (default 30)")
    parser.add_argument("--emulated-steps", type=int, default=10, help="timed steps of bfloat16_emulated")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument(
        "--kinds", default=",".join(DEFAULT_KINDS), help="comma-separated, of: " + ", ".join(KINDS)
    )
    parser.add_argument("--epochs", type=int, help="a variant of the recipe: this many epochs")
    parser.add_argument("--batch-size", type=int, help="a variant of the recipe: this batch size")
    parser.add_argument("--limit", type=int, help="a variant of the recipe: this many training images")
    parser.add_argument(
        "--fine-tune",
        type=int,
        metavar="N",
        help="the fine-tune's recipe with N users' corrections mixed in, as --fine-tune-from --feedback runs",
    )
    parser.add_argument(
        "--label", help="the results' name under `presets` (default: the preset's); name a variant here"
    )
    parser.add_argument("--out", type=Path, help="add the results to this JSON file (kept: other labels)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one measurement in this process
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        args.precision = args.child
        print(json.dumps(measure(args)))
        return 0
    kinds = args.kinds.split(",")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        sys.exit(f"{PROG}: error: unknown kind {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    load_before = os.getloadavg()
    results: dict[str, Any] = {kind: measure_kind(args, kind) for kind in kinds}
    label = args.label or args.preset
    results["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    command = " ".join([PROG, shlex.join(argv if argv is not None else sys.argv[1:])])
    report: dict[str, Any] = {"presets": {}}
    if args.out and args.out.exists():
        report = json.loads(args.out.read_text())
    # The file's command is the default recipe's; a variant's is kept beside its results.
    if label == args.preset:
        report["measured_with"] = command
    else:
        results["measured_with"] = command
    report["presets"].setdefault(label, {}).update(results)
    report["cpu"] = cpu_description()
    text = json.dumps(report, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
