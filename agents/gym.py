"""The Gymnasium single-agent view with its partner named by a spec.

``negotiation_env`` does not import this package, so its Gymnasium view takes the partner as
an agent object; this factory also takes an agent spec (``"scripted:mediator"``,
``"smollm2?temperature=0.3"``, ``"my_module:agent"``):

>>> env = single_agent_env("scripted:mediator", judge="default")  # doctest: +SKIP
>>> observation, info = env.reset(seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.specs import load_agent
from negotiation_env.single_agent import SingleAgentNegotiationEnv


def single_agent_env(
    partner: str | Callable[[dict[str, Any]], str], **env_kwargs: Any
) -> SingleAgentNegotiationEnv:
    """A :class:`SingleAgentNegotiationEnv` whose partner is an agent or an agent spec;
    every other keyword argument is the env's (``learner``, ``judge``, ``max_turns``, ...)."""
    agent = load_agent(partner) if isinstance(partner, str) else partner
    return SingleAgentNegotiationEnv(partner=agent, **env_kwargs)
