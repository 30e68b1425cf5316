"""Whether to trust an answer: the verdict rule that training fits and serving applies.

At publish time `training/calibrate_trust.py` fits a temperature and thresholds on held-out data and stores
them in the version's metadata (`trust`) and, for the feature-space detector, class statistics in
`trust.npz`. The service only reads them and calls `judge`, so both sides decide with the same code.
For a wide feature layer a cheaper, low-rank Mahalanobis score may replace the exact one: only where
the publish-time proof in `trust.approximate` passed (`served_trust`).

The rule, in order:
1. `not_a_digit` when the image holds too little or too much ink (blank, a speck, a filled page);
2. `not_a_digit` when the chosen out-of-distribution score is above its threshold;
3. `unsure` when the calibrated confidence (top softmax of logits / temperature) is below its threshold;
4. `digit` otherwise.
The argmax and the probabilities are never changed; the verdict sits beside them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

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
    rank: int | None = Field(
        None,
        gt=0,
        description="mahalanobis only: the principal directions the approximate score keeps; None: exact",
    )


class VerdictShares(BaseModel):
    """One score's verdicts, measured on the MNIST test set and the evaluation draw of negatives."""

    digits_kept: float = Field(ge=0, le=1, description="share of the MNIST test digits judged `digit`")
    negatives_flagged: float = Field(ge=0, le=1, description="share of all the negatives not judged `digit`")
    families: dict[str, float] = Field(description="negative family -> share flagged")


class ApproximateScore(BaseModel):
    """The optional `approximate` part of `trust`: a cheaper Mahalanobis score, its own refitted
    thresholds, and the publish-time proof that decides whether the service uses it."""

    rule: TrustRule = Field(description="the rule with the approximate score; its `rank` is set")
    ranks_tried: list[int] = Field(description="the ranks tried on the validation data, smallest first")
    exact: VerdictShares
    approximate: VerdictShares
    passed: bool = Field(description="whether serving uses it; otherwise the exact score")
    reason: str = Field(description="why it passed or failed")


class Trust(TrustRule):
    """The optional `trust` section of a version's metadata: the rule and how it was measured."""

    calibration_samples: int = Field(description="held-out training images the rule was fitted on")
    ece_before: float = Field(description="expected calibration error on the test set, raw softmax")
    ece_after: float = Field(description="the same after temperature scaling")
    table: str = Field(description="markdown: every method on MNIST test and each negative family")
    # Optional: versions published before it, or whose method is not mahalanobis, have none.
    approximate: ApproximateScore | None = None

    def rule(self) -> TrustRule:
        """The rule with the exact score, as fitted."""
        return TrustRule.model_validate(self.model_dump(include=set(TrustRule.model_fields)))

    def served_rule(self) -> TrustRule:
        """The rule the service applies: the approximate score's if its proof passed, else the exact."""
        if self.approximate is not None and self.approximate.passed:
            return self.approximate.rule
        return self.rule()


# A version published before trust existed: raw softmax (temperature 1), no feature-space detector,
# only the ink check can say `not_a_digit`, and below 0.9 top probability the answer is `unsure`.
UNCALIBRATED = TrustRule()


