"""When an automatic canary is promoted or rolled back: a pure function of what each version showed.

Both versions answer during the same window, from the same hash split of clients, so the stable
version is a concurrent control. Accuracy is the share of answers with feedback that the feedback
says were right. The difference candidate - stable gets a 95 % interval by Newcombe's hybrid score
method (his method 10, from the two Wilson intervals): sound for small counts and for 0 % or 100 %.

- **Roll back at once** when the candidate is clearly worse: both versions have at least
  CLEAR_LOSS_MIN_FEEDBACK feedback and the interval's upper bound is below 0.
- **Promote** once the candidate has at least `min_feedback` feedback, when the interval's lower
  bound is at least -MARGIN (proven no worse than the stable version by more than the margin), its
  error rate is at most MAX_EXTRA_ERROR_RATE above the stable's, and, from P99_MIN_ANSWERS answers
  each, its p99 latency at most P99_RATIO times the stable's plus P99_SLACK_MS.
- **Roll back** when the candidate reaches `max_feedback` feedback without being promoted.
- Otherwise, wait for more feedback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from app.records.quality import Arm, wilson_interval

# A candidate may be this much less accurate than the stable version and still be promoted: with
# no margin, two equal versions would need an infinite sample to be proven "no worse".
MARGIN = 0.01
# Feedback each version needs before a clear loss rolls back: below it, one unlucky answer could.
CLEAR_LOSS_MIN_FEEDBACK = 20
# The candidate's share of failed requests may exceed the stable's by this much: failures are
# rare, and a candidate that fails more than one request in 200 more is not ready.
MAX_EXTRA_ERROR_RATE = 0.005
# Latency: the candidate's p99 within this ratio of the stable's, plus a slack for a small model,
# whose forward pass takes a millisecond and whose tail is the host's scheduling, not the model.
P99_RATIO = 1.5
P99_SLACK_MS = 20.0
# Below this many answers a p99 is the maximum, which one slow moment decides: not judged.
P99_MIN_ANSWERS = 100

__all__ = ["Arm", "Verdict", "decide", "difference_interval"]

Decision = Literal["promote", "rollback", "wait"]


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str
    difference: tuple[float, float] | None  # 95 % interval of accuracy, candidate - stable


def difference_interval(candidate: Arm, stable: Arm) -> tuple[float, float] | None:
    """Newcombe's hybrid score interval of candidate - stable accuracy; None without feedback on both."""
    first = wilson_interval(candidate.correct, candidate.feedback)
    second = wilson_interval(stable.correct, stable.feedback)
    if first is None or second is None:
        return None
    p1, p2 = candidate.correct / candidate.feedback, stable.correct / stable.feedback
    (l1, u1), (l2, u2) = first, second
    low = p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return low, high


def _percent(value: float) -> str:
    return f"{value * 100:+.1f}"


def serving_problems(candidate: Arm, stable: Arm) -> list[str]:
    """What keeps the candidate from promotion besides accuracy: its errors, its latency."""
    problems = []
    if candidate.error_rate > stable.error_rate + MAX_EXTRA_ERROR_RATE:
        problems.append(f"error rate {candidate.error_rate:.2%} against the stable's {stable.error_rate:.2%}")
    judged = min(candidate.answers, stable.answers) >= P99_MIN_ANSWERS
    if judged and candidate.p99_ms is not None and stable.p99_ms is not None:
        bound = stable.p99_ms * P99_RATIO + P99_SLACK_MS
        if candidate.p99_ms > bound:
            problems.append(f"p99 {candidate.p99_ms:.1f} ms above {bound:.1f} ms")
    return problems


def decide(candidate: Arm, stable: Arm, min_feedback: int, max_feedback: int) -> Verdict:
    """The rule of the module's docstring."""
    interval = difference_interval(candidate, stable)
    shown = (
        "no interval yet"
        if interval is None
        else f"[{_percent(interval[0])}, {_percent(interval[1])}] points"
    )
    enough_for_loss = min(candidate.feedback, stable.feedback) >= CLEAR_LOSS_MIN_FEEDBACK
    if interval is not None and enough_for_loss and interval[1] < 0:
        return Verdict("rollback", f"clearly less accurate than the stable version: {shown}", interval)
    problems = serving_problems(candidate, stable)
    proven = interval is not None and interval[0] >= -MARGIN
    if candidate.feedback >= min_feedback and proven and not problems:
        return Verdict("promote", f"no worse than the stable version: {shown}", interval)
    if candidate.feedback >= max_feedback:
        why = "; ".join(problems) if proven else f"not proven no worse than the stable version: {shown}"
        return Verdict("rollback", f"{candidate.feedback} feedback and {why}", interval)
    return Verdict("wait", f"{candidate.feedback} feedback of {min_feedback}: {shown}", interval)
