"""The rule that lets a version's verdict use the cheaper, low-rank Mahalanobis score.

For a wide penultimate layer the exact score (`features @ precision`, D * D multiply-adds per image)
costs more than the forward pass. `model_store.trust.LowRankMahalanobis` keeps only k principal
directions (D * (k + 11)). `training.calibrate_trust` refits the thresholds for each candidate rank
on the held-out digits, chooses the smallest rank that keeps to the limits below on the validation
data, and measures the chosen one against the exact score on the MNIST test set and the evaluation
draw of negatives; `decide` turns those numbers into the `passed` and `reason` of the metadata.
"""

from __future__ import annotations

from model_store.trust import VerdictShares

# The rule, as limits on |approximate - exact|; shares are fractions, so 0.01 is 1 point.
NEGATIVES_LIMIT = 0.01
DIGITS_LIMIT = 0.002
# Shares are counts over a total; a difference of exactly the limit must not fail on rounding.
_SLACK = 1e-9
# The ranks tried, smallest first; only those under half the feature width, where the saving is.
RANKS = (8, 16, 32, 64, 128, 256)


def candidate_ranks(width: int) -> list[int]:
    """The ranks worth trying for penultimate features of this width."""
    return [rank for rank in RANKS if rank < width / 2]


def shares(row: dict[str, float]) -> VerdictShares:
    """`calibrate_trust.measure`'s row (digits kept, error, each family, all negatives) as shares."""
    families = {name: value for name, value in row.items() if name not in ("kept", "error", "negatives")}
    return VerdictShares(digits_kept=row["kept"], negatives_flagged=row["negatives"], families=families)


def decide(exact: VerdictShares, approximate: VerdictShares, rank: int) -> tuple[bool, str]:
    """(passed, reason): the approximate score flags the negatives within 1 point of the exact one
    and keeps the digits within 0.2 points."""

    def points(value: float) -> str:
        return f"{100 * value:.2f} %"

    failures = [
        f"{name} {points(b)} against the exact score's {points(a)} differs by {100 * abs(a - b):.2f} points "
        f"(limit {100 * limit:.2f})"
        for name, a, b, limit in (
            ("negatives flagged", exact.negatives_flagged, approximate.negatives_flagged, NEGATIVES_LIMIT),
            ("digits kept", exact.digits_kept, approximate.digits_kept, DIGITS_LIMIT),
        )
        if abs(a - b) > limit + _SLACK
    ]
    if failures:
        return False, f"rank {rank} not used: " + "; ".join(failures)
    return True, (
        f"rank {rank} used: negatives flagged {points(approximate.negatives_flagged)} (exact "
        f"{points(exact.negatives_flagged)}), digits kept {points(approximate.digits_kept)} (exact "
        f"{points(exact.digits_kept)})"
    )
