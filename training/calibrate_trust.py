"""Fit and measure when to trust a trained model: temperature, out-of-distribution thresholds, table.

Everything is fitted on data never trained on and never tested on: the held-out training images and
a validation draw of negatives. The MNIST test set and an evaluation draw of negatives (another seed)
only measure. When the chosen method is the Mahalanobis distance, a cheaper low-rank approximation
of it is fitted the same way and proven against it (`training.approximate_trust`). `mnist-train`
calls `compute_trust` before publishing; to redo it for a published version (it rewrites that
version's trust files and metadata, and remeasures its int8 export with the new verdict rule):

python -m training.calibrate_trust --store models --version 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import keras
import numpy as np

from model_store.forward import penultimate
from model_store.mnist_data import MnistSplit
from model_store.preprocessing import to_model_input
from model_store.trust import (
    OOD_METHODS,
    RELIABILITY_DIAGRAM_FILE,
    TRUST_STATISTICS_FILE,
    TRUST_TABLE_FILE,
    ApproximateScore,
    OodMethod,
    Trust,
    TrustRule,
    VerdictShares,
    trust_files,
)
from model_store.verdict_rule import ClassStatistics, calibrated, ink_fraction, ood_score
from training import approximate_trust, negatives
from training.class_statistics import fit_class_statistics, low_rank_from_eigen, precision_eigen
from training.splits import held_out_split
from training.verdicts import (
    EVALUATION_PER_FAMILY,
    VALIDATION_PER_FAMILY,
    Measured,
    Outputs,
    flagged,
    measure,
)

# On held-out digits the out-of-distribution score may flag 0.4 %, and the ink check, the score and
# the confidence threshold together keep 99.2 %: a margin over the 99 % goal on the test set.
OOD_QUANTILE = 0.996
KEEP_TARGET = 0.992
INK_QUANTILE = 0.0005
STATISTICS_SAMPLES = 10_000


class FeatureReader:
    """Features and logits of a model for uint8 images; one Keras model, built once."""

    def __init__(self, model: keras.Model) -> None:
        self._features, last = penultimate(model)
        self._kernel = keras.ops.convert_to_numpy(last.kernel)
        self._bias = keras.ops.convert_to_numpy(last.bias)

    def __call__(self, images: np.ndarray) -> Outputs:
        x = to_model_input(images)
        features = np.concatenate(
            [self._features(x[i : i + 1000], training=False) for i in range(0, len(x), 1000)]
        )
        return Outputs(images, features @ self._kernel + self._bias, features)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of the true labels."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        probabilities = calibrated(logits, float(np.exp(log_t)))
        return float(-np.log(probabilities[np.arange(len(labels)), labels] + 1e-12).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> tuple[float, np.ndarray]:
    """Expected calibration error, and per confidence bin: (mean confidence, accuracy, count)."""
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    table = np.zeros((bins, 3))
    for b in range(bins):
        members = which == b
        if members.any():
            table[b] = confidence[members].mean(), correct[members].mean(), members.sum()
    ece = float((np.abs(table[:, 0] - table[:, 1]) * table[:, 2]).sum() / len(labels))
    return ece, table


def fit_rule(
    method: OodMethod,
    held_out: Outputs,
    temperature: float,
    statistics: ClassStatistics,
    rank: int | None = None,
) -> TrustRule:
    """Thresholds from held-out digits only: each check may flag a fixed small share of them.
    `rank`: fit them for the low-rank Mahalanobis score the statistics carry."""
    ink = ink_fraction(held_out.images)
    min_ink, max_ink = (float(q) for q in np.quantile(ink, [INK_QUANTILE, 1 - INK_QUANTILE]))
    inside = (ink >= min_ink) & (ink <= max_ink)
    scores = ood_score(method, held_out.logits, held_out.features, temperature, statistics, rank)
    threshold = float(np.quantile(scores[inside], OOD_QUANTILE))
    passing = inside & (scores <= threshold)
    # The confidence threshold spends what is left of the budget on the least confident answers.
    confidence = calibrated(held_out.logits[passing], temperature).max(axis=1)
    share = max(0.0, 1 - KEEP_TARGET * len(ink) / len(confidence))
    return TrustRule(
        temperature=temperature,
        method=method,
        ood_threshold=threshold,
        confidence_threshold=float(np.quantile(confidence, share)),
        min_ink=min_ink,
        max_ink=max_ink,
        rank=rank,
    )


def markdown_table(rows: dict[str, dict[str, float]], chosen: str) -> str:
    columns = list(next(iter(rows.values())))
    header = ["method", "MNIST test kept as digit", "error among kept"]
    header += [f"{name} flagged" for name in columns[2:-1]] + ["all negatives flagged"]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for method, row in rows.items():
        name = f"**{method}** (chosen)" if method == chosen else method
        cells = [f"{row['kept']:.2%}", f"{row['error']:.2%}"] + [f"{row[c]:.1%}" for c in columns[2:]]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n"


def cross_fitted_kept(
    digits: Outputs, temperature: float, statistics: ClassStatistics, rank: int | None
) -> float:
    """The share of held-out digits judged `digit` by the Mahalanobis rule fitted on the other half:
    the rule is fitted to keep a fixed share of the digits it is fitted on, so only digits it was
    not fitted on tell two scores apart."""
    halves = np.array_split(np.arange(len(digits.images)), 2)
    kept = [
        ~flagged(
            fit_rule("mahalanobis", digits.take(fit_on), temperature, statistics, rank),
            digits.take(judge_on),
            statistics,
        )
        for fit_on, judge_on in (halves, halves[::-1])
    ]
    return float(np.concatenate(kept).mean())


def approximate_score(
    statistics: ClassStatistics,
    exact: TrustRule,
    validation: Measured,
    evaluation: Measured,
) -> tuple[ApproximateScore, ClassStatistics] | None:
    """The smallest rank whose refitted rule keeps to `approximate_trust.decide` on the validation
    data (held-out digits, cross-fitted, and the validation draw), then the proof on the evaluation
    data (test digits, evaluation draw); and the statistics carrying that rank's factors. None when
    the features are too narrow for a saving."""
    eigenvalues, eigenvectors = precision_eigen(statistics)
    ranks = approximate_trust.candidate_ranks(len(eigenvalues))
    if not ranks:
        return None
    digits = validation[0]

    def on_validation(rule: TrustRule, carried: ClassStatistics) -> VerdictShares:
        shares = approximate_trust.shares(measure(rule, carried, *validation))
        kept = cross_fitted_kept(digits, rule.temperature, carried, rule.rank)
        return shares.model_copy(update={"digits_kept": kept})

    exact_validation = on_validation(exact, statistics)
    for rank in ranks:  # smallest first; the largest is measured even if it fails
        low_rank = low_rank_from_eigen(statistics.means, eigenvalues, eigenvectors, rank)
        candidate = statistics.with_low_rank(low_rank)
        rule = fit_rule("mahalanobis", digits, exact.temperature, candidate, rank)
        chosen, validation_reason = approximate_trust.decide(
            exact_validation, on_validation(rule, candidate), rank
        )
        if chosen:
            break
    exact_shares = approximate_trust.shares(measure(exact, statistics, *evaluation))
    approximate_shares = approximate_trust.shares(measure(rule, candidate, *evaluation))
    passed, reason = approximate_trust.decide(exact_shares, approximate_shares, rank)
    if not chosen:
        passed = False
        reason = f"no rank up to {rank} kept to the limits on the validation data: {validation_reason}"
    proof = ApproximateScore(
        rule=rule,
        ranks_tried=[r for r in ranks if r <= rank],
        exact=exact_shares,
        approximate=approximate_shares,
        passed=passed,
        reason=reason,
    )
    return proof, candidate


def error_floor(logits: np.ndarray, labels: np.ndarray, temperature: float, kept: float) -> float:
    """The error among the `kept` most confident test digits: the best any rule that ranks by
    calibrated confidence could do at that share, knowing the test labels. A bound, not a rule."""
    confidence = calibrated(logits, temperature).max(axis=1)
    most_confident = np.argsort(-confidence, kind="stable")[: round(kept * len(labels))]
    return float((logits[most_confident].argmax(axis=1) != labels[most_confident]).mean())


def plot_reliability(before: np.ndarray, after: np.ndarray, eces: tuple[float, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    for table, label, ece in ((before, "raw softmax", eces[0]), (after, "temperature scaled", eces[1])):
        used = table[:, 2] > 0
        ax.plot(table[used, 0], table[used, 1], marker="o", label=f"{label} (ECE {ece:.2%})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability on the MNIST test set")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def compute_trust(
    model: keras.Model,
    held_out: MnistSplit,
    trained_on: MnistSplit,
    test: MnistSplit,
    folder: Path,
) -> Trust:
    """Fit the verdict rule and measure it; writes the statistics, table and reliability diagram."""
    outputs_of = FeatureReader(model)
    on_validation, on_test = measured_sets(outputs_of, held_out, test)
    temperature, ece_before, ece_after = calibrate_temperature(on_validation, on_test, folder)
    training = outputs_of(trained_on.images[:STATISTICS_SAMPLES])
    statistics = fit_class_statistics(training.features, trained_on.labels[:STATISTICS_SAMPLES])
    rules = candidate_rules(on_validation[0], temperature, statistics)
    # The method is chosen on the validation draw of negatives, never on the evaluation draw.
    chosen = max(OOD_METHODS, key=lambda m: measure(rules[m], statistics, *on_validation)["negatives"])
    rows = {name: measure(rule, statistics, *on_test) for name, rule in rules.items()}
    approximate = None
    if chosen == "mahalanobis":
        proven = approximate_score(statistics, rules[chosen], on_validation, on_test)
        if proven is not None:
            approximate, statistics = proven
            rows[f"mahalanobis, rank {approximate.rule.rank}"] = measure(
                approximate.rule, statistics, *on_test
            )
    statistics.save(folder / TRUST_STATISTICS_FILE)
    table = write_table(rows, chosen, on_test, temperature, folder)
    return Trust(
        **rules[chosen].model_dump(),
        calibration_samples=len(held_out.labels),
        ece_before=ece_before,
        ece_after=ece_after,
        table=table,
        approximate=approximate,
    )


def measured_sets(
    outputs_of: FeatureReader, held_out: MnistSplit, test: MnistSplit
) -> tuple[Measured, Measured]:
    """What the rule is fitted on (the held-out digits, the validation draw of negatives) and what
    it is measured on (the test digits, the evaluation draw): outputs, labels, negatives."""
    on_validation = (
        outputs_of(held_out.images),
        held_out.labels,
        negative_outputs(outputs_of, negatives.VALIDATION_SEED, VALIDATION_PER_FAMILY, held_out.images),
    )
    on_test = (
        outputs_of(test.images),
        test.labels,
        negative_outputs(outputs_of, negatives.EVALUATION_SEED, EVALUATION_PER_FAMILY, test.images),
    )
    return on_validation, on_test


def negative_outputs(
    outputs_of: FeatureReader, seed: int, count: int, digits: np.ndarray
) -> dict[str, Outputs]:
    return {name: outputs_of(images) for name, images in negatives.draw(seed, count, digits).items()}


def calibrate_temperature(
    on_validation: Measured, on_test: Measured, folder: Path
) -> tuple[float, float, float]:
    """The temperature fitted on the held-out digits, and the test set's expected calibration
    error before and after it (drawn in the reliability diagram)."""
    (validation, labels, _), (testing, test_labels, _) = on_validation, on_test
    temperature = fit_temperature(validation.logits, labels)
    ece_before, before = reliability(calibrated(testing.logits, 1.0), test_labels)
    ece_after, after = reliability(calibrated(testing.logits, temperature), test_labels)
    plot_reliability(before, after, (ece_before, ece_after), folder / RELIABILITY_DIAGRAM_FILE)
    return temperature, ece_before, ece_after


def candidate_rules(
    validation: Outputs, temperature: float, statistics: ClassStatistics
) -> dict[str, TrustRule]:
    """One rule per out-of-distribution score, and the ink check alone for comparison."""
    rules: dict[str, TrustRule] = {m: fit_rule(m, validation, temperature, statistics) for m in OOD_METHODS}
    rules["ink check only"] = TrustRule(
        temperature=temperature,
        confidence_threshold=0.0,
        min_ink=rules["max_softmax"].min_ink,
        max_ink=rules["max_softmax"].max_ink,
    )
    return rules


def write_table(
    rows: dict[str, dict[str, float]], chosen: str, on_test: Measured, temperature: float, folder: Path
) -> str:
    """trust.md: every rule on the test set and each negative family, and the floor of any rule."""
    testing, labels, _ = on_test
    floor = error_floor(testing.logits, labels, temperature, rows[chosen]["kept"])
    table = markdown_table(rows, chosen) + (
        f"\nKeeping the same {rows[chosen]['kept']:.2%} of test digits, the most confident ones (ranked "
        f"by calibrated confidence, knowing the test labels) would still hold {floor:.2%} errors: the "
        "floor for any such rule with this network.\n"
    )
    (folder / TRUST_TABLE_FILE).write_text(table)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.calibrate_trust", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--store", type=Path, required=True, help="model store root")
    parser.add_argument("--name", default="mnist")
    parser.add_argument("--version", required=True, help="version to (re)compute trust for")
    parser.add_argument("--data-dir", type=Path, default=Path("data/mnist"), help="the four MNIST .gz files")
    args = parser.parse_args(argv)

    from model_store.mnist_data import load_split
    from model_store.store import ModelStore

    store = ModelStore(args.store, args.name)
    loaded = store.load(args.version)
    hp = loaded.metadata.training.hyperparameters
    if not hp.get("holdout"):
        print(
            f"error: version {loaded.version} was trained without a held-out split; retrain it",
            file=sys.stderr,
        )
        return 2
    train = load_split(args.data_dir, "train")
    held_out, trained_on = held_out_split(train, hp["holdout"], hp["seed"], hp.get("limit"))
    test = load_split(args.data_dir, "test")
    trust = compute_trust(loaded.model, held_out, trained_on, test, loaded.path)
    metadata = loaded.metadata.model_copy(
        update={"trust": trust, "files": loaded.metadata.files | trust_files()}
    )
    if metadata.int8 is not None:
        # The int8 proof compares the verdicts as served, which the new trust section may change.
        from training.quantize import export_int8  # it imports this module

        metadata = metadata.model_copy(update={"int8": export_int8(loaded.path, metadata, held_out, test)})
    store.update_metadata(metadata)
    print(trust.table)
    if trust.approximate is not None:
        print(f"approximate score: {trust.approximate.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