@dataclass(frozen=True)
class LowRankMahalanobis:
    """The Mahalanobis distance to the nearest class mean with the precision matrix approximated as
    `isotropic * I + basis @ diag(weights) @ basis.T`: `basis` holds the k principal directions of
    the features (the largest variance, so the smallest precision), which keep their own precision,
    and every other direction gets `isotropic`, the mean precision of the directions left out.
    With k = D and isotropic 0 it is the exact precision. A score costs D * (k + 11) multiply-adds
    per image instead of D * D."""

    means: np.ndarray  # (10, D)
    basis: np.ndarray  # (D, k), orthonormal columns
    weights: np.ndarray  # (k,) each direction's precision minus `isotropic`
    isotropic: float
    # What no request changes: the basis and the means side by side (D, k + 10), so one matrix
    # product gives both projections of the features; the means in the basis (10, k) and the
    # constant term of each class (10,).
    projection: np.ndarray = field(init=False, repr=False)
    projected_means: np.ndarray = field(init=False, repr=False)
    constants: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        projected = self.means @ self.basis
        constants = self.isotropic * (self.means * self.means).sum(axis=1) + (
            projected**2 * self.weights
        ).sum(1)
        object.__setattr__(self, "projection", np.hstack([self.basis, self.means.T]).astype(np.float32))
        object.__setattr__(self, "projected_means", projected)
        object.__setattr__(self, "constants", constants.astype(np.float32))

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    @classmethod
    def from_eigen(
        cls, means: np.ndarray, eigenvalues: np.ndarray, eigenvectors: np.ndarray, rank: int
    ) -> LowRankMahalanobis:
        """Keep the `rank` directions of the precision's eigen-decomposition (ascending eigenvalues,
        as `np.linalg.eigh` returns them) with the smallest precision, i.e. the largest variance."""
        tail = eigenvalues[rank:]
        isotropic = float(tail.mean()) if len(tail) else 0.0
        return cls(
            means.astype(np.float32),
            eigenvectors[:, :rank].astype(np.float32),
            (eigenvalues[:rank] - isotropic).astype(np.float32),
            isotropic,
        )

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(N,) the approximate squared distance to the nearest class mean."""
        # (f - m)' (cI + U W U') (f - m) expanded: c|f|^2 + sum w z^2 - 2 (c f.m + (w z).(U'm)) + const,
        # with z = U'f; no (N, 10, D) array and no D x D product.
        both = features @ self.projection
        z, dots = both[:, : self.rank], both[:, self.rank :]
        weighted = z * self.weights
        norms = self.isotropic * np.einsum("ij,ij->i", features, features) + np.einsum(
            "ij,ij->i", weighted, z
        )
        cross = self.isotropic * dots + weighted @ self.projected_means.T
        return np.asarray((norms[:, None] - 2 * cross + self.constants).min(axis=1))


@dataclass(frozen=True)
class ClassStatistics:
    """Class means and a shared precision matrix of the penultimate-layer features, and optionally
    the factors of a low-rank approximation of that matrix."""

    means: np.ndarray  # (10, D)
    precision: np.ndarray  # (D, D)
    low_rank: LowRankMahalanobis | None = None
    # What every score needs and no request changes: the means through the precision matrix and
    # their norms, (10, D) and (10,). For `seed` (D = 1000) computing them cost 10 M multiplies a call.
    projected_means: np.ndarray = field(init=False, repr=False)
    mean_norms: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        projected = self.means @ self.precision
        object.__setattr__(self, "projected_means", projected)
        object.__setattr__(self, "mean_norms", (projected * self.means).sum(axis=1))

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {"means": self.means, "precision": self.precision}
        if self.low_rank is not None:
            arrays |= {
                "basis": self.low_rank.basis,
                "weights": self.low_rank.weights,
                "isotropic": np.array(self.low_rank.isotropic),
            }
        np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as one array

    @classmethod
    def load(cls, path: Path) -> ClassStatistics:
        with np.load(path) as data:
            means = data["means"].astype(np.float32)
            low_rank = None
            if "basis" in data:  # files written before the approximation have only the two arrays
                low_rank = LowRankMahalanobis(
                    means,
                    data["basis"].astype(np.float32),
                    data["weights"].astype(np.float32),
                    float(data["isotropic"]),
                )
            return cls(means, data["precision"].astype(np.float32), low_rank)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, shrinkage: float = 0.01) -> ClassStatistics:
        means = np.stack([features[labels == c].mean(axis=0) for c in range(int(labels.max()) + 1)])
        centred = features - means[labels]
        covariance = centred.T @ centred / len(features)
        # Shrink towards the mean variance so a wide layer with few samples still inverts.
        covariance += shrinkage * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
        return cls(means.astype(np.float32), np.linalg.inv(covariance).astype(np.float32))

    def eigen(self) -> tuple[np.ndarray, np.ndarray]:
        """The precision's eigenvalues (ascending) and eigenvectors, in float64."""
        values, vectors = np.linalg.eigh(self.precision.astype(np.float64))
        return values, vectors

    def with_low_rank(self, low_rank: LowRankMahalanobis | None) -> ClassStatistics:
        return ClassStatistics(self.means, self.precision, low_rank)

    def distances(self, features: np.ndarray, rank: int | None = None) -> np.ndarray:
        """(N,) the squared Mahalanobis distance to the nearest class mean: exact, or with the
        low-rank precision of `rank` (which must be the one these statistics carry)."""
        if rank is not None:
            if self.low_rank is None or self.low_rank.rank != rank:
                carried = None if self.low_rank is None else self.low_rank.rank
                raise ValueError(f"the rule wants the rank-{rank} score; the statistics carry rank {carried}")
            return self.low_rank.distances(features)
        # (f - m)' P (f - m) expanded, so no (N, 10, D) array is ever built; P is symmetric.
        projected = features @ self.precision
        distances = (
            (projected * features).sum(axis=1, keepdims=True)
            - 2 * features @ self.projected_means.T
            + self.mean_norms
        )
        return np.asarray(distances.min(axis=1))


@dataclass(frozen=True)
class Judgement:
    codes: np.ndarray  # (N,) index of each verdict in VERDICTS
    confidence: np.ndarray  # (N,) calibrated top probability

    @property
    def verdicts(self) -> np.ndarray:
        return np.array(VERDICTS)[self.codes]


def served_trust(trust: Trust | None, folder: Path) -> tuple[TrustRule, ClassStatistics | None]:
    """The rule a version's verdicts are served with (the approximate score's when its proof
    passed; `UNCALIBRATED` without a trust section) and the class statistics it needs, read from
    the version's folder."""
    if trust is None:
        return UNCALIBRATED, None
    rule = trust.served_rule()
    statistics = None
    if rule.method == "mahalanobis":
        statistics = ClassStatistics.load(folder / TRUST_STATISTICS_FILE)
        carried = None if statistics.low_rank is None else statistics.low_rank.rank
        if rule.rank is not None and carried != rule.rank:
            # A statistics file without the proven factors: the exact score is slower, never wrong.
            log.warning(
                "%s: rank %s factors missing (found %s); verdicts use the exact score",
                folder / TRUST_STATISTICS_FILE,
                rule.rank,
                carried,
            )
            rule = trust.rule()
    return rule, statistics


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
    rank: int | None = None,
) -> np.ndarray:
    """Per image, larger means further from the digits the model was trained on. `rank`: the
    mahalanobis score's low-rank approximation (see `LowRankMahalanobis`); None is exact."""
    if method == "max_softmax":
        return -calibrated(logits, temperature).max(axis=1)
    if method == "energy":
        scaled = logits / temperature
        top = scaled.max(axis=1)
        return -temperature * (top + np.log(np.exp(scaled - top[:, None]).sum(axis=1)))
    if statistics is None:
        raise ValueError("the mahalanobis score needs the class statistics file")
    return statistics.distances(features, rank)


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
        scores = ood_score(rule.method, logits, features, rule.temperature, statistics, rule.rank)
        outside |= scores > rule.ood_threshold
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
