"""Measuring a verdict rule: the model outputs it judges, and the share of digits it keeps and of
each family of negatives it flags. Fitting (`training.calibrate_trust`) and the int8 proof
(`training.quantize`) measure with it alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_store.trust import TrustRule
from model_store.verdict_rule import ClassStatistics, judge

# Negatives drawn per family: the validation draw chooses, the evaluation draw only measures.
VALIDATION_PER_FAMILY = 200
EVALUATION_PER_FAMILY = 300


@dataclass(frozen=True)
class Outputs:
    """What the verdict needs for a set of images."""

    images: np.ndarray  # uint8 (N, 28, 28)
    logits: np.ndarray
    features: np.ndarray

    def take(self, index: np.ndarray) -> Outputs:
        return Outputs(self.images[index], self.logits[index], self.features[index])


# What `measure` takes beside the rule: digits, their labels, and the negatives by family.
Measured = tuple[Outputs, np.ndarray, dict[str, Outputs]]


def flagged(rule: TrustRule, data: Outputs, statistics: ClassStatistics | None) -> np.ndarray:
    verdicts = judge(data.images, data.logits, data.features, rule, statistics).verdicts
    return np.asarray(verdicts != "digit")


def measure(
    rule: TrustRule,
    statistics: ClassStatistics | None,
    digits: Outputs,
    labels: np.ndarray,
    families: dict[str, Outputs],
) -> dict[str, float]:
    """Share of digits kept, error among kept, and share of each negative family flagged."""
    kept = ~flagged(rule, digits, statistics)
    wrong = digits.logits.argmax(axis=1) != labels
    row = {"kept": float(kept.mean()), "error": float(wrong[kept].mean())}
    caught = {name: flagged(rule, data, statistics) for name, data in families.items()}
    row |= {name: float(hits.mean()) for name, hits in caught.items()}
    row["negatives"] = float(np.concatenate(list(caught.values())).mean())
    return row
