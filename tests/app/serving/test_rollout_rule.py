"""The automatic rollout's rule, on both sides of each of its limits (a pure function: no service)."""

from __future__ import annotations

import pytest

from app.serving.rollout_rule import (
    CLEAR_LOSS_MIN_FEEDBACK,
    MARGIN,
    MAX_EXTRA_ERROR_RATE,
    P99_MIN_ANSWERS,
    P99_RATIO,
    P99_SLACK_MS,
    Arm,
    decide,
    difference_interval,
)

MIN_FEEDBACK, MAX_FEEDBACK = 200, 2000


def arm(correct: int, feedback: int, answers: int = 0, errors: int = 0, p99_ms: float | None = 5.0) -> Arm:
    return Arm(max(answers, feedback), feedback, correct, errors, p99_ms)


def test_the_difference_interval_is_newcombes_hybrid_score_interval() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II, example (a): 56/70 against 48/80,
    # method 10: 0.0524 to 0.3339.
    low, high = difference_interval(arm(56, 70), arm(48, 80))  # type: ignore[misc]
    assert low == pytest.approx(0.0524, abs=1e-4) and high == pytest.approx(0.3339, abs=1e-4)


def test_no_interval_without_feedback_on_both_versions() -> None:
    assert difference_interval(arm(0, 0), arm(10, 10)) is None
    assert decide(arm(0, 0), arm(10, 10), MIN_FEEDBACK, MAX_FEEDBACK).decision == "wait"


def test_a_clear_loss_rolls_back_from_the_minimum_feedback_on_both_and_not_before() -> None:
    enough = CLEAR_LOSS_MIN_FEEDBACK
    verdict = decide(arm(0, enough), arm(enough, enough), MIN_FEEDBACK, MAX_FEEDBACK)
    assert verdict.decision == "rollback" and "clearly less accurate" in verdict.reason
    assert verdict.difference is not None and verdict.difference[1] < 0
    assert decide(arm(0, enough - 1), arm(100, 100), MIN_FEEDBACK, MAX_FEEDBACK).decision == "wait"
    assert decide(arm(0, 100), arm(enough - 1, enough - 1), MIN_FEEDBACK, MAX_FEEDBACK).decision == "wait"


def test_promotion_waits_for_the_minimum_feedback() -> None:
    better, stable = arm(MIN_FEEDBACK, MIN_FEEDBACK), arm(MIN_FEEDBACK // 2, MIN_FEEDBACK)
    assert decide(better, stable, MIN_FEEDBACK, MAX_FEEDBACK).decision == "promote"
    fewer = arm(MIN_FEEDBACK - 1, MIN_FEEDBACK - 1)
    assert decide(fewer, stable, MIN_FEEDBACK, MAX_FEEDBACK).decision == "wait"


def test_promotion_needs_the_lower_bound_within_the_margin() -> None:
    # 99 % against 98.75 % and 98.5 %: neither clearly worse, one within the margin, one not.
    stable = arm(1_980, 2_000)
    close, worse = arm(1_975, 2_000), arm(1_970, 2_000)
    close_low, close_high = difference_interval(close, stable)  # type: ignore[misc]
    worse_low, worse_high = difference_interval(worse, stable)  # type: ignore[misc]
    assert worse_low < -MARGIN <= close_low and min(close_high, worse_high) > 0
    assert decide(close, stable, MIN_FEEDBACK, 20_000).decision == "promote"
    assert decide(worse, stable, MIN_FEEDBACK, 20_000).decision == "wait"


def test_without_proof_at_the_maximum_feedback_the_candidate_is_rolled_back() -> None:
    # Two equal versions at a few hundred answers: the interval is wider than the margin.
    stable = arm(180, 200)
    at_max = decide(arm(180, 200), stable, 100, 200)
    assert at_max.decision == "rollback" and "not proven no worse" in at_max.reason
    assert decide(arm(179, 199), stable, 100, 200).decision == "wait"


def test_a_candidate_failing_more_requests_is_not_promoted() -> None:
    stable = arm(100, 200, answers=10_000, errors=0)
    allowed = int(MAX_EXTRA_ERROR_RATE * 10_000)
    within = arm(200, 200, answers=10_000 - allowed, errors=allowed)
    beyond = arm(200, 200, answers=10_000 - allowed - 10, errors=allowed + 10)
    assert decide(within, stable, MIN_FEEDBACK, MAX_FEEDBACK).decision == "promote"
    blocked = decide(beyond, stable, MIN_FEEDBACK, MAX_FEEDBACK)
    assert blocked.decision == "wait"
    at_max = decide(beyond, stable, MIN_FEEDBACK, MIN_FEEDBACK)
    assert at_max.decision == "rollback" and "error rate" in at_max.reason


def test_a_slower_candidate_is_not_promoted_once_its_p99_is_judged() -> None:
    bound = 10.0 * P99_RATIO + P99_SLACK_MS
    minimum = 50
    stable = arm(25, minimum, answers=P99_MIN_ANSWERS, p99_ms=10.0)
    fast = arm(minimum, minimum, answers=P99_MIN_ANSWERS, p99_ms=bound)
    slow = arm(minimum, minimum, answers=P99_MIN_ANSWERS, p99_ms=bound + 1)
    assert decide(fast, stable, minimum, MAX_FEEDBACK).decision == "promote"
    assert decide(slow, stable, minimum, MAX_FEEDBACK).decision == "wait"
    at_max = decide(slow, stable, minimum, minimum)
    assert at_max.decision == "rollback" and "p99" in at_max.reason
    # Below P99_MIN_ANSWERS answers a p99 is a maximum: not judged.
    few = arm(minimum, minimum, answers=P99_MIN_ANSWERS - 1, p99_ms=bound + 1)
    assert decide(few, stable, minimum, MAX_FEEDBACK).decision == "promote"
