"""The agent protocol: an observation in, an utterance out.

Any plain callable ``f(observation) -> str`` is an agent. Agents that can act on many
observations at once (LLM policies generating a batch) also offer ``act_batch``;
:func:`act_batch` uses it when present and falls back to one call per observation.

>>> def polite(observation):
...     return "I hear you. [AGREE]" if observation["turn"] > 0 else "Let us start."
>>> act_batch(polite, [{"turn": 0}, {"turn": 3}])
['Let us start.', 'I hear you. [AGREE]']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

Observation = dict[str, Any]


@runtime_checkable
class Agent(Protocol):
    def __call__(self, observation: Observation) -> str: ...


@runtime_checkable
class BatchAgent(Protocol):
    def __call__(self, observation: Observation) -> str: ...

    def act_batch(self, observations: Sequence[Observation]) -> list[str]: ...


class NegotiationAgent:
    """Base class for agents: implement ``act``; ``act_batch`` loops unless overridden."""

    name = "agent"

    def act(self, observation: Observation) -> str:
        raise NotImplementedError

    def act_batch(self, observations: Sequence[Observation]) -> list[str]:
        return [self.act(observation) for observation in observations]

    def __call__(self, observation: Observation) -> str:
        return self.act(observation)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def act_batch(
    agent: Callable[[Observation], str], observations: Sequence[Observation]
) -> list[str]:
    """Utterances for a batch of observations, batched if the agent supports it."""
    if not observations:
        return []
    batch = getattr(agent, "act_batch", None)
    if batch is not None:
        outputs = list(batch(observations))
    else:
        outputs = [agent(observation) for observation in observations]
    if len(outputs) != len(observations):
        raise ValueError(
            f"agent {agent_name(agent)} returned {len(outputs)} utterances "
            f"for {len(observations)} observations"
        )
    return outputs


def agent_name(agent: Any) -> str:
    return (
        getattr(agent, "name", None) or getattr(agent, "__qualname__", None) or type(agent).__name__
    )
