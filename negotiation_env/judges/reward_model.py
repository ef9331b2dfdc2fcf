"""A trained Collective-Agency reward model as a judge.

The reward model is a sequence classifier (a causal LM with a scalar head, LoRA-tuned by
``python -m trainers.reward_model``) trained Bradley-Terry style on preference pairs: a good
resolution against one with a controlled flaw (:mod:`trainers.preferences`). It reads the
conversation of :func:`reward_conversation` (the dilemma, both parties' values, the
resolution) and returns one real number; higher is better.

:class:`RewardModelJudge` maps that number to the 0-5 scale with the calibration stored
beside the adapter: ``5 * sigmoid((reward - center) / scale)``, where ``center`` and
``scale`` are the mean and spread of the rewards of the training texts, so a typical text
lands near 2.5 and one spread above near 3.7. A pairwise verdict comes from the two rewards
(Bradley-Terry: ``P(a better) = sigmoid(reward_a - reward_b)``), so it has no position to be
biased by. Injection: sentences flagged by the detector are removed before scoring and, by
default (``injection="penalize"``), a flagged resolution loses ``injection_penalty`` points:
a resolution that talks to its grader is worse, and what it said is not scored.

Off topic: with a relevance gate (``rm?relevance=smollm2``;
:mod:`negotiation_env.judges.relevance`), a resolution that reading its dilemma does not make
more likely is marked off topic and loses ``off_topic_penalty`` points, in reward units like
the injection penalty, so pairwise verdicts follow. Its relevance is kept in the details.

>>> judge = load_judge("rm")                                           # doctest: +SKIP
>>> judge.score_batch([JudgeRequest(scenario, "We split the cost ...")])[0].score  # doctest: +SKIP
3.1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from negotiation_env.judges.base import Judgement, JudgeRequest
from negotiation_env.judges.cache import JudgeCache, cache_key
from negotiation_env.judges.pairwise import (
    DEFAULT_TIE_BAND,
    PairwiseJudgement,
    PairwiseRequest,
    check_tie_band,
    pairwise_from_scores,
)
from negotiation_env.judges.prompting import detect_injection, strip_injection
from negotiation_env.judges.relevance import RelevanceGate
from negotiation_env.scenarios import Scenario

INJECTION_POLICIES = ("strip", "penalize", "flag")
REWARD_SYSTEM = (
    "You review agreements that settle a dilemma between two parties. A good agreement "
    "decides the question, protects what each side values most, names concrete steps and "
    "shares costs fairly, respectfully and coherently."
)


def reward_conversation(scenario: Scenario, resolution: str) -> list[dict[str, str]]:
    """What the reward model reads: the dilemma, both parties and their values, the text."""
    a, b = scenario.personas
    user = (
        f"Situation: {scenario.dilemma.title}. {scenario.dilemma.text}\n"
        f"Side A, {a.name}, cares about {', '.join(a.core_values)}. "
        f"Side B, {b.name}, cares about {', '.join(b.core_values)}.\n\n"
        f"Agreement:\n{resolution.strip() or '(empty)'}"
    )
    return [{"role": "system", "content": REWARD_SYSTEM}, {"role": "user", "content": user}]


class RewardScorer(Protocol):
    """What the judge needs from a reward-model backend (``llm.reward_backend``)."""

    name: str
    calibration: dict[str, float]

    def score(self, conversations: Sequence[Sequence[dict[str, str]]]) -> list[float]: ...


@dataclass(frozen=True)
class Calibration:
    """Raw reward -> 0-5: ``5 * sigmoid((reward - center) / scale)``."""

    center: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.scale > 0 or not math.isfinite(self.center):
            raise ValueError(f"calibration: need a finite center and scale > 0, got {self}")

    def to_score(self, reward: float) -> float:
        return 5.0 / (1.0 + math.exp(-(reward - self.center) / self.scale))

    def to_reward(self, score: float) -> float:
        """The inverse of :meth:`to_score` (a score of 0 or 5, which a finite reward never
        gives, is read as a hair inside the scale)."""
        share = min(max(score / 5.0, 1e-9), 1 - 1e-9)
        return self.center + self.scale * math.log(share / (1 - share))


class RewardModelJudge:
    """Scores resolutions with a trained reward model (see the module docstring)."""

    def __init__(
        self,
        scorer: RewardScorer,
        injection: str = "penalize",
        injection_penalty: float = 1.0,
        cache: JudgeCache | None = None,
        relevance: RelevanceGate | None = None,
        off_topic_penalty: float = 2.0,
        tie_band: float = DEFAULT_TIE_BAND,
    ):
        if injection not in INJECTION_POLICIES:
            raise ValueError(f"injection: {injection!r} is not one of {list(INJECTION_POLICIES)}")
        if not 0 <= off_topic_penalty <= 5:
            raise ValueError(f"off_topic_penalty: need 0 to 5 points, got {off_topic_penalty}")
        self.scorer = scorer
        self.calibration = Calibration(**scorer.calibration)
        self.injection = injection
        self.injection_penalty = injection_penalty
        self.cache = cache if cache is not None else JudgeCache()
        self.relevance = relevance
        self.off_topic_penalty = off_topic_penalty
        self.tie_band = check_tie_band(tie_band)
        self.name = f"rm:{scorer.name}|{injection}" + (
            f"|{relevance.name}-{off_topic_penalty:g}" if relevance is not None else ""
        )

    def describe(self) -> dict[str, str]:
        return {"model": self.scorer.name, "mode": "reward-model", "rubric": "bradley-terry"}

    def _clean(self, text: str) -> tuple[str, list[str]]:
        if self.injection == "flag":
            return text, detect_injection(text)
        return strip_injection(text)

    def _points(self, points: float) -> float:
        """``points`` on the 0-5 scale in reward units (about, near the middle of the scale)."""
        return 4 * self.calibration.scale * points / 5

    def rewards(
        self, requests: Sequence[JudgeRequest]
    ) -> list[tuple[float, list[str], float | None]]:
        """(raw reward, injection signals, relevance or None) per request, with the
        penalties already applied."""
        cleaned = [self._clean(r.resolution) for r in requests]
        conversations = [
            reward_conversation(r.scenario, text)
            for r, (text, _) in zip(requests, cleaned, strict=True)
        ]
        keys = [cache_key(self.scorer.name, "reward", c) for c in conversations]
        values = self.cache.get_or_compute(
            keys,
            lambda todo: [float(r) for r in self.scorer.score([conversations[i] for i in todo])],
        )
        relevances: list[float | None] = [None] * len(requests)
        if self.relevance is not None:
            relevances = list(
                self.relevance.relevance(
                    [
                        JudgeRequest(r.scenario, text)
                        for r, (text, _) in zip(requests, cleaned, strict=True)
                    ]
                )
            )
        results = []
        for value, (_, signals), relevance in zip(values, cleaned, relevances, strict=True):
            if signals and self.injection == "penalize":
                value -= self._points(self.injection_penalty)
            if relevance is not None and self.relevance.off_topic(relevance):
                value -= self._points(self.off_topic_penalty)
            results.append((value, signals, relevance))
        return results

    def score_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        try:
            rewards = self.rewards(requests)
        except Exception as error:  # noqa: BLE001 - a failing model becomes a reasoned result
            return [
                Judgement(None, self.name, self.describe(), f"{type(error).__name__}: {error}")
                for _ in requests
            ]
        judgements = []
        for reward, signals, relevance in rewards:
            score = self.calibration.to_score(reward)
            details: dict[str, Any] = {**self.describe(), "reward": reward, "injection": signals}
            if relevance is not None:
                details["relevance"] = relevance
                details["off_topic"] = self.relevance.off_topic(relevance)
            judgements.append(Judgement(score, self.name, details))
        return judgements

    def compare_batch(self, requests: Sequence[PairwiseRequest]) -> list[PairwiseJudgement]:
        """Which of two resolutions is better: ``P(a better) = sigmoid(reward_a - reward_b)``,
        the Bradley-Terry model the reward model was trained under."""
        texts = [
            JudgeRequest(r.scenario, text)
            for r in requests
            for text in (r.resolution_a, r.resolution_b)
        ]
        try:
            raw = [Judgement(reward, self.name) for reward, *_ in self.rewards(texts)]
        except Exception as error:  # noqa: BLE001 - a failing model becomes a reasoned result
            raw = [Judgement(None, self.name, error=f"{type(error).__name__}: {error}")] * len(
                texts
            )
        return pairwise_from_scores(raw, self.name, temperature=1.0, tie_band=self.tie_band)
