"""The low-rank Mahalanobis score, the rule that lets serving use it, and the proof published with it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from model_store.mnist_data import load_split
from model_store.store import ModelStore
from model_store.trust import TRUST_STATISTICS_FILE, VerdictShares
from model_store.verdict_rule import ClassStatistics, ood_score
from training import negatives
from training.approximate_trust import DIGITS_LIMIT, NEGATIVES_LIMIT, candidate_ranks, decide, shares
from training.calibrate_trust import FeatureReader, main
from training.class_statistics import low_rank_from_eigen, precision_eigen
from training.verdicts import EVALUATION_PER_FAMILY, Outputs, measure

pytestmark = pytest.mark.slow  # trains the session's seed store

EXACT = VerdictShares(digits_kept=0.99, negatives_flagged=0.60, families={"letters": 0.5})


def approximate(**changes: float) -> VerdictShares:
    return EXACT.model_copy(update=changes)


@pytest.mark.parametrize(
    ("changes", "passes"),
    [
        ({}, True),
        ({"negatives_flagged": EXACT.negatives_flagged - NEGATIVES_LIMIT}, True),
        ({"negatives_flagged": EXACT.negatives_flagged + NEGATIVES_LIMIT}, True),
        ({"negatives_flagged": EXACT.negatives_flagged - NEGATIVES_LIMIT - 0.0001}, False),
        ({"negatives_flagged": EXACT.negatives_flagged + NEGATIVES_LIMIT + 0.0001}, False),
        ({"digits_kept": EXACT.digits_kept - DIGITS_LIMIT}, True),
        ({"digits_kept": EXACT.digits_kept + DIGITS_LIMIT}, True),
        ({"digits_kept": EXACT.digits_kept - DIGITS_LIMIT - 0.0001}, False),
        ({"digits_kept": EXACT.digits_kept + DIGITS_LIMIT + 0.0001}, False),
    ],
)
def test_each_limit_is_held_at_its_edge_and_broken_past_it_either_way(
    changes: dict[str, float], passes: bool
) -> None:
    passed, reason = decide(EXACT, approximate(**changes), 32)
    assert passed is passes, reason
    assert reason.startswith("rank 32 used:" if passes else "rank 32 not used:")


def test_a_failure_names_the_number_and_its_limit() -> None:
    passed, reason = decide(EXACT, approximate(digits_kept=0.987), 16)
    assert not passed
    assert "digits kept 98.70 % against the exact score's 99.00 %" in reason
    assert "(limit 0.20)" in reason


def test_ranks_tried_are_under_half_the_feature_width() -> None:
    assert candidate_ranks(1000) == [8, 16, 32, 64, 128, 256]
    assert candidate_ranks(128) == [8, 16, 32]
    assert candidate_ranks(16) == []


def test_shares_read_a_measured_row() -> None:
    row = {"kept": 0.99, "error": 0.01, "letters": 0.5, "blank": 1.0, "negatives": 0.75}
    assert shares(row) == VerdictShares(
        digits_kept=0.99, negatives_flagged=0.75, families={"letters": 0.5, "blank": 1.0}
    )


@pytest.fixture(scope="module")
def seed_outputs(seed_store: Path, mnist_dir: Path) -> tuple[Outputs, ClassStatistics]:
    """The seed fixture's features of 2,000 real test digits, and its class statistics."""
    loaded = ModelStore(seed_store).load()
    statistics = ClassStatistics.load(loaded.path / TRUST_STATISTICS_FILE)
    return FeatureReader(loaded.model)(load_split(mnist_dir, "test").images[:2000]), statistics


def test_the_approximation_at_full_rank_is_the_exact_score(
    seed_outputs: tuple[Outputs, ClassStatistics],
) -> None:
    digits, statistics = seed_outputs
    values, vectors = precision_eigen(statistics)
    full = statistics.with_low_rank(low_rank_from_eigen(statistics.means, values, vectors, len(values)))
    exact = ood_score("mahalanobis", digits.logits, digits.features, 1.0, statistics)
    approximated = ood_score("mahalanobis", digits.logits, digits.features, 1.0, full, len(values))
    np.testing.assert_allclose(approximated, exact, rtol=2e-3)


