"""Playing episodes: agents in the seats of an environment, turn by turn."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from agents.base import agent_name


def play_episode(
    env: Any,
    agents: Mapping[str, Any],
    seed: int | None = None,
    scenario: Any = None,
) -> dict[str, Any]:
    """Play one episode of an AEC negotiation env and return its record (JSON-serialisable).

    ``agents`` maps each seat (``negotiator_0``, ``negotiator_1``) to a callable agent.
    """
    missing = [a for a in env.possible_agents if a not in agents]
    if missing:
        raise ValueError(f"no agent for seat(s) {missing}")
    options = {"scenario": scenario} if scenario is not None else None
    env.reset(seed=seed, options=options)
    started = time.perf_counter()
    rewards = {a: 0.0 for a in env.possible_agents}
    info: dict[str, Any] = {}
    for seat in env.agent_iter():
        observation, reward, termination, truncation, info = env.last()
        rewards[seat] += reward
        if termination or truncation:
            env.step(None)
            continue
        env.step(agents[seat](observation))
    negotiation = env.unwrapped.negotiation
    return {
        "scenario": negotiation.scenario.to_record(),
        "seed": seed,
        "agents": {seat: agent_name(agent) for seat, agent in agents.items()},
        "config": dataclasses.asdict(env.unwrapped.config),
        "transcript": info.get("transcript", []),
        "resolution": info.get("resolution"),
        "agreement": info.get("agreement", False),
        "rounds_to_agreement": info.get("rounds_to_agreement"),
        "judgement": info.get("judgement"),
        "judge_failed": info.get("judge_failed", False),
        "reward": rewards[env.possible_agents[0]],
        "seconds": round(time.perf_counter() - started, 3),
    }
