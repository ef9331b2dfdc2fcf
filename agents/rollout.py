"""Playing episodes: agents in the seats of an environment, turn by turn."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from agents.base import act_batch, agent_name
from llm.interface import prefix_caching
from negotiation_env.vector import VectorNegotiationEnv


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
    progress: str | None = None,
) -> list[dict[str, Any]]:
    """Play one episode in each env in lockstep, batching the agents' calls.

    Each env is reset (drawing its scenario from its seed unless one is given), then the
    episodes run on one :class:`~negotiation_env.vector.VectorNegotiationEnv`, the driver
    that training and the benchmark suite use too: every round, each agent is called once
    with the observations of all the seats it plays (``act_batch``), so an LLM agent
    generates the turns of many dialogues in one batched call, and agreement checks and
    judging are batched across the envs. Returns one record per env, in order; each env's
    state shows its finished episode. LLM agents' backends reuse the prompt prefixes they
    have computed while these episodes last (see ``prefix_caching``). ``progress``: a label
    for a progress bar of rounds with an ETA on stderr (shown on a terminal only).
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
    vector = VectorNegotiationEnv.adopt(envs)
    started = time.perf_counter()
    with (
        prefix_caching(getattr(agent, "backend", None) for agent in agents.values()),
        round_progress(vector, progress) as after_round,
    ):
        vector.play(lambda pending: act_by_seat(agents, pending), after_round)
    seconds = round(time.perf_counter() - started, 3)
    for env in envs:
        env.sync_finished()
    return [_record(env, agents, seed, seconds) for env, seed in zip(envs, seeds, strict=True)]


@contextlib.contextmanager
def round_progress(vector: VectorNegotiationEnv, label: str | None) -> Iterator[Any]:
    """A per-round progress callback for :meth:`VectorNegotiationEnv.play`: a bar with an
    ETA on stderr when it is a terminal (None, and nothing shown, without a label)."""
    if label is None:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(
        total=vector.rounds(), desc=label, unit="round", file=sys.stderr, leave=False, disable=None
    ) as bar:

        def after_round(env: VectorNegotiationEnv) -> None:
            bar.update(1)
            if env.done:
                bar.update(bar.total - bar.n)  # an early agreement skips the last rounds

        yield after_round


def act_by_seat(
    agents: Mapping[str, Any], pending: Sequence[tuple[int, str, dict[str, Any]]]
) -> dict[int, Any]:
    """``{env index: action}`` for the pending seats of a vectorized env: each distinct
    agent is called once, with all the observations of the seats it plays."""
    groups: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for index, seat, observation in pending:
        groups.setdefault(id(agents[seat]), []).append((index, observation))
    actions: dict[int, Any] = {}
    for group in groups.values():
        seat = next(s for i, s, _ in pending if i == group[0][0])
        utterances = act_batch(agents[seat], [observation for _, observation in group])
        actions.update(zip([index for index, _ in group], utterances, strict=True))
    return actions


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
