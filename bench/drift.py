"""Input drift: how often each candidate statistic cries wolf on MNIST, how surely and how soon it sees
photographed uploads, corrupted digits and non-digits.

python -m bench.drift --data-dir data/mnist [--store models] [--window 100 200]

Every candidate (`bench.drift_candidates`) is fitted and calibrated on the same held-out training
digits a published version keeps aside (5,000, the training seed's split), its threshold the 99th
percentile over in-distribution windows. Then, for each window size:

- false alarms: the share of random windows of MNIST test digits over the threshold; and the share
  of windows of consecutive test digits over it (the file keeps each group of writers together, so
  these are one population's handwriting: a change of writers, not broken input);
- detection: the share of windows over it when the whole window (`all`), or a quarter of it
  (`quarter`), comes from an out-of-distribution set: uploads rendered as photographs and read back
  through the service's normalisation, each of MNIST-C's fifteen corruptions, the seven non-digit
  families;
- images to detect: a full window of test digits, then one set's images replacing the oldest, the
  statistic computed every `--step` images as the service does every few seconds: the median number
  of new images until it crosses the threshold;
- the cost of one statistic over a window of digits (for the top probability, the forward pass too).

With `--store`, the served version's model adds the top-probability candidate. Writes
bench/results/drift.md and drift.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.drift_candidates import Candidate, Probabilities, candidates

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m bench.drift"
HOLDOUT = 5000  # training's default --holdout: what a published version calibrates on
SEED = 7
UPLOADS = 600
CORRUPTED_PER_FAMILY = 200
NON_DIGITS_PER_FAMILY = 100


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    parser.add_argument("--store", type=Path, default=None, help="adds the top-probability candidate")
    parser.add_argument("--name", default=os.environ.get("MNIST_MODEL_NAME", "mnist"))
    parser.add_argument("--version", default=None, help="the version whose model is used (default: newest)")
    parser.add_argument("--window", type=int, nargs="+", default=[100, 200], help="window sizes, in images")
    parser.add_argument("--windows", type=int, default=500, help="in-distribution windows, and calibration's")
    parser.add_argument("--ood-windows", type=int, default=50, help="windows per set or family")
    parser.add_argument("--trials", type=int, default=10, help="streams per set for the images to detect")
    parser.add_argument("--step", type=int, default=10, help="new images between two statistics")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if min(args.window) < 8 or args.windows < 100 or args.ood_windows < 1 or args.trials < 1 or args.step < 1:
        parser.error("windows of at least 8 images, at least 100 windows, positive counts")
    return args


def out_of_distribution(test: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """The three sets, each a dict of families, all made from MNIST test digits with fixed seeds."""
    from training.corruptions import MNIST_C
    from training.negatives import EVALUATION_SEED, draw
    from training.synthetic_photos import upload

    corrupted = test[:CORRUPTED_PER_FAMILY]
    return {
        "uploads": {"uploads": upload(test[:UPLOADS], np.random.default_rng([SEED, 1]))},
        "corruptions": {
            name: corrupt(corrupted, np.random.default_rng([SEED, 2, index]))
            for index, (name, corrupt) in enumerate(MNIST_C.items())
        },
        "non_digits": draw(EVALUATION_SEED, NON_DIGITS_PER_FAMILY, test),
    }


def share_over(candidate: Candidate, windows: list[np.ndarray]) -> float:
    return float(np.mean([candidate.statistic(window) > candidate.threshold for window in windows]))


def mixed_windows(
    inside: np.ndarray, outside: np.ndarray, window: int, share: float, count: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """`count` windows: `share` of each from `outside`, the rest from `inside`."""
    taken = round(window * share)
    return [
        np.concatenate(
            [
                outside[rng.choice(len(outside), taken, replace=taken > len(outside))],
                inside[rng.choice(len(inside), window - taken, replace=False)],
            ]
        )
        for _ in range(count)
    ]


def images_to_detect(
    candidate: Candidate, inside: np.ndarray, outside: np.ndarray, window: int, args: argparse.Namespace
) -> float | None:
    """Median new images, over the trials, until the statistic crosses the threshold (None: not
    within one window in half of the trials)."""
    rng = np.random.default_rng(SEED)
    found = []
    for _ in range(args.trials):
        current = inside[rng.choice(len(inside), window, replace=False)].copy()
        arriving = outside[rng.choice(len(outside), window, replace=window > len(outside))]
        detected = float("inf")
        for new in range(args.step, window + args.step, args.step):
            current[: min(new, window)] = arriving[: min(new, window)]
            if candidate.statistic(current) > candidate.threshold:
                detected = min(new, window)
                break
        found.append(detected)
    median = float(np.median(found))
    return median if np.isfinite(median) else None


def measure(
    candidate: Candidate,
    test: np.ndarray,
    sets: dict[str, dict[str, np.ndarray]],
    window: int,
    args: argparse.Namespace,
) -> dict[str, object]:
    rng = np.random.default_rng(SEED)
    inside = candidate.features(test)
    in_distribution = [inside[rng.choice(len(inside), window, replace=False)] for _ in range(args.windows)]
    false_alarms = share_over(candidate, in_distribution)
    # MNIST's files keep each group of writers together: consecutive digits are one population's.
    consecutive = [inside[start : start + window] for start in range(0, len(inside) - window + 1, window)]
    # The cost the service pays: features from the window's digits, then the statistic.
    timed = [test[rng.choice(len(test), window, replace=False)] for _ in range(20)]
    started = time.perf_counter()
    for digits in timed:
        candidate.statistic(candidate.features(digits))
    milliseconds = 1000 * (time.perf_counter() - started) / len(timed)
    result: dict[str, object] = {
        "threshold": candidate.threshold,
        "false_alarms": false_alarms,
        "consecutive_over": share_over(candidate, consecutive),
        "ms_per_window": round(milliseconds, 3),
    }
    for set_name, families in sets.items():
        per_family = {}
        for family, images in families.items():
            outside = candidate.features(images)
            per_family[family] = {
                "all": share_over(
                    candidate, mixed_windows(inside, outside, window, 1.0, args.ood_windows, rng)
                ),
                "quarter": share_over(
                    candidate, mixed_windows(inside, outside, window, 0.25, args.ood_windows, rng)
                ),
                "images_to_detect": images_to_detect(candidate, inside, outside, window, args),
            }
        result[set_name] = {"families": per_family, **summary(list(per_family.values()))}
    return result


def summary(families: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Means over families; images to detect is the median over them (None: most never detected)."""
    detect = [np.inf if f["images_to_detect"] is None else f["images_to_detect"] for f in families]
    median = float(np.median(detect))
    return {
        "all": float(np.mean([f["all"] for f in families])),
        "quarter": float(np.mean([f["quarter"] for f in families])),
        "images_to_detect": median if np.isfinite(median) else None,
    }


