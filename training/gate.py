"""The publish-time gate: a new version against the one serving when it was trained.

A candidate passes when, against that version,
- its MNIST test accuracy is at most MNIST_DROP_LIMIT lower (0.1 points),
- its accuracy on the corrections' hold-out digits is no lower (with `--feedback`),
- the share of the evaluation draw of non-digits it flags is at most NEGATIVES_DROP_LIMIT lower
  (2 points), measured as the int8 proof and the trust calibration measure it, each version with
  the verdict rule it is served with,
- its int8 export passed its proof if the serving version's did (else it would serve in float32).
A version that fails is published all the same, with the gate's reason in its metadata, and the
store never serves it (`ModelStore.open` refuses it, the newest skips it).

`decide` is the rule alone, a function of the numbers; `measure` and `run_gate` measure them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from model_store.forward import ONNX_FILE
from model_store.metadata import Gate, GateScores, ModelMetadata
from model_store.mnist_data import MnistSplit
from model_store.verdict_rule import served_trust
from training.onnx_export import onnx_forward
from training.quantize import outputs
from training.verdicts import Outputs, flagged

log = logging.getLogger("training")

# Accuracies are fractions: 0.001 is 0.1 points.
MNIST_DROP_LIMIT = 0.001
NEGATIVES_DROP_LIMIT = 0.02
# Accuracies are counts over a total; a difference of exactly the limit must not fail on rounding.
_SLACK = 1e-9


def _points(value: float) -> str:
    return f"{100 * value:.2f} %"


def _drop(what: str, name: str, against: float | None, candidate: float | None, limit: float) -> str | None:
    """Why `candidate` fails against `against` (lower by more than `limit`), or None. A number the
    serving version lacks is not compared; one only the candidate lacks fails."""
    if against is None:
        return None
    if candidate is None:
        return f"{what} was not measured"
    drop = against - candidate
    if drop <= limit + _SLACK:
        return None
    return (
        f"{what} {_points(candidate)} is {100 * drop:.2f} points below {name}'s {_points(against)} "
        f"(limit {100 * limit:.1f})"
    )


def decide(against: GateScores | None, candidate: GateScores) -> tuple[bool, str]:
    """(passed, reason): the rule, as a pure function of both versions' numbers."""
    if against is None:
        return True, "passed: no version was serving to compare with"
    name = f"version {against.version}" if against.version is not None else "the serving version"
    compared = [
        ("MNIST test accuracy", against.mnist_accuracy, candidate.mnist_accuracy, MNIST_DROP_LIMIT),
        ("hold-out accuracy", against.holdout_accuracy, candidate.holdout_accuracy, 0.0),
        ("non-digits flagged", against.negatives_flagged, candidate.negatives_flagged, NEGATIVES_DROP_LIMIT),
    ]
    failures = [failure for row in compared if (failure := _drop(row[0], name, *row[1:])) is not None]
    if against.int8_default and not candidate.int8_default:
        failures.append(f"its int8 export failed its proof while {name}'s passed")
    if failures:
        return False, f"rejected against {name}: " + "; ".join(failures)
    numbers = [
        f"{what} {_points(theirs)} ({_points(ours)})"
        for what, ours, theirs, _ in compared
        if ours is not None and theirs is not None
    ]
    return True, f"passed against {name}: " + ", ".join(numbers)


def measure(
    folder: Path,
    metadata: ModelMetadata,
    holdout: MnistSplit | None,
    negatives: dict[str, np.ndarray],
) -> GateScores:
    """A version's gate numbers, from its folder's float32 ONNX export and the verdict rule it is
    served with; hold-out accuracy and negatives flagged are None where it has no export."""
    holdout_accuracy = negatives_flagged = None
    if metadata.onnx is not None and (folder / ONNX_FILE).is_file():
        forward = onnx_forward((folder / ONNX_FILE).read_bytes())
        if holdout is not None and len(holdout.labels):
            predicted = outputs(forward, holdout.images, metadata.input).logits.argmax(axis=1)
            holdout_accuracy = float(np.mean(predicted == holdout.labels))
        if metadata.trust is not None:
            rule, statistics = served_trust(metadata.trust, folder)
            drawn: list[Outputs] = [outputs(forward, images, metadata.input) for images in negatives.values()]
            negatives_flagged = float(np.concatenate([flagged(rule, d, statistics) for d in drawn]).mean())
    return GateScores(
        mnist_accuracy=metadata.evaluation.accuracy,
        holdout_accuracy=holdout_accuracy,
        negatives_flagged=negatives_flagged,
        int8_default=metadata.int8 is not None and metadata.int8.default,
    )


def run_gate(
    candidate: tuple[Path, ModelMetadata],
    against: tuple[Path, ModelMetadata] | None,
    holdout: MnistSplit | None,
    negatives: dict[str, np.ndarray],
) -> Gate:
    """Measure the candidate (folder, metadata) and the serving version alike, and decide."""
    candidate_scores = measure(*candidate, holdout, negatives)
    against_scores = None
    if against is not None:
        folder, metadata = against
        against_scores = measure(folder, metadata, holdout, negatives).model_copy(
            update={"version": metadata.version}
        )
    passed, reason = decide(against_scores, candidate_scores)
    log.info("gate: %s", reason)
    return Gate(
        passed=passed,
        reason=reason,
        against=against_scores,
        candidate=candidate_scores,
        holdout_examples=0 if holdout is None else len(holdout.labels),
    )
