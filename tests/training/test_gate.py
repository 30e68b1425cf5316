"""The publish-time gate's rule, at each of its limits and just past it: a pure function of the numbers."""

from __future__ import annotations

import pytest

from model_store.metadata import GateScores
from training.gate import MNIST_DROP_LIMIT, NEGATIVES_DROP_LIMIT, decide

EPSILON = 1e-6
FLAGGED = 0.80
SERVING = GateScores(
    version=4, mnist_accuracy=0.99, holdout_accuracy=0.90, negatives_flagged=FLAGGED, int8_default=True
)


def candidate(**changes: float | bool | None) -> GateScores:
    return SERVING.model_copy(update={"version": None, **changes})


def test_a_candidate_equal_to_the_serving_version_passes_and_the_reason_gives_both_numbers() -> None:
    passed, reason = decide(SERVING, candidate())
    assert passed
    assert reason == (
        "passed against version 4: MNIST test accuracy 99.00 % (99.00 %), hold-out accuracy 90.00 % "
        "(90.00 %), non-digits flagged 80.00 % (80.00 %)"
    )


def test_the_first_version_passes_with_nothing_to_compare_with() -> None:
    assert decide(None, candidate(mnist_accuracy=0.5)) == (
        True,
        "passed: no version was serving to compare with",
    )


@pytest.mark.parametrize(("drop", "passes"), [(MNIST_DROP_LIMIT, True), (MNIST_DROP_LIMIT + EPSILON, False)])
def test_mnist_accuracy_may_drop_by_at_most_a_tenth_of_a_point(drop: float, passes: bool) -> None:
    passed, reason = decide(SERVING, candidate(mnist_accuracy=SERVING.mnist_accuracy - drop))
    assert passed is passes
    if not passes:
        assert "MNIST test accuracy 98.90 % is 0.10 points below version 4's 99.00 % (limit 0.1)" in reason


@pytest.mark.parametrize(("holdout", "passes"), [(0.90, True), (0.90 - EPSILON, False), (0.95, True)])
def test_holdout_accuracy_may_not_drop_at_all(holdout: float, passes: bool) -> None:
    passed, reason = decide(SERVING, candidate(holdout_accuracy=holdout))
    assert passed is passes
    if not passes:
        assert "hold-out accuracy 90.00 % is 0.00 points below version 4's 90.00 % (limit 0.0)" in reason


@pytest.mark.parametrize(
    ("drop", "passes"), [(NEGATIVES_DROP_LIMIT, True), (NEGATIVES_DROP_LIMIT + EPSILON, False), (-0.1, True)]
)
def test_non_digits_flagged_may_drop_by_at_most_two_points(drop: float, passes: bool) -> None:
    passed, reason = decide(SERVING, candidate(negatives_flagged=FLAGGED - drop))
    assert passed is passes
    if not passes:
        assert "non-digits flagged 78.00 % is 2.00 points below version 4's 80.00 % (limit 2.0)" in reason


def test_a_failed_int8_proof_is_refused_only_when_the_serving_versions_passed() -> None:
    passed, reason = decide(SERVING, candidate(int8_default=False))
    assert not passed and "its int8 export failed its proof while version 4's passed" in reason
    assert decide(SERVING.model_copy(update={"int8_default": False}), candidate(int8_default=False))[0]


def test_a_number_the_candidate_lacks_while_the_serving_version_has_it_fails() -> None:
    passed, reason = decide(SERVING, candidate(holdout_accuracy=None, negatives_flagged=None))
    assert not passed
    assert "hold-out accuracy was not measured" in reason and "non-digits flagged was not measured" in reason


def test_a_number_the_serving_version_lacks_is_not_compared() -> None:
    older = SERVING.model_copy(update={"negatives_flagged": None, "holdout_accuracy": None})
    assert decide(older, candidate(negatives_flagged=0.0, holdout_accuracy=0.0)) == (
        True,
        "passed against version 4: MNIST test accuracy 99.00 % (99.00 %)",
    )


def test_every_failure_is_named_in_one_reason() -> None:
    passed, reason = decide(
        SERVING, candidate(mnist_accuracy=0.5, holdout_accuracy=0.5, negatives_flagged=0.5)
    )
    assert not passed
    assert reason.startswith("rejected against version 4: MNIST test accuracy")
    assert reason.count(";") == 2  # MNIST, hold-out and non-digits: three failures