def model_probabilities(args: argparse.Namespace) -> tuple[Probabilities | None, str]:
    if args.store is None:
        return None, "no model (run with --store for the top-probability candidate)"
    from app.config import Settings
    from app.serving.model import ServingModel
    from model_store.store import ModelStore

    loaded = ModelStore(args.store, args.name).open(args.version)
    serving = ServingModel.compile(loaded, Settings().model_copy(update={"workers": 1}).runtime_choice())

    def probabilities(images: np.ndarray) -> np.ndarray:
        return np.concatenate([serving.forward(images[i : i + 500]) for i in range(0, len(images), 500)])

    return probabilities, f"version {loaded.version} (`{loaded.metadata.training.preset}`)"


def render(results: dict[int, dict[str, dict[str, object]]], model: str, args: argparse.Namespace) -> str:
    def pct(value: object) -> str:
        return f"{100 * float(value):.1f} %"  # type: ignore[arg-type]

    def images(value: object) -> str:
        return "not within a window" if value is None else f"{value:.0f}"

    lines = [
        "# Input drift: false alarms, detection and images to detect",
        "",
        f"Calibrated on {HOLDOUT:,} held-out training digits (seed {SEED}), threshold at the 99th "
        f"percentile of {args.windows} in-distribution windows; false alarms over {args.windows} windows "
        f"of MNIST test digits; detection over {args.ood_windows} windows per set or family (a whole "
        f"window, or a quarter of it, from the set); images to detect: median over {args.trials} "
        f"streams, the statistic every {args.step} images. Model: {model}. Command: "
        f"`{PROG} --window {' '.join(map(str, args.window))}{' --store STORE' if args.store else ''}`",
        "",
    ]
    for window, by_candidate in results.items():
        lines += [
            f"## Window of {window} digits",
            "",
            "| statistic | threshold | false alarms | consecutive digits over | uploads: all / quarter / "
            "images | corruptions (mean of 15) | non-digits (mean of 7) | ms per window |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, result in by_candidate.items():
            cells = [
                f"{result['threshold']:.4g}",
                pct(result["false_alarms"]),
                pct(result["consecutive_over"]),
            ]
            for set_name in ("uploads", "corruptions", "non_digits"):
                s = result[set_name]
                assert isinstance(s, dict)
                cells.append(f"{pct(s['all'])} / {pct(s['quarter'])} / {images(s['images_to_detect'])}")
            cells.append(f"{result['ms_per_window']:.2f}")
            lines.append(f"| {name} | {' | '.join(cells)} |")
        served = by_candidate["mean_shift"]
        lines += [
            "",
            f"The served statistic, family by family (window {window}):",
            "",
            "| set | family | all | quarter | images to detect |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for set_name in ("uploads", "corruptions", "non_digits"):
            s = served[set_name]
            assert isinstance(s, dict)
            for family, f in s["families"].items():
                cells = [set_name, family, pct(f["all"]), pct(f["quarter"]), images(f["images_to_detect"])]
                lines.append(f"| {' | '.join(cells)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from model_store.reporting import one_line_errors

    with one_line_errors(PROG):
        from model_store.mnist_data import load_split
        from training.splits import held_out_split

        held_out, _ = held_out_split(load_split(args.data_dir, "train"), HOLDOUT, SEED, None)
        test = load_split(args.data_dir, "test").images
        probabilities, model = model_probabilities(args)
        sets = out_of_distribution(test)
        results: dict[int, dict[str, dict[str, object]]] = {}
        for window in args.window:
            results[window] = {}
            for candidate in candidates(probabilities):
                candidate.fit(held_out.images, window, SEED, args.windows)
                results[window][candidate.name] = measure(candidate, test, sets, window, args)
                print(f"window {window}, {candidate.name}: done", file=sys.stderr, flush=True)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        page = render(results, model, args)
        (args.out_dir / "drift.md").write_text(page)
        (args.out_dir / "drift.json").write_text(json.dumps(results, indent=2) + "\n")
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
