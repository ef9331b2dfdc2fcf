"""A Gymnasium single-agent view: one seat learns, the other is played by a given agent.

For users of single-agent RL code::

    import gymnasium, negotiation_env
    from agents import MediatorAgent
    env = gymnasium.make("negotiation/PersonaNegotiationSingle-v0", partner=MediatorAgent())
    observation, info = env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step("I propose we split it. [AGREE]")

``reset``/``step`` return the learner's observation; the partner's turns (including the
resolution, when the partner is the summarizer) are played inside ``step``. Observation and
action spaces are those of the multi-agent env; the reward is the shared terminal reward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium

from negotiation_env.env import raw_env
from negotiation_env.protocol import AGENTS, EpisodeOver, partner_of


class SingleAgentNegotiationEnv(gymnasium.Env):
    """The negotiation as a single-agent Gymnasium env.

    ``learner``: the seat the RL code plays, ``negotiator_0`` by default, which opens the
    dialogue and (as the default ``summarizer``) writes the joint resolution; pass
    ``learner="negotiator_1"`` to learn the second seat. ``partner``: the agent in the other
    seat, any callable ``observation -> str``; for a spec string such as ``"scripted:mediator"``
    use ``agents.single_agent_env(spec, ...)`` (this package does not import the agents
    package). Every other keyword argument is the multi-agent env's (``judge``,
    ``max_turns``, ``mode``, ...); without ``judge`` resolutions are not scored (see
    :mod:`negotiation_env.env`). After the episode ends, ``step`` raises ``EpisodeOver``.
    """

    metadata = {"render_modes": ["human", "ansi"]}

    def __init__(
        self,
        partner: Callable[[dict[str, Any]], str],
        learner: str = AGENTS[0],
        render_mode: str | None = None,
        **env_kwargs: Any,
    ):
        if learner not in AGENTS:
            raise ValueError(f"learner must be one of {list(AGENTS)}, got {learner!r}")
        if isinstance(partner, str):
            raise TypeError(
                f"partner: got the spec string {partner!r}; pass an agent, e.g. "
                f"partner=agents.load_agent({partner!r}), or build the env with "
                f"agents.single_agent_env({partner!r}, ...)"
            )
        if not callable(partner):
            raise TypeError(f"partner must be a callable agent, got {type(partner).__name__}")
        self.partner = partner
        self.learner = learner
        self.render_mode = render_mode
        self.negotiation_env = raw_env(render_mode=render_mode, **env_kwargs)
        self.observation_space = self.negotiation_env.observation_space(learner)
        self.action_space = self.negotiation_env.action_space(learner)

    def _play_partner(self) -> None:
        env = self.negotiation_env
        while env.agents and env.agent_selection != self.learner:
            seat = env.agent_selection
            if env.terminations[seat]:
                break
            env.step(self.partner(env.observe(seat)))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self.negotiation_env.reset(seed=seed, options=options)
        self._play_partner()
        return self.negotiation_env.observe(self.learner), dict(
            self.negotiation_env.infos[self.learner]
        )

    def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        env = self.negotiation_env
        if env.negotiation is None or env.negotiation.done:
            raise EpisodeOver("step() called on a finished episode; call reset()")
        env.step(action)
        self._play_partner()
        negotiation = env.negotiation
        reward = negotiation.reward() if negotiation.done else 0.0
        info = negotiation.summary_info()
        info["partner"] = partner_of(self.learner)
        return env.observe(self.learner), reward, negotiation.done, False, info

    def render(self) -> str | None:
        return self.negotiation_env.render()
