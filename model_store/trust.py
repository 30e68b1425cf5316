"""Whether to trust an answer: the verdict rule that training fits and serving applies.

At publish time `training/calibrate_trust.py` fits a temperature and thresholds on held-out data and stores
them in the version's metadata (`trust`) and, for the feature-space detector, class statistics in
`trust.npz`. The service only reads them and calls `judge`, so both sides decide with the same code.

The rule, in order:
1. `not_a_digit` when the image holds too little or too much ink (blank, a speck, a filled page);
2. `not_a_digit` when the chosen out-of-distribution score is above its threshold;
3. `unsure` when the calibrated confidence (top softmax of logits / temperature) is below its threshold;
4. `digit` otherwise.
The argmax and the probabilities are never changed; the verdict sits beside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import keras

Verdict = Literal["digit", "unsure", "not_a_digit"]
VERDICTS: tuple[Verdict, ...] = ("digit", "unsure", "not_a_digit")
OodMethod = Literal["max_softmax", "energy", "mahalanobis"]
OOD_METHODS: tuple[OodMethod, ...] = ("max_softmax", "energy", "mahalanobis")

TRUST_STATISTICS_FILE = "trust.npz"
RELIABILITY_DIAGRAM_FILE = "reliability_diagram.png"
TRUST_TABLE_FILE = "trust.md"
# A pixel at least this bright (of 255) counts as ink.
INK_LEVEL = 128


def trust_files() -> dict[str, str]:
    """The metadata `files` entries a version with a fitted trust rule carries."""
    return {
        "reliability_diagram": RELIABILITY_DIAGRAM_FILE,
        "trust_statistics": TRUST_STATISTICS_FILE,
        "trust_table": TRUST_TABLE_FILE,
    }


class TrustRule(BaseModel):
    """The numbers `judge` needs; fitted on held-out data at publish time."""

    model_config = ConfigDict(frozen=True)

    temperature: float = Field(1.0, gt=0, description="logits are divided by it before the softmax")
    method: OodMethod = Field("max_softmax", description="the out-of-distribution score in use")
    ood_threshold: float = Field(
        math.inf, description="a score above it is `not_a_digit`; scores grow away from the digits"
    )
    confidence_threshold: float = Field(0.9, ge=0, le=1, description="below it the answer is `unsure`")
    min_ink: float = Field(0.01, ge=0, le=1, description="fraction of ink pixels below which: blank")
    max_ink: float = Field(0.5, ge=0, le=1, description="fraction of ink pixels above which: not a digit")


class Trust(TrustRule):
    """The optional `trust` section of a version's metadata: the rule and how it was measured."""

    calibration_samples: int = Field(description="held-out training images the rule was fitted on")
    ece_before: float = Field(description="expected calibration error on the test set, raw softmax")
    ece_after: float = Field(description="the same after temperature scaling")
    table: str = Field(description="markdown: every method on MNIST test and each negative family")

    def rule(self) -> TrustRule:
        return TrustRule.model_validate(self.model_dump(include=set(TrustRule.model_fields)))


# A version published before trust existed: raw softmax (temperature 1), no feature-space detector,
# only the ink check can say `not_a_digit`, and below 0.9 top probability the answer is `unsure`.
UNCALIBRATED = TrustRule()


@dataclass(frozen=True)
class ClassStatistics:
    """Class means and a shared precision matrix of the penultimate-layer features."""

    means: np.ndarray  # (10, D)
    precision: np.ndarray  # (D, D)
    # What every score needs and no request changes: the means through the precision matrix and
    # their norms, (10, D) and (10,). For `seed` (D = 1000) computing them cost 10 M multiplies a call.
    projected_means: np.ndarray = field(init=False, repr=False)
    mean_norms: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        projected = self.means @ self.precision
        object.__setattr__(self, "projected_means", projected)
        object.__setattr__(self, "mean_norms", (projected * self.means).sum(axis=1))

    def save(self, path: Path) -> None:
        np.savez(path, means=self.means, precision=self.precision)

    @classmethod
    def load(cls, path: Path) -> ClassStatistics:
        with np.load(path) as data:
            return cls(data["means"].astype(np.float32), data["precision"].astype(np.float32))

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, shrinkage: float = 0.01) -> ClassStatistics:
        means = np.stack([features[labels == c].mean(axis=0) for c in range(int(labels.max()) + 1)])
        centred = features - means[labels]
        covariance = centred.T @ centred / len(features)
        # Shrink towards the mean variance so a wide layer with few samples still inverts.
        covariance += shrinkage * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
        return cls(means.astype(np.float32), np.linalg.inv(covariance).astype(np.float32))


@dataclass(frozen=True)
class Judgement:
    codes: np.ndarray  # (N,) index of each verdict in VERDICTS
    confidence: np.ndarray  # (N,) calibrated top probability

    @property
    def verdicts(self) -> np.ndarray:
        return np.array(VERDICTS)[self.codes]


def ink_fraction(images: np.ndarray) -> np.ndarray:
    """Share of pixels that are ink, per uint8 image (N, 28, 28) in MNIST polarity."""
    return (images.reshape(len(images), -1) >= INK_LEVEL).mean(axis=1)


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def ood_score(
    method: OodMethod,
    logits: np.ndarray,
    features: np.ndarray,
    temperature: float,
    statistics: ClassStatistics | None,
) -> np.ndarray:
    """Per image, larger means further from the digits the model was trained on."""
    if method == "max_softmax":
        return -calibrated(logits, temperature).max(axis=1)
    if method == "energy":
        scaled = logits / temperature
        top = scaled.max(axis=1)
        return -temperature * (top + np.log(np.exp(scaled - top[:, None]).sum(axis=1)))
    if statistics is None:
        raise ValueError("the mahalanobis score needs the class statistics file")
    # (f - m)' P (f - m) expanded, so no (N, 10, D) array is ever built; P is symmetric.
    projected = features @ statistics.precision
    distances = (
        (projected * features).sum(axis=1, keepdims=True)
        - 2 * features @ statistics.projected_means.T
        + statistics.mean_norms
    )
    return distances.min(axis=1)


def judge(
    images: np.ndarray,
    logits: np.ndarray,
    features: np.ndarray,
    rule: TrustRule,
    statistics: ClassStatistics | None = None,
) -> Judgement:
    """The verdict and calibrated confidence for each uint8 image (N, 28, 28) and its model outputs."""
    confidence = calibrated(logits, rule.temperature).max(axis=1)
    ink = ink_fraction(images)
    outside = (ink < rule.min_ink) | (ink > rule.max_ink)
    if math.isfinite(rule.ood_threshold):
        outside |= ood_score(rule.method, logits, features, rule.temperature, statistics) > rule.ood_threshold
    # False/True below is index 0/1 in VERDICTS: digit/unsure.
    codes = np.where(
        outside, VERDICTS.index("not_a_digit"), (confidence < rule.confidence_threshold).astype(int)
    )
    return Judgement(codes=codes, confidence=confidence)


def penultimate(model: keras.Model) -> tuple[keras.Model, keras.layers.Layer]:
    """A model giving the last layer's input (the features), and that last (dense softmax) layer."""
    import keras  # deferred: reading metadata must not load TensorFlow

    last = model.layers[-1]
    return keras.Model(model.inputs[0], last.input), last