def test_the_approximation_keeps_the_order_of_the_scores_at_a_lower_rank(
    seed_outputs: tuple[Outputs, ClassStatistics],
) -> None:
    digits, statistics = seed_outputs
    values, vectors = precision_eigen(statistics)
    exact = ood_score("mahalanobis", digits.logits, digits.features, 1.0, statistics)
    correlations = []
    for rank in (8, 64, 256):
        low = statistics.with_low_rank(low_rank_from_eigen(statistics.means, values, vectors, rank))
        scores = ood_score("mahalanobis", digits.logits, digits.features, 1.0, low, rank)
        correlations.append(np.corrcoef(np.argsort(np.argsort(scores)), np.argsort(np.argsort(exact)))[0, 1])
    assert correlations == sorted(correlations), correlations  # more directions, closer to exact
    assert correlations[-1] > 0.95, correlations


def test_a_rank_the_statistics_do_not_carry_is_refused(seed_outputs: tuple[Outputs, ClassStatistics]) -> None:
    digits, statistics = seed_outputs
    with pytest.raises(ValueError, match="rank-8 score"):
        ood_score("mahalanobis", digits.logits, digits.features, 1.0, statistics.with_low_rank(None), 8)


def test_publishing_records_the_proof_that_judge_reproduces(seed_store: Path, mnist_dir: Path) -> None:
    """The numbers in `trust.approximate` are `judge`'s on the test set and the evaluation draw,
    with the thresholds and the factors the version folder holds."""
    loaded = ModelStore(seed_store).load()
    trust = loaded.metadata.trust
    assert trust is not None and trust.method == "mahalanobis"
    proof = trust.approximate
    assert proof is not None, "a seed version's trust section has no approximate score"
    rank = proof.rule.rank
    assert rank is not None and proof.ranks_tried[-1] == rank
    assert proof.rule.temperature == trust.temperature and proof.rule.min_ink == trust.min_ink
    assert proof.passed == decide(proof.exact, proof.approximate, rank)[0] or "validation" in proof.reason
    statistics = ClassStatistics.load(loaded.path / TRUST_STATISTICS_FILE)
    assert statistics.low_rank is not None and statistics.low_rank.rank == rank
    assert f"| mahalanobis, rank {rank} |" in trust.table

    test = load_split(mnist_dir, "test")
    read = FeatureReader(loaded.model)
    families = {
        name: read(images)
        for name, images in negatives.draw(
            negatives.EVALUATION_SEED, EVALUATION_PER_FAMILY, test.images
        ).items()
    }
    digits = read(test.images)
    for rule, recorded in ((trust.rule(), proof.exact), (proof.rule, proof.approximate)):
        assert shares(measure(rule, statistics, digits, test.labels, families)) == recorded


def test_calibrate_trust_rewrites_an_old_version_with_the_proof(
    seed_store: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    """A version whose trust was fitted before the approximation gets it from the command."""
    store_root = Path(shutil.copytree(seed_store, tmp_path / "store"))
    store = ModelStore(store_root)
    metadata = store.read_metadata(1)
    assert metadata.trust is not None
    store.update_metadata(
        metadata.model_copy(update={"trust": metadata.trust.model_copy(update={"approximate": None})})
    )
    path = store.load(1).path
    old = ClassStatistics.load(path / TRUST_STATISTICS_FILE)
    np.savez(path / TRUST_STATISTICS_FILE, means=old.means, precision=old.precision)

    assert main(["--store", str(store_root), "--version", "1", "--data-dir", str(mnist_dir)]) == 0
    rewritten = store.read_metadata(1).trust
    assert rewritten is not None and rewritten.approximate == metadata.trust.approximate
    assert ClassStatistics.load(path / TRUST_STATISTICS_FILE).low_rank is not None
