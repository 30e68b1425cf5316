"""The verdict's cost: a version's whole answer with the exact and the approximate Mahalanobis score.

python -m bench.verdict --store models --version 1

The same `ServingModel` answers real MNIST test digits at batch 1, 8, 32 and 128 three ways, taking
turns in short rounds so that load from other processes falls on all of them alike: the forward pass
alone, `answer` (forward pass and verdicts) with the exact score, and `answer` with the low-rank
score of the version's `trust.approximate`. It runs as the service does: the runtime the settings
choose for one worker, BLAS on one thread. The page also gives the publish-time proof from the
metadata and how many of the 10,000 test digits the two scores judge differently. Writes
bench/results/verdict.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.runtimes import BATCHES, time_interleaved

if TYPE_CHECKING:
    from app.serving.model import ServingModel
    from model_store.trust import ApproximateScore

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m bench.verdict"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(os.environ.get("MNIST_MODEL_STORE", "models")))
    parser.add_argument("--name", default=os.environ.get("MNIST_MODEL_NAME", "mnist"))
    parser.add_argument("--version", default=None, help="the version to measure (default: newest)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per way and batch size")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "verdict.md")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error(f"argument --seconds: {args.seconds} is not a positive number of seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from model_store.reporting import one_line_errors

    with one_line_errors(PROG):
        from threadpoolctl import threadpool_limits

        from app.config import Settings
        from app.serving.model import ServingModel
        from model_store.mnist_data import load_split
        from model_store.store import ModelStore, ModelStoreError

        store = ModelStore(args.store, args.name)
        loaded = store.load(args.version)
        trust = loaded.metadata.trust
        if trust is None or trust.approximate is None:
            raise ModelStoreError(
                f"version {loaded.version} has no approximate score; fit one with "
                f"python -m training.calibrate_trust --version {loaded.version}"
            )
        runtime = Settings().model_copy(update={"workers": 1}).runtime_choice()
        serving = ServingModel.compile(loaded, runtime)
        exact = dataclasses.replace(serving, rule=trust.rule())
        approximate = dataclasses.replace(serving, rule=trust.approximate.rule)
        images = load_split(args.data_dir, "test").images
        load_before = os.getloadavg()
        with threadpool_limits(1, user_api="blas"):  # as the service runs the verdicts
            for way in (exact, approximate):
                way.warm_up()
            ways = {"forward": serving.forward, "exact": exact.answer, "approximate": approximate.answer}
            timings = {batch: time_interleaved(ways, images[:batch], args.seconds) for batch in BATCHES}
        differ = int((verdicts(exact, images) != verdicts(approximate, images)).sum())
        page = render(timings, trust.approximate, differ, serving, args, load_before)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(page)
        sys.stdout.write(page)
    return 0


def verdicts(serving: ServingModel, images: np.ndarray) -> np.ndarray:
    return np.concatenate([serving.answer(images[i : i + 500])[:, 11] for i in range(0, len(images), 500)])


def render(
    timings: dict[int, dict[str, float]],
    proof: ApproximateScore,
    differ: int,
    serving: ServingModel,
    args: argparse.Namespace,
    load_before: tuple[float, float, float],
) -> str:
    rank = proof.rule.rank
    lines = [
        "| batch | forward pass: img/s | answer, exact score: img/s | answer, rank "
        f"{rank}: img/s | approximate / exact |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for batch, seconds in timings.items():
        rates = {way: batch / s for way, s in seconds.items()}
        lines.append(
            f"| {batch} | {rates['forward']:,.0f} | {rates['exact']:,.0f} | {rates['approximate']:,.0f} "
            f"| {rates['approximate'] / rates['exact']:.2f}x |"
        )

    def points(value: float) -> str:
        return f"{100 * value:.2f} %"

    families = list(proof.exact.families)
    proof_lines = [
        "| score | MNIST test kept as digit | "
        + " | ".join(f"{f} flagged" for f in families)
        + " | all negatives flagged |",
        "| --- |" + " ---: |" * (len(families) + 2),
    ]
    for name, shares in (("exact", proof.exact), (f"rank {rank}", proof.approximate)):
        cells = [points(shares.digits_kept), *(points(shares.families[f]) for f in families)]
        proof_lines.append(f"| {name} | {' | '.join(cells)} | {points(shares.negatives_flagged)} |")
    load_after = os.getloadavg()
    facts = (
        f"`{serving.loaded.metadata.training.preset}` on {serving.runtime} ({serving.precision}), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, BLAS on one thread; "
        f"median of calls over {args.seconds:g} s per cell, the three ways taking turns; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after. Command: "
        f"`{PROG} --store STORE --version {serving.version} --seconds {args.seconds:g}`"
    )
    return "\n".join(
        [
            "# The verdict's cost: exact and approximate Mahalanobis score",
            "",
            facts,
            "",
            *lines,
            "",
            f"The publish-time proof (MNIST test set, evaluation draw of negatives): {proof.reason}; "
            f"{'used' if proof.passed else 'not used'} by the service. Ranks tried on the validation "
            f"data: {', '.join(map(str, proof.ranks_tried))}.",
            "",
            *proof_lines,
            "",
            f"The two scores' verdicts differ on {differ:,} of the 10,000 test digits.",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
