"""LLM judges: absolute scores, pairwise preferences, in-group rewards and agreement decisions.

A judge wraps any LLM backend (``generate`` and ``next_token_logprobs``; see
``llm``) and a versioned rubric (:mod:`negotiation_env.judges.prompting`).

Scoring modes
    ``expected``: the judge's answer starts with ``Score: `` and the probabilities of the
    digits 0-5 as the next token are read off; the score is their expectation. Continuous,
    and far less noisy than one sampled digit. ``parsed``: the judge writes its answer and a
    strict pattern (``Score: N``) is parsed, with bounded retries; for servers that give no
    log-probabilities. ``auto`` (default) uses ``expected`` and falls back to ``parsed``
    when the backend cannot provide log-probabilities.

Pairwise
    :meth:`LLMJudge.compare_batch` asks which of two resolutions is better in both orders and
    combines them (:mod:`negotiation_env.judges.pairwise`): ``p_a`` is the mean of the two
    orders' probabilities that ``a`` is better, ``preferred`` is "a" or "b" when ``p_a`` is
    outside the tie band around 0.5, else "tie"; ``position_consistent`` says whether each
    order on its own would have chosen the same side. :meth:`LLMJudge.group_rewards` turns the G resolutions of a GRPO group into
    rewards by their mean win probability against the others (both orders), optionally mixed
    with the absolute score.

Injection
    Resolutions are quoted between nonce markers with control-token look-alikes
    neutralised. With ``injection="strip"`` (default), sentences that address the judge are
    removed before judging; ``"penalize"`` also subtracts ``injection_penalty`` from an
    absolute score and makes a flagged side lose a comparison; ``"flag"`` only reports. Every result lists the signals found in ``details["injection"]``.

Failures return a :class:`Judgement` with ``score=None`` and the reason in ``error``;
nothing is ever silently scored 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from llm.interface import GenerationSettings, LogprobsUnavailable
from negotiation_env.judges.base import (
    AgreementDecision,
    AgreementRequest,
    Judgement,
    JudgeRequest,
)
from negotiation_env.judges.cache import JudgeCache, cache_key
from negotiation_env.judges.pairwise import (
    DEFAULT_TIE_BAND,
    PairwiseJudgement,
    PairwiseRequest,
    combine_orders,
)
from negotiation_env.judges.prompting import (
    DEFAULT_RUBRICS,
    Rubric,
    detect_injection,
    load_rubric,
    quote,
    render_template,
    strip_injection,
)
from negotiation_env.scenarios import Scenario
from negotiation_env.transcript import format_transcript

DIGITS = tuple(str(d) for d in range(6))
SCORE_PREFIX = "Score: "
CHOICE_PREFIX = "Better:"
CHOICES = (" A", " B")
AGREEMENT_PREFIX = "Agreed:"
AGREEMENT_ANSWERS = (" yes", " no")
MODES = ("auto", "expected", "parsed")
INJECTION_POLICIES = ("strip", "penalize", "flag")
_SCORE_PATTERN = re.compile(r"score\s*[:=]\s*([0-5])\b", re.IGNORECASE)
_CHOICE_PATTERN = re.compile(r"better\s*[:=]\s*\**\s*([AB])\b", re.IGNORECASE)
_AGREED_PATTERN = re.compile(r"agreed\s*[:=]\s*\**\s*(yes|no)\b", re.IGNORECASE)


def _softmax(logprobs: Sequence[float]) -> tuple[list[float], float]:
    """Renormalised probabilities over the candidates, and the mass they held."""
    finite = [lp for lp in logprobs if lp != float("-inf")]
    if not finite:
        return [1.0 / len(logprobs)] * len(logprobs), 0.0
    top = max(finite)
    weights = [math.exp(lp - top) if lp != float("-inf") else 0.0 for lp in logprobs]
    total = sum(weights)
    return [w / total for w in weights], sum(math.exp(lp) for lp in finite)


def _persona_fields(scenario: Scenario) -> dict[str, str]:
    a, b = scenario.personas
    return {
        "title": scenario.dilemma.title,
        "dilemma": scenario.dilemma.text,
        "name_a": a.name,
        "values_a": ", ".join(a.core_values),
        "name_b": b.name,
        "values_b": ", ".join(b.core_values),
    }


class LLMJudge:
    """Scores resolutions for one criterion (``ca`` or ``conflict``) with an LLM backend.

    >>> judge = LLMJudge(TransformersBackend("qwen2.5-coder-0.5b"), rubric="ca-v2")  # doctest: +SKIP
    >>> judge.score_batch([JudgeRequest(scenario, "We split the cost ...")])[0].score  # doctest: +SKIP
    3.4
    """

    def __init__(
        self,
        backend: Any,
        rubric: str | Rubric = DEFAULT_RUBRICS["ca"],
        mode: str = "auto",
        include_transcript: bool = False,
        injection: str = "strip",
        injection_penalty: float = 1.0,
        max_retries: int = 2,
        cache: JudgeCache | None = None,
        tie_band: float = DEFAULT_TIE_BAND,
    ):
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not one of {list(MODES)}")
        if injection not in INJECTION_POLICIES:
            raise ValueError(f"injection: {injection!r} is not one of {list(INJECTION_POLICIES)}")
        self.backend = backend
        self.rubric = rubric if isinstance(rubric, Rubric) else load_rubric(rubric)
        self.mode = mode
        self.include_transcript = include_transcript
        self.injection = injection
        self.injection_penalty = injection_penalty
        self.max_retries = max_retries
        self.cache = cache if cache is not None else JudgeCache()
        self.tie_band = tie_band
        self.name = f"{backend.name}|{self.rubric.id}|{mode}"

    def describe(self) -> dict[str, str]:
        """What the ``judge`` field of a result records."""
        return {"model": self.backend.name, "mode": self.mode, "rubric": self.rubric.id}

    # ------------------------------------------------------------------ prompts
    def _clean(self, text: str) -> tuple[str, list[str]]:
        if self.injection == "flag":
            return text, detect_injection(text)
        return strip_injection(text)

    def absolute_prompt(self, request: JudgeRequest) -> tuple[list[dict[str, str]], list[str]]:
        resolution, signals = self._clean(request.resolution)
        opening, safe, closing = quote("RESOLUTION", resolution or "(empty)")
        transcript_block = ""
        if self.include_transcript and request.transcript:
            t_open, t_safe, t_close = quote("DIALOGUE", format_transcript(request.transcript))
            transcript_block = (
                f"\nNegotiation dialogue:\n{t_open}\n{t_safe}\n{t_close}\n\nFinal resolution:"
            )
        user = render_template(
            self.rubric.template("absolute"),
            **_persona_fields(request.scenario),
            transcript_block=transcript_block,
            open_resolution=opening,
            resolution=safe,
            close_resolution=closing,
        )
        return [
            {"role": "system", "content": self.rubric.system},
            {"role": "user", "content": user},
        ], signals

    def pairwise_prompt(self, scenario: Scenario, first: str, second: str) -> list[dict[str, str]]:
        open_first, first_safe, close_first = quote("RESOLUTION A", first or "(empty)")
        open_second, second_safe, close_second = quote("RESOLUTION B", second or "(empty)")
        user = render_template(
            self.rubric.template("pairwise"),
            **_persona_fields(scenario),
            open_first=open_first,
            first=first_safe,
            close_first=close_first,
            open_second=open_second,
            second=second_safe,
            close_second=close_second,
        )
        return [
            {"role": "system", "content": self.rubric.system},
            {"role": "user", "content": user},
        ]

    # ------------------------------------------------------------------ asking
    def ask(
        self,
        kind: str,
        conversations: list[list[dict[str, str]]],
        candidates: Sequence[str],
        prefix: str,
        pattern: re.Pattern[str],
    ) -> list[dict[str, Any]]:
        """A probability per candidate for each conversation, or an error; cached. ``kind``
        names the question in the cache key, ``pattern`` parses a generated answer.

        Expected mode reads the probabilities of the candidates as the next token after
        ``prefix``; parsed mode (or auto without log-probabilities) generates answers, batched,
        retrying only the unparsable ones, and turns the parsed answer into certainty.
        """
        results: list[dict[str, Any] | None] = [None] * len(conversations)
        keys = [
            cache_key(self.backend.name, self.mode, self.rubric.id, kind, c) for c in conversations
        ]
        todo = []
        for index, key in enumerate(keys):
            results[index] = self.cache.get(key)
            if results[index] is None:
                todo.append(index)
        if todo and self._use_expected():
            try:
                rows = self.backend.next_token_logprobs(
                    [conversations[i] for i in todo], candidates, assistant_prefix=prefix
                )
            except LogprobsUnavailable as error:
                if self.mode == "expected":
                    todo = self._failed(results, todo, error)
                # else: no log-probabilities from this backend; parse answers instead
            except Exception as error:  # noqa: BLE001 - any backend failure becomes a reasoned result
                todo = self._failed(results, todo, error)
            else:
                for index, row in zip(todo, rows, strict=True):
                    probabilities, mass = _softmax([row[c] for c in candidates])
                    results[index] = {
                        "probabilities": probabilities,
                        "mass": mass,
                        "scoring": "expected",
                    }
                    self.cache.put(keys[index], results[index])
                todo = []
        answers: dict[int, list[str]] = {i: [] for i in todo}
        labels = [c.strip().lower() for c in candidates]
        for attempt in range(1 + self.max_retries):
            if not todo:
                break
            settings = GenerationSettings(
                max_new_tokens=12, temperature=0.0 if attempt == 0 else 0.7, top_p=1.0
            )
            try:
                generations = self.backend.generate([conversations[i] for i in todo], settings)
            except Exception as error:  # noqa: BLE001
                for index in todo:
                    results[index] = {
                        "error": f"{type(error).__name__}: {error}",
                        "answers": answers[index],
                    }
                todo = []
                break
            unparsed = []
            for index, generation in zip(todo, generations, strict=True):
                answers[index].append(generation.text)
                match = pattern.search(generation.text)
                if match and match.group(1).lower() in labels:
                    choice = labels.index(match.group(1).lower())
                    probabilities = [float(i == choice) for i in range(len(candidates))]
                    results[index] = {
                        "probabilities": probabilities,
                        "answers": answers[index],
                        "scoring": "parsed",
                    }
                    self.cache.put(keys[index], results[index])
                else:
                    unparsed.append(index)
            todo = unparsed
        for index in todo:  # failures are not cached: the next call tries again
            results[index] = {
                "error": f"no '{prefix.strip()} ...' answer in {len(answers[index])} answers",
                "answers": answers[index],
            }
        return results  # type: ignore[return-value]

    @staticmethod
    def _failed(results: list, todo: list[int], error: Exception) -> list[int]:
        """Every pending row gets the backend's error as its result; none is left to do."""
        for index in todo:
            results[index] = {"error": f"{type(error).__name__}: {error}"}
        return []

    def _use_expected(self) -> bool:
        return self.mode in ("expected", "auto")

    # ------------------------------------------------------------------ absolute
    def score_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        prompts = [self.absolute_prompt(r) for r in requests]
        outcomes = self.ask(
            "absolute", [c for c, _ in prompts], DIGITS, SCORE_PREFIX, _SCORE_PATTERN
        )
        judgements = []
        for (_, signals), outcome in zip(prompts, outcomes, strict=True):
            details = {**self.describe(), "injection": signals, **outcome}
            if "error" in outcome:
                judgements.append(Judgement(None, self.name, details, error=outcome["error"]))
                continue
            score = sum(digit * p for digit, p in enumerate(outcome["probabilities"]))
            if signals and self.injection == "penalize":
                score = max(0.0, score - self.injection_penalty)
            judgements.append(Judgement(score, self.name, details))
        return judgements

    # ------------------------------------------------------------------ pairwise
    def compare_batch(self, requests: Sequence[PairwiseRequest]) -> list[PairwiseJudgement]:
        """For each request, which resolution is better, asked in both orders."""
        conversations, signals = [], []
        for request in requests:
            a, signals_a = self._clean(request.resolution_a)
            b, signals_b = self._clean(request.resolution_b)
            signals.append({"a": signals_a, "b": signals_b})
            conversations.append(self.pairwise_prompt(request.scenario, a, b))
            conversations.append(self.pairwise_prompt(request.scenario, b, a))
        orders = self.ask("pairwise", conversations, CHOICES, CHOICE_PREFIX, _CHOICE_PATTERN)
        results = []
        for index, found in enumerate(signals):
            forward, backward = orders[2 * index], orders[2 * index + 1]
            details = {
                **self.describe(),
                "injection": found,
                "a_first": forward,
                "b_first": backward,
            }
            if "error" in forward or "error" in backward:
                error = forward.get("error") or backward.get("error")
                results.append(PairwiseJudgement(None, None, None, self.name, details, error))
                continue
            # forward shows a first (A), backward shows b first: a is then the second choice
            p_a_first, p_a_second = forward["probabilities"][0], backward["probabilities"][1]
            if self.injection == "penalize" and bool(found["a"]) != bool(found["b"]):
                p_a_first = p_a_second = (
                    0.0 if found["a"] else 1.0
                )  # the side that addressed the judge loses
            p_a, preferred, consistent = combine_orders(p_a_first, p_a_second, self.tie_band)
            results.append(PairwiseJudgement(preferred, p_a, consistent, self.name, details))
        return results

    def group_rewards(
        self, requests: Sequence[JudgeRequest], absolute_weight: float = 0.0
    ) -> list[Judgement]:
        """In-group pairwise reward: each resolution's mean win probability against the others.

        The G requests must share a scenario. Each pair is compared in both orders; the
        reward is ``5 * win_rate`` (so it lives on the same 0-5 scale as absolute scores),
        mixed as ``(1 - w) * 5 * win_rate + w * absolute`` when ``absolute_weight = w > 0``.
        A resolution whose comparisons all failed gets no score.
        """
        if not 0.0 <= absolute_weight <= 1.0:
            raise ValueError(f"absolute_weight must be in [0, 1], got {absolute_weight}")
        scenario_ids = {r.scenario.id for r in requests}
        if len(scenario_ids) > 1:
            raise ValueError(
                f"group_rewards needs one scenario per group, got {sorted(scenario_ids)}"
            )
        n = len(requests)
        if n < 2:
            return self.score_batch(requests)
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        outcomes = self.compare_batch(
            [
                PairwiseRequest(
                    requests[0].scenario, requests[i].resolution, requests[j].resolution
                )
                for i, j in pairs
            ]
        )
        wins: list[list[float]] = [[] for _ in range(n)]
        for (i, j), outcome in zip(pairs, outcomes, strict=True):
            if outcome.p_a is None:
                continue
            wins[i].append(outcome.p_a)
            wins[j].append(1.0 - outcome.p_a)
        absolute = self.score_batch(requests) if absolute_weight > 0 else [None] * n
        judgements = []
        for index in range(n):
            if not wins[index]:
                judgements.append(
                    Judgement(None, self.name, self.describe(), error="every comparison failed")
                )
                continue
            win_rate = sum(wins[index]) / len(wins[index])
            score = 5.0 * win_rate
            details = {**self.describe(), "win_rate": win_rate, "comparisons": len(wins[index])}
            if absolute_weight > 0:
                if absolute[index].score is None:
                    judgements.append(
                        Judgement(None, self.name, details, error=absolute[index].error)
                    )
                    continue
                details["absolute"] = absolute[index].score
                score = (1 - absolute_weight) * score + absolute_weight * absolute[index].score
            judgements.append(Judgement(score, self.name, details))
        return judgements


