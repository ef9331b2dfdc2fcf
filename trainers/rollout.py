"""Self-play rollouts: groups of dialogues on vectorized envs, turned into GRPO samples.

For each scenario, G dialogues are played on G env instances with the same scenario. Every
round, the acting seats of all unfinished dialogues (of all scenarios) are generated in one
batched call per phase; agreement checks and the final judging are batched by the
:class:`~negotiation_env.vector.VectorNegotiationEnv`; finished dialogues drop out.

Each dialogue turn of a trained seat becomes one training sample whose prompt is *exactly*
the chat that turn was sampled from (that seat's persona and rules, the dilemma, the last
``context_turns`` turns), and whose completion is the generated tokens with the
log-probabilities recorded at sampling time. So the loss covers the trained seat's dialogue
turns and nothing else: the persona, system text and partner's turns are only ever prompt,
and the resolution is not a sample unless ``rollout.train_resolution`` asks for it (then it
is one more sample, after the turns). Every sample of a dialogue carries the dialogue's
reward. A dialogue yields exactly :meth:`TrainConfig.samples_per_dialogue` samples: turns it
did not reach (and a resolution it did not write) are padded with one-token samples whose
``env_mask`` is 0, so every group has the same size for TRL and its per-group mean and
standard deviation equal the per-dialogue ones (each dialogue is counted the same number of
times).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llm.interface import (
    CUT_TURN_POLICIES,
    Generation,
    GenerationSettings,
    end_at_sentence,
    prefix_caching,
    token_decoder,
)
from negotiation_env.protocol import Phase
from negotiation_env.vector import VectorNegotiationEnv


@dataclass
class TurnSample:
    seat: str
    turn: int
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]


@dataclass
class DialogueOutcome:
    scenario_id: str
    reward: float | None  # None when the judge failed: the dialogue is left out of the loss
    info: dict[str, Any]
    samples: list[TurnSample] = field(default_factory=list)
    resolution: TurnSample | None = None  # recorded only when the resolution is trained
    generated_tokens: int = 0
    turns: int = 0  # dialogue turns generated (both seats)
    clipped_turns: int = 0  # of those, stopped by the token limit (before any cut)


@dataclass
class RolloutStats:
    generation_seconds: float = 0.0
    judging_seconds: float = 0.0
    generated_tokens: int = 0
    backend_calls: int = 0


def _keep_sample(earlier: list[TurnSample], sample: TurnSample) -> None:
    """Add a dialogue's trained turn; a new attempt at the same turn (the observer blocked
    the earlier one) replaces it, so a dialogue keeps one sample per turn."""
    if earlier and (earlier[-1].seat, earlier[-1].turn) == (sample.seat, sample.turn):
        earlier[-1] = sample
    else:
        earlier.append(sample)


def play_dialogues(
    backend: Any,
    vector_env: VectorNegotiationEnv,
    scenario_ids: Sequence[str],
    dialogue: GenerationSettings,
    summary: GenerationSettings,
    trained_seats: Sequence[str],
    cut_turns: str = "sentence",
    train_resolution: bool = False,
) -> tuple[list[DialogueOutcome], RolloutStats]:
    """Play one dialogue per scenario id (repeat ids for groups) and collect trained turns.

    A turn or resolution stopped by the token limit is ended after its last complete
    sentence when ``cut_turns`` is ``"sentence"`` (see
    :func:`~llm.interface.end_at_sentence`): the partner and the judge
    read the kept text, so a resolution is judged on what it says rather than on where the
    token budget fell, and a training sample holds only the kept tokens. ``"keep"`` passes
    cut texts on as they are. With ``train_resolution`` the resolution's tokens are kept as
    a sample too (:attr:`DialogueOutcome.resolution`). The backend reuses the prompt prefixes it has
    computed (see ``prefix_caching``) for the length of this call, while the weights stay
    fixed.
    """
    if cut_turns not in CUT_TURN_POLICIES:
        raise ValueError(f"cut_turns: {cut_turns!r} is not one of {list(CUT_TURN_POLICIES)}")
    stats = RolloutStats()
    vector_env.reset(list(scenario_ids))
    samples: list[list[TurnSample]] = [[] for _ in scenario_ids]
    resolutions: list[TurnSample | None] = [None] * len(scenario_ids)
    tokens = [0] * len(scenario_ids)
    turns, clipped = [0] * len(scenario_ids), [0] * len(scenario_ids)
    decode = token_decoder(backend)

    def act(pending: list[tuple[int, str, dict[str, Any]]]) -> dict[int, str]:
        actions: dict[int, str] = {}
        for phase, settings in ((Phase.DIALOGUE, dialogue), (Phase.SUMMARY, summary)):
            items = [(i, seat, obs) for i, seat, obs in pending if obs["phase"] == phase]
            if not items:
                continue
            started = time.perf_counter()
            generations: list[Generation] = backend.generate(
                [list(obs["messages"]) for _, _, obs in items], settings
            )
            stats.generation_seconds += time.perf_counter() - started
            stats.backend_calls += 1
            for (index, seat, obs), generation in zip(items, generations, strict=True):
                tokens[index] += len(generation.token_ids)
                if phase == Phase.DIALOGUE:
                    turns[index] += 1
                    clipped[index] += generation.finish_reason == "length"
                if cut_turns == "sentence":
                    generation = end_at_sentence(generation, decode)
                sample = TurnSample(
                    seat,
                    obs["turn"],
                    list(generation.prompt_token_ids or []),
                    list(generation.token_ids),
                    list(generation.logprobs or []),
                )
                if phase == Phase.DIALOGUE and seat in trained_seats:
                    _keep_sample(samples[index], sample)
                elif phase == Phase.SUMMARY and train_resolution:
                    resolutions[index] = sample  # a new attempt replaces a blocked one
                actions[index] = generation.text
        return actions

    started = time.perf_counter()
    with prefix_caching([backend]):
        vector_env.play(act)
    # what the env spent between generations: agreement checks and judging
    stats.judging_seconds = time.perf_counter() - started - stats.generation_seconds
    stats.generated_tokens = sum(tokens)
    outcomes = []
    infos = vector_env.infos()
    rewards = vector_env.shaped_rewards(trained_seats)  # observer shaping included
    for index, (negotiation, reward) in enumerate(
        zip(vector_env.negotiations, rewards, strict=True)
    ):
        outcomes.append(
            DialogueOutcome(
                scenario_id=negotiation.scenario.id,
                reward=reward,
                info=infos[index],
                samples=samples[index],
                resolution=resolutions[index],
                generated_tokens=tokens[index],
                turns=turns[index],
                clipped_turns=clipped[index],
            )
        )
    return outcomes, stats


def to_grpo_samples(
    outcomes: Sequence[DialogueOutcome],
    turns_per_dialogue: int,
    pad_token_id: int,
    resolution_slot: bool = False,
) -> dict[str, list[Any]]:
    """TRL rollout fields: ``turns_per_dialogue`` samples per dialogue, padding masked out,
    then, with ``resolution_slot``, one for the resolution (masked out where none was
    written)."""
    fields: dict[str, list[Any]] = {
        "prompt_ids": [],
        "completion_ids": [],
        "logprobs": [],
        "env_mask": [],
        "negotiation_reward": [],
        "seat": [],
        "dialogue_index": [],
    }
    for dialogue_index, outcome in enumerate(outcomes):
        if len(outcome.samples) > turns_per_dialogue:
            raise ValueError(
                f"dialogue on {outcome.scenario_id} has {len(outcome.samples)} trained turns, "
                f"more than the {turns_per_dialogue} slots per dialogue"
            )
        if not outcome.samples:
            raise ValueError(f"dialogue on {outcome.scenario_id} has no trained turn")
        missing: list[TurnSample | None] = [None] * (turns_per_dialogue - len(outcome.samples))
        slots = [*outcome.samples, *missing, *((outcome.resolution,) if resolution_slot else ())]
        for sample in slots:
            if sample is None:
                _append_padding(fields, outcome.samples[0], pad_token_id)
                continue
            fields["prompt_ids"].append(sample.prompt_ids)
            fields["completion_ids"].append(sample.completion_ids)
            fields["logprobs"].append(sample.logprobs)
            fields["env_mask"].append([1] * len(sample.completion_ids))
            fields["seat"].append(sample.seat)
        fields["negotiation_reward"] += [outcome.reward] * len(slots)
        fields["dialogue_index"] += [dialogue_index] * len(slots)
    return fields


def _append_padding(fields: dict[str, list[Any]], like: TurnSample, pad_token_id: int) -> None:
    """A slot the dialogue never filled: one masked token, so it adds nothing to the loss."""
    fields["prompt_ids"].append(like.prompt_ids)
    fields["completion_ids"].append([pad_token_id])
    fields["logprobs"].append([0.0])
    fields["env_mask"].append([0])
    fields["seat"].append(like.seat)
