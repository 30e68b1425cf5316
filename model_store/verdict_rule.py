"""Applying a version's verdict rule: the one computation the service runs at answer time and
training runs to measure the rule it publishes (the int8 proof, the low-rank proof, the gate), so the
numbers in a version's metadata are the verdicts it will be served with.

At publish time `training/calibrate_trust.py` fits the thresholds (`model_store.trust`) and, for the
feature-space detector, class statistics in `trust.npz`, whose format `ClassStatistics` reads and
writes. For a wide feature layer a cheaper, low-rank Mahalanobis score may replace the exact one:
only where the publish-time proof in `trust.approximate` passed (`served_trust`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_store.trust import TRUST_STATISTICS_FILE, UNCALIBRATED, VERDICTS, OodMethod, Trust, TrustRule

log = logging.getLogger(__name__)

# A pixel at least this bright (of 255) counts as ink.
INK_LEVEL = 128


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
