"""The `trust` section of a version's metadata: the names of the verdicts, the thresholds training
fits at publish time and the service applies (`model_store.verdict_rule.judge`), and the files a
version with a fitted rule carries.

The rule, in order:
1. `not_a_digit` when the image holds too little or too much ink (blank, a speck, a filled page);
2. `not_a_digit` when the chosen out-of-distribution score is above its threshold;
3. `unsure` when the calibrated confidence (top softmax of logits / temperature) is below its threshold;
4. `digit` otherwise.
The argmax and the probabilities are never changed; the verdict sits beside them.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["digit", "unsure", "not_a_digit"]
VERDICTS: tuple[Verdict, ...] = ("digit", "unsure", "not_a_digit")
OodMethod = Literal["max_softmax", "energy", "mahalanobis"]
OOD_METHODS: tuple[OodMethod, ...] = ("max_softmax", "energy", "mahalanobis")

TRUST_STATISTICS_FILE = "trust.npz"
RELIABILITY_DIAGRAM_FILE = "reliability_diagram.png"
TRUST_TABLE_FILE = "trust.md"


def trust_files() -> dict[str, str]:
    """The metadata `files` entries a version with a fitted trust rule carries."""
    return {
        "reliability_diagram": RELIABILITY_DIAGRAM_FILE,
        "trust_statistics": TRUST_STATISTICS_FILE,
        "trust_table": TRUST_TABLE_FILE,
    }


class TrustRule(BaseModel):
    """The numbers `judge` needs; fitted on held-out data at publish time."""

    model_config = ConfigDict(frozen=True)

    temperature: float = Field(1.0, gt=0, description="logits are divided by it before the softmax")
    method: OodMethod = Field("max_softmax", description="the out-of-distribution score in use")
    ood_threshold: float = Field(
        math.inf, description="a score above it is `not_a_digit`; scores grow away from the digits"
    )
    confidence_threshold: float = Field(0.9, ge=0, le=1, description="below it the answer is `unsure`")
    min_ink: float = Field(0.01, ge=0, le=1, description="fraction of ink pixels below which: blank")
    max_ink: float = Field(0.5, ge=0, le=1, description="fraction of ink pixels above which: not a digit")
    rank: int | None = Field(
        None,
        gt=0,
        description="mahalanobis only: the principal directions the approximate score keeps; None: exact",
    )


class VerdictShares(BaseModel):
    """One score's verdicts, measured on the MNIST test set and the evaluation draw of negatives."""

    digits_kept: float = Field(ge=0, le=1, description="share of the MNIST test digits judged `digit`")
    negatives_flagged: float = Field(ge=0, le=1, description="share of all the negatives not judged `digit`")
    families: dict[str, float] = Field(description="negative family -> share flagged")


class ApproximateScore(BaseModel):
    """The optional `approximate` part of `trust`: a cheaper Mahalanobis score, its own refitted
    thresholds, and the publish-time proof that decides whether the service uses it."""

    rule: TrustRule = Field(description="the rule with the approximate score; its `rank` is set")
    ranks_tried: list[int] = Field(description="the ranks tried on the validation data, smallest first")
    exact: VerdictShares
    approximate: VerdictShares
    passed: bool = Field(description="whether serving uses it; otherwise the exact score")
    reason: str = Field(description="why it passed or failed")


class Trust(TrustRule):
    """The optional `trust` section of a version's metadata: the rule and how it was measured."""

    calibration_samples: int = Field(description="held-out training images the rule was fitted on")
    ece_before: float = Field(description="expected calibration error on the test set, raw softmax")
    ece_after: float = Field(description="the same after temperature scaling")
    table: str = Field(description="markdown: every method on MNIST test and each negative family")
    # Optional: versions published before it, or whose method is not mahalanobis, have none.
    approximate: ApproximateScore | None = None

    def rule(self) -> TrustRule:
        """The rule with the exact score, as fitted."""
        return TrustRule.model_validate(self.model_dump(include=set(TrustRule.model_fields)))

    def served_rule(self) -> TrustRule:
        """The rule the service applies: the approximate score's if its proof passed, else the exact."""
        if self.approximate is not None and self.approximate.passed:
            return self.approximate.rule
        return self.rule()


# A version published before trust existed: raw softmax (temperature 1), no feature-space detector,
# only the ink check can say `not_a_digit`, and below 0.9 top probability the answer is `unsure`.
UNCALIBRATED = TrustRule()
