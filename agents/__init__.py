"""Agents: policies that turn an observation into an utterance.

Scripted baselines live in :mod:`agents.scripted`, LLM negotiators in :mod:`agents.llm`
(over the backends in :mod:`llm`); any plain function is an agent too.
"""

from agents.base import Agent, BatchAgent, NegotiationAgent, act_batch, agent_name
from agents.gym import single_agent_env
from agents.llm import LLMAgent
from agents.rollout import play_episode, play_episodes, seed_everything
from agents.scripted import ConcedingAgent, MediatorAgent, RandomAgent, StubbornAgent
from agents.specs import AgentSpecError, load_agent

__all__ = [
    "Agent",
    "AgentSpecError",
    "BatchAgent",
    "ConcedingAgent",
    "LLMAgent",
    "MediatorAgent",
    "NegotiationAgent",
    "RandomAgent",
    "StubbornAgent",
    "act_batch",
    "agent_name",
    "load_agent",
    "play_episode",
    "play_episodes",
    "seed_everything",
    "single_agent_env",
]
