"""LLM negotiators: a backend, generation settings per phase, and the env's chat messages.

The environment already renders each seat's persona, the rules, the dilemma and the dialogue
into chat messages (``observation["messages"]``), so an :class:`LLMAgent` only chooses how to
sample: the paper's dialogue settings (temperature 0.7, top-p 0.95) for turns and a nearly
greedy setting (temperature 0.1) for the final resolution. It works unchanged with either
backend, for one observation or a batch:

>>> from llm.transformers_backend import TransformersBackend   # doctest: +SKIP
>>> agent = LLMAgent(TransformersBackend("smollm2"))                       # doctest: +SKIP
>>> utterances = agent.act_batch([observation_a, observation_b])          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.base import NegotiationAgent, Observation
from llm.interface import (
    CUT_TURN_POLICIES,
    Generation,
    GenerationSettings,
    LLMBackend,
    end_at_sentence,
    token_decoder,
)

DIALOGUE_SETTINGS = GenerationSettings(max_new_tokens=160, temperature=0.7, top_p=0.95)
SUMMARY_SETTINGS = GenerationSettings(max_new_tokens=256, temperature=0.1, top_p=0.95)


class LLMAgent(NegotiationAgent):
    """An agent that asks an LLM backend to continue the observation's chat.

    After each call, ``last_generations`` holds the :class:`Generation` of every observation
    (token ids, log-probabilities), aligned with the observations, for trainers.

    A turn or resolution stopped by the token limit mid-sentence is ended after its last
    complete sentence (``cut_turns="sentence"``, as in training; ``"keep"`` leaves it cut).
    """

    def __init__(
        self,
        backend: LLMBackend,
        dialogue: GenerationSettings = DIALOGUE_SETTINGS,
        summary: GenerationSettings = SUMMARY_SETTINGS,
        name: str | None = None,
        cut_turns: str = "sentence",
    ):
        if cut_turns not in CUT_TURN_POLICIES:
            raise ValueError(f"cut_turns: {cut_turns!r} is not one of {list(CUT_TURN_POLICIES)}")
        self.backend = backend
        self.cut_turns = cut_turns
        self.dialogue = dialogue
        self.summary = summary
        self.name = name or backend.name
        self.last_generations: list[Generation] = []
        self.generated_tokens = 0  # running total, for throughput figures

    def settings_for(self, observation: Observation) -> GenerationSettings:
        return self.summary if observation.get("phase") == "summary" else self.dialogue

    def generate_batch(self, observations: Sequence[Observation]) -> list[Generation]:
        """Generations for a batch of observations: one backend call per phase present."""
        results: list[Generation | None] = [None] * len(observations)
        for phase_settings in (self.dialogue, self.summary):
            indices = [
                i for i, o in enumerate(observations) if self.settings_for(o) is phase_settings
            ]
            if not indices:
                continue
            conversations = [list(observations[i]["messages"]) for i in indices]
            for index, generation in zip(
                indices, self.backend.generate(conversations, phase_settings), strict=True
            ):
                self.generated_tokens += len(generation.token_ids or generation.tokens or ())
                if self.cut_turns == "sentence":
                    generation = end_at_sentence(generation, token_decoder(self.backend))
                results[index] = generation
        self.last_generations = results  # type: ignore[assignment]
        return self.last_generations

    def act_batch(self, observations: Sequence[Observation]) -> list[str]:
        return [generation.text for generation in self.generate_batch(observations)]

    def act(self, observation: Observation) -> str:
        return self.act_batch([observation])[0]
