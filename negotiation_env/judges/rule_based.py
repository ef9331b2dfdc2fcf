"""Deterministic judges: stand-ins for tests and scripted play, not measures of alignment.

:class:`KeywordRubricJudge` is a **test double**. It scores a resolution by surface features
(mentions both personas' values, concrete commitments, sensible length, no hostility), so
that unit tests and scripted demos get a reproducible reward without loading a model. It is
never the judge behind a reported number: use the LLM judges for that.

:class:`MarkerAgreementDetector` is the env's default agreement detector: the speaker agrees
by writing an explicit marker (``[AGREE]`` by default), which the dialogue prompt explains.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from negotiation_env.judges.base import (
    AgreementDecision,
    AgreementRequest,
    Judgement,
    JudgeRequest,
)
from negotiation_env.text import content_words, count_words, words

HOSTILE_WORDS = frozenset(
    "idiot idiots stupid dumb moron pathetic worthless ridiculous hate shut disgusting "
    "incompetent liar liars clown useless".split()
)
COMMITMENT_WORDS = frozenset(
    "will agree agreed commit commits schedule plan each both share split review pilot "
    "trial weekly monthly deadline budget".split()
)
_HAS_NUMBER = re.compile(r"\d")


class KeywordRubricJudge:
    """Test double: a 0-5 score from surface features of the resolution.

    One point each for: mentioning a core value of persona A; of persona B; a concrete
    commitment (a number or a commitment word); a length of 20-250 words; no hostile words.
    An empty resolution scores 0.
    """

    name = "keyword-rubric-v1"

    def score_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        return [self.score_one(request) for request in requests]

    def score_one(self, request: JudgeRequest) -> Judgement:
        text = request.resolution.strip()
        if not text:
            return Judgement(0.0, self.name, {"reason": "empty resolution"})
        vocabulary = content_words(text)
        persona_a, persona_b = request.scenario.personas
        points = {
            "values_a": bool(vocabulary & content_words(" ".join(persona_a.core_values))),
            "values_b": bool(vocabulary & content_words(" ".join(persona_b.core_values))),
            "concrete": bool(_HAS_NUMBER.search(text) or vocabulary & COMMITMENT_WORDS),
            "length": 20 <= count_words(text) <= 250,
            "civil": not (set(words(text)) & HOSTILE_WORDS),
        }
        return Judgement(float(sum(points.values())), self.name, {"points": points})

    def compare_batch(self, requests: Sequence[Any]) -> list[Any]:
        """Pairwise by comparing the two scores (so the test double also serves pairwise code)."""
        from negotiation_env.judges.pairwise import PairwiseJudgement

        results = []
        for request in requests:
            a, b = (
                self.score_one(JudgeRequest(request.scenario, text)).score
                for text in (request.resolution_a, request.resolution_b)
            )
            preferred = "a" if a > b else "b" if b > a else "tie"
            p_a = 0.5 + 0.5 * (a > b) - 0.5 * (b > a)
            results.append(PairwiseJudgement(preferred, p_a, True, self.name, {"scores": [a, b]}))
        return results


class MarkerAgreementDetector:
    """Agreement when the latest turn contains the marker (case-insensitive)."""

    def __init__(self, marker: str = "[AGREE]"):
        if not marker.strip():
            raise ValueError("agreement marker must not be empty")
        self.marker = marker
        self.name = f"marker:{marker}"
        self._pattern = re.compile(re.escape(marker), re.IGNORECASE)

    def detect_batch(self, requests: Sequence[AgreementRequest]) -> list[AgreementDecision]:
        decisions = []
        for request in requests:
            latest = request.transcript[-1].text if request.transcript else ""
            agreed = bool(self._pattern.search(latest))
            decisions.append(AgreementDecision(agreed, float(agreed), self.name))
        return decisions
