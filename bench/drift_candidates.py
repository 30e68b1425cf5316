"""The input-drift statistics `bench.drift` compares, each fitted and calibrated the same way.

Each candidate turns digits into per-image features once (`features`), is fitted on half of the
held-out digits and calibrated on random windows of the other half (`fit`), and scores a window of
features (`statistic`), so the measurement pools or runs the model once per image, not per window.
`mean_shift` is the served one (`model_store.drift`, calibrated by `training.drift_reference`,
exactly as at publish time); the others are what it was chosen against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import ks_2samp

from model_store.drift import DriftReference, pooled
from training.drift_reference import FALSE_ALARM_QUANTILE, calibrate

Probabilities = Callable[[np.ndarray], np.ndarray]


@dataclass
class Candidate:
    name: str
    description: str
    threshold: float = float("inf")

    def features(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def statistic(self, window: np.ndarray) -> float:
        raise NotImplementedError

    def fit_reference(self, reference: np.ndarray) -> None:
        raise NotImplementedError

    def fit(self, digits: np.ndarray, window: int, seed: int, windows: int) -> None:
        """Fit on half of the held-out `digits`, threshold at the quantile over the other half's windows."""
        rng = np.random.default_rng(seed)
        held_out = self.features(digits)
        shuffled = held_out[rng.permutation(len(held_out))]
        half = len(shuffled) // 2
        self.fit_reference(shuffled[:half])
        calibration = shuffled[half:]
        statistics = [
            self.statistic(calibration[rng.choice(len(calibration), window, replace=False)])
            for _ in range(windows)
        ]
        self.threshold = float(np.quantile(statistics, FALSE_ALARM_QUANTILE))


@dataclass
class MeanShift(Candidate):
    """The served statistic, through the publish-time calibration itself."""

    reference: DriftReference | None = None

    def features(self, images: np.ndarray) -> np.ndarray:
        return pooled(images)

    def fit(self, digits: np.ndarray, window: int, seed: int, windows: int) -> None:
        self.reference = calibrate(digits, seed, window, windows=windows)
        self.threshold = self.reference.threshold

    def statistic(self, window: np.ndarray) -> float:
        assert self.reference is not None
        return self.reference.statistic_of(window)


@dataclass
class PooledMmd(Candidate):
    """Unbiased squared MMD, Gaussian kernel on the 7x7 pooled digits, median-distance bandwidth."""

    reference_size: int = 1000
    _reference: np.ndarray = field(default_factory=lambda: np.empty((0, 49), np.float32))
    _gamma: float = 1.0
    _within_reference: float = 0.0

    def features(self, images: np.ndarray) -> np.ndarray:
        return pooled(images)

    def fit_reference(self, reference: np.ndarray) -> None:
        self._reference = reference[: self.reference_size]
        distances = squared_distances(self._reference, self._reference)
        self._gamma = 1.0 / float(np.median(distances[distances > 0]))
        self._within_reference = off_diagonal_mean(np.exp(-self._gamma * distances))

    def statistic(self, window: np.ndarray) -> float:
        within = off_diagonal_mean(np.exp(-self._gamma * squared_distances(window, window)))
        across = float(np.exp(-self._gamma * squared_distances(window, self._reference)).mean())
        return within + self._within_reference - 2 * across


@dataclass
class InkKs(Candidate):
    """Kolmogorov-Smirnov distance between the window's and the reference's ink per digit."""

    _reference: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))

    def features(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).mean(axis=1, dtype=np.float32)

    def fit_reference(self, reference: np.ndarray) -> None:
        self._reference = reference

    def statistic(self, window: np.ndarray) -> float:
        return float(ks_2samp(window, self._reference).statistic)


@dataclass
class MaxSoftmaxKs(InkKs):
    """Kolmogorov-Smirnov distance between the window's and the reference's top probability."""

    probabilities: Probabilities | None = None

    def features(self, images: np.ndarray) -> np.ndarray:
        assert self.probabilities is not None
        return self.probabilities(images).max(axis=1)


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squares = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * a @ b.T
    return np.maximum(squares, 0)


def off_diagonal_mean(kernel: np.ndarray) -> float:
    n = len(kernel)
    return float((kernel.sum() - np.trace(kernel)) / (n * (n - 1)))


def candidates(probabilities: Probabilities | None) -> list[Candidate]:
    """The served statistic first; the top-probability one only when a model is given."""
    found: list[Candidate] = [
        MeanShift("mean_shift", "mean squared z-score of the 49 pooled means (served)"),
        PooledMmd("mmd", "squared MMD, Gaussian kernel, 7x7 pooled digits, 1,000 reference digits"),
        InkKs("ink_ks", "KS distance of ink per digit"),
    ]
    if probabilities is not None:
        found.append(
            MaxSoftmaxKs("max_softmax_ks", "KS distance of the top probability", probabilities=probabilities)
        )
    return found
