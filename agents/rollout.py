"""Playing episodes: agents in the seats of an environment, turn by turn."""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from agents.base import act_batch, agent_name
from negotiation_env.backend_interface import prefix_caching


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (when loaded) torch, so sampled LLM turns replay."""
    random.seed(seed)
    import numpy as np

    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def play_episode(
    env: Any,
    agents: Mapping[str, Any],
    seed: int | None = None,
    scenario: Any = None,
) -> dict[str, Any]:
    """Play one episode of an AEC negotiation env and return its record (JSON-serialisable).

    ``agents`` maps each seat (``negotiator_0``, ``negotiator_1``) to a callable agent.
    """
    return play_episodes([env], agents, seeds=[seed], scenarios=[scenario])[0]


def play_episodes(
    envs: Sequence[Any],
    agents: Mapping[str, Any],
    seeds: Sequence[int | None] | None = None,
    scenarios: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    """Play one episode in each env in lockstep, batching the agents' calls.

    Every round, the acting seats of all unfinished envs are collected and each agent is
    called once with all of its observations (``act_batch``), so an LLM agent generates the
    turns of many dialogues in one batched call; finished episodes drop out. Returns one
    record per env, in order. LLM agents' backends reuse the prompt prefixes they have
    computed while these episodes last (see ``prefix_caching``).
    """
    missing = [a for a in envs[0].possible_agents if a not in agents] if envs else []
    if missing:
        raise ValueError(f"no agent for seat(s) {missing}")
    seeds = list(seeds) if seeds is not None else [None] * len(envs)
    scenarios = list(scenarios) if scenarios is not None else [None] * len(envs)
    if not len(seeds) == len(scenarios) == len(envs):
        raise ValueError(f"{len(envs)} envs need as many seeds and scenarios")
    for env, seed, scenario in zip(envs, seeds, scenarios, strict=True):
        env.reset(seed=seed, options={"scenario": scenario} if scenario is not None else None)
    started = time.perf_counter()
    with prefix_caching(getattr(agent, "backend", None) for agent in agents.values()):
        _play_rounds(envs, agents)
    seconds = round(time.perf_counter() - started, 3)
    return [_record(env, agents, seed, seconds) for env, seed in zip(envs, seeds, strict=True)]


def _play_rounds(envs: Sequence[Any], agents: Mapping[str, Any]) -> None:
    while True:
        pending: dict[int, list[tuple[Any, dict[str, Any]]]] = {}
        for env in envs:
            _finish_dead_steps(env)
            if env.agents:
                seat = env.agent_selection
                pending.setdefault(id(agents[seat]), []).append((env, env.observe(seat)))
        if not pending:
            break
        for group in pending.values():
            first_env = group[0][0]
            agent = agents[first_env.agent_selection]
            utterances = act_batch(agent, [observation for _, observation in group])
            for (env, _), utterance in zip(group, utterances, strict=True):
                env.step(utterance)


def _finish_dead_steps(env: Any) -> None:
    while env.agents and (
        env.terminations[env.agent_selection] or env.truncations[env.agent_selection]
    ):
        env.step(None)


def _record(
    env: Any, agents: Mapping[str, Any], seed: int | None, seconds: float
) -> dict[str, Any]:
    negotiation = env.unwrapped.negotiation
    info = negotiation.summary_info()
    episode = getattr(
        env, "episode", None
    )  # an ObserverWrapper's record of checks and interventions
    observer = {"observer": episode.summary()} if episode is not None else {}
    return {
        "scenario": negotiation.scenario.to_record(),
        "seed": seed,
        "agents": {seat: agent_name(agent) for seat, agent in agents.items()},
        "config": dataclasses.asdict(env.unwrapped.config),
        "transcript": info["transcript"],
        "resolution": info["resolution"],
        "agreement": info["agreement"],
        "rounds_to_agreement": info["rounds_to_agreement"],
        "judgement": info["judgement"],
        "judge_failed": info["judge_failed"],
        "reward": negotiation.reward(),
        "seconds": seconds,
        **observer,
    }
