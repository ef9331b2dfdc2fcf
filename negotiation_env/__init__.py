"""Negotiation environment: two LLM negotiators with opposing personas, scored by a judge.

Importing the package registers the PettingZoo environment::

    import negotiation_env, pettingzoo
    env = pettingzoo.make("aec", "negotiation/persona_negotiation-v0")
"""

import gymnasium
import pettingzoo

from negotiation_env.env import ENV_ID, env, parallel_env, raw_env
from negotiation_env.protocol import (
    AGENTS,
    EpisodeOver,
    Mode,
    Need,
    Negotiation,
    NegotiationConfig,
    Phase,
    PromptTemplates,
)
from negotiation_env.scenarios import Scenario, ScenarioBank

SINGLE_AGENT_ENV_ID = "negotiation/PersonaNegotiationSingle-v0"

pettingzoo.register("aec", ENV_ID, entry_point="negotiation_env.env:env")
pettingzoo.register("parallel", ENV_ID, entry_point="negotiation_env.env:parallel_env")
gymnasium.register(
    SINGLE_AGENT_ENV_ID, entry_point="negotiation_env.single_agent:SingleAgentNegotiationEnv"
)

__all__ = [
    "AGENTS",
    "ENV_ID",
    "EpisodeOver",
    "Mode",
    "Need",
    "Negotiation",
    "NegotiationConfig",
    "Phase",
    "PromptTemplates",
    "Scenario",
    "SINGLE_AGENT_ENV_ID",
    "ScenarioBank",
    "env",
    "parallel_env",
    "raw_env",
]
