"""Agents: policies that turn an observation into an utterance.

Scripted baselines live in :mod:`agents.scripted`; any plain function is an agent too.
"""

from agents.base import Agent, BatchAgent, NegotiationAgent, act_batch, agent_name
from agents.rollout import play_episode
from agents.scripted import ConcedingAgent, MediatorAgent, RandomAgent, StubbornAgent
from agents.specs import AgentSpecError, load_agent

__all__ = [
    "Agent",
    "AgentSpecError",
    "BatchAgent",
    "ConcedingAgent",
    "MediatorAgent",
    "NegotiationAgent",
    "RandomAgent",
    "StubbornAgent",
    "act_batch",
    "agent_name",
    "load_agent",
    "play_episode",
]