class LLMAgreementDetector:
    """After a turn: do the parties agree on the core direction? Probability and decision.

    Shows the judge the last ``context_turns`` turns. ``P(agree)`` comes from the
    probabilities of "yes"/"no" after ``Agreed:`` (or a parsed answer when the backend has
    no log-probabilities); the decision is ``P(agree) >= threshold``. A backend failure
    counts as "not agreed" with the error in ``details``, so an episode is never ended by a
    failing judge.
    """

    def __init__(
        self,
        backend: Any,
        rubric: str | Rubric = DEFAULT_RUBRICS["agreement"],
        threshold: float = 0.5,
        context_turns: int = 2,
        cache: JudgeCache | None = None,
        mode: str = "auto",
    ):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.judge = LLMJudge(backend, rubric, mode=mode, injection="flag", cache=cache)
        self.threshold = threshold
        self.context_turns = context_turns
        self.name = f"{backend.name}|{self.judge.rubric.id}|agreement"

    def prompt(self, request: AgreementRequest) -> list[dict[str, str]]:
        turns = (
            request.transcript[-self.context_turns :] if self.context_turns else request.transcript
        )
        opening, safe, closing = quote("TURNS", format_transcript(turns))
        user = render_template(
            self.judge.rubric.template("agreement"),
            **_persona_fields(request.scenario),
            open_transcript=opening,
            transcript=safe,
            close_transcript=closing,
        )
        return [
            {"role": "system", "content": self.judge.rubric.system},
            {"role": "user", "content": user},
        ]

    def detect_batch(self, requests: Sequence[AgreementRequest]) -> list[AgreementDecision]:
        conversations = [self.prompt(r) for r in requests]
        outcomes = self.judge.ask(
            "agreement", conversations, AGREEMENT_ANSWERS, AGREEMENT_PREFIX, _AGREED_PATTERN
        )
        decisions = []
        for outcome in outcomes:
            details = {"rubric": self.judge.rubric.id, "model": self.judge.backend.name, **outcome}
            if "error" in outcome:
                decisions.append(AgreementDecision(False, 0.0, self.name, details))
                continue
            p_agree = outcome["probabilities"][0]
            decisions.append(
                AgreementDecision(p_agree >= self.threshold, p_agree, self.name, details)
            )
        return decisions


__all__ = [
    "LLMAgreementDetector",
    "LLMJudge",
    "PairwiseJudgement",
    "PairwiseRequest",
]
