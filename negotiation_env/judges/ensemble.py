"""Several judges as one: the mean of their scores, a majority for pairwise verdicts.

Every judge here scores on the same calibrated 0-5 scale (LLM judges by their rubric's
anchors, the checklist by its pass probabilities, the reward model by its calibration), so
the ensemble's score is the (weighted) mean of its members' scores; a member that fails on
an item is left out of that item's mean, and the item fails only when every member failed.
A pairwise verdict is the majority of the members' verdicts; without a majority (two members
that disagree) it is decided by ``p_a``, the mean of their probabilities, with the tie band,
so a confident member outweighs a barely decided one instead of every disagreement being a
tie. ``details["members"]`` keeps every member's score.

On the command line: ``ensemble:checklist+rm`` (members are judge specs joined by ``+``;
each may carry its own options).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from negotiation_env.judges.base import Judge, Judgement, JudgeRequest, judge_safely
from negotiation_env.judges.pairwise import PairwiseJudgement, PairwiseRequest, decide


class EnsembleJudge:
    """The mean score of several judges (see the module docstring)."""

    def __init__(self, judges: Sequence[Judge], weights: Sequence[float] | None = None):
        if len(judges) < 2:
            raise ValueError(f"an ensemble needs at least two judges, got {len(judges)}")
        weights = list(weights) if weights is not None else [1.0] * len(judges)
        if len(weights) != len(judges) or any(w < 0 for w in weights) or not any(weights):
            raise ValueError(f"weights: need {len(judges)} non-negative weights, got {weights}")
        self.judges = list(judges)
        self.weights = weights
        self.name = "ensemble(" + " + ".join(j.name for j in self.judges) + ")"

    def describe(self) -> dict[str, Any]:
        return {"model": "ensemble", "mode": "mean", "rubric": [j.name for j in self.judges]}

    def score_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        per_judge = [judge_safely(judge, requests) for judge in self.judges]
        results = []
        for index in range(len(requests)):
            members = [scores[index] for scores in per_judge]
            scored = [
                (weight, m.score)
                for weight, m in zip(self.weights, members, strict=True)
                if m.score is not None
            ]
            details = {
                **self.describe(),
                "members": {m.judge: m.score for m in members},
                "member_details": [m.details for m in members],
            }
            total = sum(w for w, _ in scored)
            if not scored or total <= 0:
                error = "; ".join(m.error or "no score" for m in members)
                results.append(Judgement(None, self.name, details, f"every member failed: {error}"))
                continue
            score = sum(w * s for w, s in scored) / total
            results.append(Judgement(score, self.name, details))
        return results

    def compare_batch(self, requests: Sequence[PairwiseRequest]) -> list[PairwiseJudgement]:
        comparers = [j for j in self.judges if hasattr(j, "compare_batch")]
        if not comparers:
            raise TypeError("no member of this ensemble can compare pairs")
        verdicts = [judge.compare_batch(requests) for judge in comparers]
        results = []
        for index in range(len(requests)):
            members = [v[index] for v in verdicts if v[index].p_a is not None]
            details = {"members": {m.judge: m.preferred for m in members}}
            if not members:
                error = "; ".join(v[index].error or "failed" for v in verdicts)
                results.append(PairwiseJudgement(None, None, None, self.name, details, error))
                continue
            votes = Counter(m.preferred for m in members)
            top, count = votes.most_common(1)[0]
            p_a = sum(m.p_a for m in members) / len(members)
            preferred = top if count > len(members) / 2 else decide(p_a)
            consistent = all(m.position_consistent for m in members)
            results.append(PairwiseJudgement(preferred, p_a, consistent, self.name, details))
        return results
