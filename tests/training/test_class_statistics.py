"""The verdict's arithmetic: the Mahalanobis score against its textbook definition."""

from __future__ import annotations

import numpy as np

from model_store.verdict_rule import ood_score
from training.class_statistics import fit_class_statistics


def test_mahalanobis_score_is_the_distance_to_the_nearest_class_mean() -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(500, 16)).astype(np.float32)
    labels = rng.integers(0, 10, 500)
    statistics = fit_class_statistics(features, labels)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    expected = np.array(
        [min(float((q - m) @ statistics.precision @ (q - m)) for m in statistics.means) for q in queries]
    )
    scores = ood_score("mahalanobis", np.zeros((7, 10)), queries, 1.0, statistics)
    np.testing.assert_allclose(scores, expected, rtol=1e-4)
