"""Is a resolution about its dilemma? A likelihood gate for off-topic text.

A small language model reads the resolution twice: after the dilemma (``Situation: TEXT``
then ``What should be done:``) and after the bare cue alone. The *relevance* is how much
reading the dilemma raises the resolution's mean token log-probability (a pointwise mutual
information per token): a plan written for this dilemma names its people, objects and
trade-offs, which the dilemma makes likely; a plan for another dilemma gains little or loses.

It is no measure of quality (a one-sided plan about the right dilemma gains as much as a fair
one), so it only gates: :class:`RelevanceGate` marks a resolution whose relevance is below a
threshold as off topic, and the judge that uses it (``rm?relevance=smollm2``) lowers that
resolution's score by a fixed number of points. The threshold of the shipped gate is the
largest that marks down at most 2% of the good resolutions of the reward-model recipe
(``python -m trainers.relevance_gate``: project-built texts on training-split scenarios),
never fitted on a labelled evaluation set. Measured (docs/results/relevance-gate): it catches
plans written for another dilemma, not plans about a neighbouring issue with the same people
or setting, and it changed almost no labelled pair, so it is an option, not the default.

>>> gate = RelevanceGate.load("smollm2")                             # doctest: +SKIP
>>> gate.relevance([JudgeRequest(scenario, "We split the cost ...")])  # doctest: +SKIP
[0.41]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from negotiation_env.judges.base import JudgeRequest
from negotiation_env.judges.cache import JudgeCache, cache_key
from negotiation_env.scenarios import Scenario

CUE = "What should be done:\n"
# Set by ``python -m trainers.relevance_gate`` (docs/results/relevance-gate/fit.json) for the
# model as the gate loads it (float32): it gates 2% of the recipe's good texts. Another model
# needs its own fit (``relevance_threshold=``).
FITTED_THRESHOLDS = {"smollm2": 0.2204}


def dilemma_prompt(scenario: Scenario) -> str:
    return f"Situation: {scenario.dilemma.text}\n\n{CUE}"


class RelevanceGate:
    """Relevance of resolutions to their dilemmas, and whether each passes ``threshold``.

    ``backend`` is a local language model with ``encode`` and ``sequence_logprobs``
    (:class:`llm.transformers_backend.TransformersBackend`). Scores are cached by the
    backend's name, the prompt and the text.
    """

    def __init__(self, backend: Any, threshold: float, cache: JudgeCache | None = None):
        if not hasattr(backend, "sequence_logprobs"):
            raise TypeError(
                f"relevance: backend {getattr(backend, 'name', backend)!r} cannot score "
                "token log-probabilities; use a local model (a registry name or hf:PATH)"
            )
        self.backend = backend
        self.threshold = float(threshold)
        self.cache = cache if cache is not None else JudgeCache()
        self.name = f"relevance:{backend.name}<{self.threshold:g}"

    @classmethod
    def load(
        cls, model: str = "smollm2", threshold: float | None = None, **options: Any
    ) -> RelevanceGate:
        """The gate on a registered model, in float32 unless ``dtype`` says otherwise; the
        threshold is the fitted one for that model unless given."""
        from llm.specs import load_backend

        if threshold is None:
            if model not in FITTED_THRESHOLDS:
                raise ValueError(
                    f"relevance: no fitted threshold for {model!r} (fitted: "
                    f"{sorted(FITTED_THRESHOLDS)}); fit one with python -m "
                    "trainers.relevance_gate and pass relevance_threshold="
                )
            threshold = FITTED_THRESHOLDS[model]
        cache = options.pop("cache", None)
        options.setdefault("dtype", "float32")
        return cls(load_backend(model, **options), threshold, cache)

    def _mean_logprobs(self, prompts: Sequence[str], texts: Sequence[str]) -> list[float]:
        keys = [
            cache_key(self.backend.name, "relevance", p, t)
            for p, t in zip(prompts, texts, strict=True)
        ]

        def mean_logprobs(todo: list[int]) -> list[float]:
            scored = self.backend.sequence_logprobs(
                self.backend.encode([prompts[i] for i in todo]),
                self.backend.encode([texts[i] for i in todo]),
            )
            return [sum(values) / len(values) if values else 0.0 for values in scored]

        return self.cache.get_or_compute(keys, mean_logprobs)

    def relevance(self, requests: Sequence[JudgeRequest]) -> list[float]:
        """Mean token log p(text | dilemma, cue) - mean token log p(text | cue), per request;
        an empty resolution has relevance 0."""
        texts = [r.resolution.strip() for r in requests]
        given_dilemma = self._mean_logprobs([dilemma_prompt(r.scenario) for r in requests], texts)
        alone = self._mean_logprobs([CUE] * len(texts), texts)
        return [
            (with_dilemma - without) if text else 0.0
            for text, with_dilemma, without in zip(texts, given_dilemma, alone, strict=True)
        ]

    def off_topic(self, relevance: float) -> bool:
        return relevance < self.threshold
