"""Pairwise verdicts: which of two resolutions is better, without position bias.

Two ways to get a verdict, one rule to turn it into a decision:

- an LLM asked "which is better, A or B?" answers in **both orders**, and the verdict is the
  mean of the two orders' probabilities that ``a`` is better (:func:`combine_orders`); a
  single order is never used, because small models answer by position (the same letter
  whichever text is shown first), and averaging the orders cancels a constant preference for
  a position exactly;
- a judge that scores each resolution on its own (checklist, reward model, ensembles) gives
  ``P(a better) = sigmoid((score_a - score_b) / temperature)`` (:func:`pairwise_from_scores`):
  no position exists to be biased by.

The decision is ``"a"`` when ``P(a better) > 0.5 + tie_band``, ``"b"`` when it is below
``0.5 - tie_band``, else ``"tie"``; ``tie_band`` is the judge's "cannot tell" margin.
``position_consistent`` records whether both orders, each on its own, would have chosen the
same side (always true for score-based verdicts); the judge-quality benchmark reports its
rate as the judge's position consistency.

Whether the band means "cannot tell" depends on whether ``P(a better)`` is calibrated:
:func:`calibration_report` measures that on pairs whose better side is known (how often
verdicts of each confidence are right, the temperature that would calibrate them, and how
often a verdict inside the tie band would have been right).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from negotiation_env.judges.base import Judgement
from negotiation_env.scenarios import Scenario

DEFAULT_TIE_BAND = 0.05


@dataclass(frozen=True)
class PairwiseRequest:
    scenario: Scenario
    resolution_a: str
    resolution_b: str


@dataclass
class PairwiseJudgement:
    """Which of two resolutions is better (see the module docstring)."""

    preferred: str | None  # "a", "b", "tie", or None when the judge failed
    p_a: float | None  # probability that a is better
    position_consistent: bool | None
    judge: str
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "preferred": self.preferred,
            "p_a": self.p_a,
            "position_consistent": self.position_consistent,
            "judge": self.judge,
            "details": self.details,
            "error": self.error,
        }


def check_tie_band(tie_band: float) -> float:
    """``tie_band`` itself, refused unless it is in [0, 0.5)."""
    if not 0.0 <= tie_band < 0.5:
        raise ValueError(f"tie_band must be in [0, 0.5), got {tie_band}")
    return tie_band


def decide(p_a: float, tie_band: float = DEFAULT_TIE_BAND) -> str:
    """ "a", "b" or "tie" for a probability that a is better."""
    check_tie_band(tie_band)
    if p_a > 0.5 + tie_band:
        return "a"
    if p_a < 0.5 - tie_band:
        return "b"
    return "tie"


def combine_orders(
    p_a_shown_first: float, p_a_shown_second: float, tie_band: float = DEFAULT_TIE_BAND
) -> tuple[float, str, bool]:
    """(P(a better), decision, position consistent) from the two orders' probabilities."""
    p_a = (p_a_shown_first + p_a_shown_second) / 2
    consistent = (p_a_shown_first > 0.5) == (p_a_shown_second > 0.5)
    return p_a, decide(p_a, tie_band), consistent


def _log_loss(logits: Sequence[float], temperature: float) -> float:
    # -log sigmoid(x / T), computed stably
    return sum(
        max(-x / temperature, 0.0) + math.log1p(math.exp(-abs(x) / temperature)) for x in logits
    ) / len(logits)


def calibration_report(
    logits: Sequence[float], tie_band: float = DEFAULT_TIE_BAND, bin_width: float = 0.05
) -> dict[str, Any]:
    """How well ``P = sigmoid(logit)`` predicts which side is better, on labelled pairs.

    ``logits`` are the judge's log-odds *for the side known to be better* (positive: the
    verdict is right), e.g. ``reward_chosen - reward_rejected`` of a Bradley-Terry reward
    model. Returned: the accuracy (a zero logit counts half), the log loss, the temperature
    ``T`` that minimises the log loss of ``sigmoid(logit / T)`` (searched on a log grid from
    0.05 to 20; ``T > 1``: overconfident, ``T < 1``: underconfident) and its log loss, the
    pairs whose verdict falls inside ``tie_band`` (share, and how often the side they lean
    to is the better one), and accuracy by confidence ``max(P, 1 - P)`` in bins of
    ``bin_width``.
    """
    if not logits:
        raise ValueError("calibration_report needs at least one labelled pair")
    check_tie_band(tie_band)

    def right(x: float) -> float:
        return 1.0 if x > 0 else 0.5 if x == 0 else 0.0

    grid = [
        math.exp(math.log(0.05) + i * (math.log(20.0) - math.log(0.05)) / 400) for i in range(401)
    ]
    fitted = min(grid, key=lambda t: _log_loss(logits, t))
    confidence = [1.0 / (1.0 + math.exp(-abs(x))) for x in logits]
    inside = [x for x, c in zip(logits, confidence, strict=True) if c - 0.5 <= tie_band]
    bins: dict[int, list[float]] = {}
    for x, c in zip(logits, confidence, strict=True):
        bins.setdefault(min(int((c - 0.5) / bin_width), int(0.5 / bin_width) - 1), []).append(
            right(x)
        )
    return {
        "pairs": len(logits),
        "accuracy": round(sum(map(right, logits)) / len(logits), 4),
        "log_loss": round(_log_loss(logits, 1.0), 4),
        "fitted_temperature": round(fitted, 3),
        "log_loss_fitted": round(_log_loss(logits, fitted), 4),
        "tie_band": tie_band,
        "inside_band": {
            "pairs": len(inside),
            "share": round(len(inside) / len(logits), 4),
            "accuracy": round(sum(map(right, inside)) / len(inside), 4) if inside else None,
        },
        "by_confidence": [
            {
                "confidence": f"{0.5 + b * bin_width:.2f}-{0.5 + (b + 1) * bin_width:.2f}",
                "pairs": len(v),
                "accuracy": round(sum(v) / len(v), 4),
            }
            for b, v in sorted(bins.items())
        ],
    }


def pairwise_from_scores(
    judgements: Sequence[Judgement],
    judge: str,
    temperature: float = 0.5,
    tie_band: float = DEFAULT_TIE_BAND,
) -> list[PairwiseJudgement]:
    """Pairwise verdicts from absolute judgements laid out ``[a0, b0, a1, b1, ...]``.

    ``temperature`` is the score difference (0-5 scale) that makes ``P(a better)`` about
    0.73; a failed side makes the comparison fail with its reason.
    """
    if len(judgements) % 2:
        raise ValueError("pairwise_from_scores needs an even number of judgements (a, b pairs)")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    results = []
    for index in range(0, len(judgements), 2):
        a, b = judgements[index], judgements[index + 1]
        details = {"score_a": a.score, "score_b": b.score}
        if a.score is None or b.score is None:
            error = a.error or b.error or "a side was not scored"
            results.append(PairwiseJudgement(None, None, None, judge, details, error))
            continue
        p_a = 1.0 / (1.0 + math.exp(-(a.score - b.score) / temperature))
        results.append(PairwiseJudgement(decide(p_a, tie_band), p_a, True, judge, details))
    return results
