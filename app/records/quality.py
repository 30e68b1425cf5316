"""Live quality per model version, from the log's aggregates: answers, verdicts, feedback,
accuracy with its 95 % Wilson interval, and the commonest confusions."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Connection, Engine, func, select

from app.operations.metrics import Metrics
from app.records.tables import NOT_A_DIGIT, ROUTE_CONTRIBUTION, FeedbackRow, PredictionRow
from model_store.trust import VERDICTS

Z_95 = 1.959963984540054
TOP_CONFUSIONS = 5


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion: sound for small counts and for 0 % or 100 %."""
    if total == 0:
        return None
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Arm:
    """What one version showed in a window (an automatic rollout's): answers, feedback, failures, latency."""

    answers: int  # images answered
    feedback: int  # of those, with feedback on a digit
    correct: int  # of those, right
    errors: int  # images of requests whose forward pass failed
    p99_ms: float | None  # of the answers' latency; None without answers

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.feedback if self.feedback else None

    @property
    def error_rate(self) -> float:
        attempted = self.answers + self.errors
        return self.errors / attempted if attempted else 0.0


def is_correct(label: int, digit: int | None, verdict: str | None) -> bool | None:
    """A digit label is right when it is the digit answered; "not a digit" when that was the verdict."""
    if digit is None:
        return None
    return verdict == "not_a_digit" if label == NOT_A_DIGIT else label == digit


@dataclass
class VersionQuality:
    version: int
    answers: int = 0
    feedback: int = 0
    correct: int = 0
    contributions: int = 0
    verdicts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    confusions: Counter[tuple[int, int]] = field(default_factory=Counter)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.feedback if self.feedback else None

    @property
    def accuracy_interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.correct, self.feedback)

    def top_confusions(self) -> list[tuple[int, int, int]]:
        ranked = sorted(self.confusions.items(), key=lambda item: (-item[1], item[0]))
        return [(label, predicted, count) for (label, predicted), count in ranked[:TOP_CONFUSIONS]]


def feedback_counts(
    connection: Connection, *conditions: ColumnElement[bool]
) -> Sequence[tuple[int, int, int | None, str | None, int]]:
    """Feedback counted by the answer's version, the label, and the answer (digit, verdict), over
    the answers that meet `conditions`."""
    return (
        connection.execute(
            select(
                PredictionRow.model_version,
                FeedbackRow.label,
                PredictionRow.digit,
                PredictionRow.verdict,
                func.count(),
            )
            .join(PredictionRow, PredictionRow.id == FeedbackRow.prediction_id)
            .where(*conditions)
            .group_by(
                PredictionRow.model_version, FeedbackRow.label, PredictionRow.digit, PredictionRow.verdict
            )
        )
        .tuples()
        .all()
    )


def version_quality(engine: Engine) -> list[VersionQuality]:
    """Every version's quality, newest first: two GROUP BY queries over indexed columns."""
    versions: dict[int, VersionQuality] = defaultdict(lambda: VersionQuality(0))
    answered = PredictionRow.route != ROUTE_CONTRIBUTION
    with engine.connect() as connection:
        for version, verdict, count in connection.execute(
            select(PredictionRow.model_version, PredictionRow.verdict, func.count())
            .where(answered)
            .group_by(PredictionRow.model_version, PredictionRow.verdict)
        ):
            quality = versions[version]
            quality.answers += count
            if verdict is not None:
                quality.verdicts[verdict] = quality.verdicts.get(verdict, 0) + count
        for version, label, digit, verdict, count in feedback_counts(connection):
            quality = versions[version]
            correct = is_correct(label, digit, verdict)
            if correct is None or digit is None:
                quality.contributions += count
                continue
            quality.feedback += count
            quality.correct += count if correct else 0
            if not correct and label != NOT_A_DIGIT:
                quality.confusions[(label, digit)] += count
    for version, quality in versions.items():
        quality.version = version
    return sorted(versions.values(), key=lambda quality: -quality.version)


def refresh_accuracy_gauges(engine: Engine, metrics: Metrics) -> list[VersionQuality]:
    """Recompute the versions' quality and set `mnist_live_accuracy` from it."""
    qualities = version_quality(engine)
    for quality in qualities:
        if quality.accuracy is not None:
            metrics.live_accuracy.labels(str(quality.version)).set(quality.accuracy)
    return qualities
