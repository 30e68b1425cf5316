"""Fitting the feature-space detector's class statistics (`trust.npz`) at publish time: the class
means and shared precision matrix of the penultimate features, and the low-rank factors of that
matrix that the cheaper score keeps (`training.approximate_trust`). The service only reads them
(`model_store.verdict_rule.ClassStatistics`)."""

from __future__ import annotations

import numpy as np

from model_store.verdict_rule import ClassStatistics, LowRankMahalanobis


def fit_class_statistics(
    features: np.ndarray, labels: np.ndarray, shrinkage: float = 0.01
) -> ClassStatistics:
    means = np.stack([features[labels == c].mean(axis=0) for c in range(int(labels.max()) + 1)])
    centred = features - means[labels]
    covariance = centred.T @ centred / len(features)
    # Shrink towards the mean variance so a wide layer with few samples still inverts.
    covariance += shrinkage * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
    return ClassStatistics(means.astype(np.float32), np.linalg.inv(covariance).astype(np.float32))


def precision_eigen(statistics: ClassStatistics) -> tuple[np.ndarray, np.ndarray]:
    """The precision's eigenvalues (ascending) and eigenvectors, in float64."""
    values, vectors = np.linalg.eigh(statistics.precision.astype(np.float64))
    return values, vectors


def low_rank_from_eigen(
    means: np.ndarray, eigenvalues: np.ndarray, eigenvectors: np.ndarray, rank: int
) -> LowRankMahalanobis:
    """Keep the `rank` directions of the precision's eigen-decomposition (ascending eigenvalues,
    as `np.linalg.eigh` returns them) with the smallest precision, i.e. the largest variance."""
    tail = eigenvalues[rank:]
    isotropic = float(tail.mean()) if len(tail) else 0.0
    return LowRankMahalanobis(
        means.astype(np.float32),
        eigenvectors[:, :rank].astype(np.float32),
        (eigenvalues[:rank] - isotropic).astype(np.float32),
        isotropic,
    )
