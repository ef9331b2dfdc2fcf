"""PettingZoo wrappers that put an observer around any negotiation env (AEC or parallel).

The wrapped env keeps its spaces and API; what changes:

- a dialogue turn that breaks a *prohibitory* constraint is not passed to the env: the same
  agent acts again, its observation explaining why; after ``max_regenerations`` blocked
  attempts a safe fallback utterance is sent instead;
- *transfer* violations add guidance to the next observation of the agent that broke them;
- every check (features and violations) and every intervention is in
  ``info[agent]["observer"]``;
- with ``shaping_penalty > 0``, each violation subtracts that much from the violating
  agent's reward at the step it happened.

    env = ObserverWrapper(negotiation_env.env(), Observer.default())
"""

from __future__ import annotations

from typing import Any

from pettingzoo.utils.wrappers import BaseParallelWrapper, BaseWrapper

from negotiation_env.env import check_actions
from negotiation_env.observer.observer import ObservedEpisode, Observer
from negotiation_env.protocol import Phase


class ObserverWrapper(BaseWrapper):
    """The AEC form."""

    def __init__(self, env: Any, observer: Observer):
        super().__init__(env)
        self.observer = observer
        self.episode: ObservedEpisode | None = None

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        super().reset(seed=seed, options=options)
        self.episode = ObservedEpisode(self.observer, self.env.unwrapped.negotiation.scenario)
        self._publish()

    def observe(self, agent: str) -> Any:
        observation = super().observe(agent)
        return self.episode.decorate(agent, observation) if self.episode else observation

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        negotiation = self.env.unwrapped.negotiation
        dead = self.terminations.get(agent) or self.truncations.get(agent)
        if dead or negotiation.phase != Phase.DIALOGUE or not isinstance(action, str):
            super().step(action)  # dead steps, the resolution and bad types pass through
            self._publish()
            return
        penalty = self.episode.screen(negotiation, agent, action, super().step)
        if penalty and agent in self.rewards:
            self.rewards[agent] -= penalty
            self._cumulative_rewards[agent] -= penalty
        self._publish()

    def sync_finished(self) -> None:
        """As the env's, with this episode's shaping penalties and observer summary."""
        self.env.sync_finished()
        for agent, penalty in self.episode.penalties.items():
            if agent in self.rewards:
                self.rewards[agent] -= penalty
                self._cumulative_rewards[agent] -= penalty
        self._publish()

    def _publish(self) -> None:
        summary = self.episode.summary() if self.episode else {}
        for agent in self.agents:
            self.infos[agent]["observer"] = summary


class ObserverParallelWrapper(BaseParallelWrapper):
    """The parallel form: a blocked turn returns the same state with the guidance added."""

    def __init__(self, env: Any, observer: Observer):
        super().__init__(env)
        self.observer = observer
        self.episode: ObservedEpisode | None = None

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict, dict]:
        observations, infos = self.env.reset(seed=seed, options=options)
        self.episode = ObservedEpisode(self.observer, self.env.unwrapped.negotiation.scenario)
        return self._decorated(observations), self._with_summary(infos)

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        check_actions(actions)
        negotiation = self.env.unwrapped.negotiation
        if negotiation is None or not self.env.agents:
            return self.env.step(actions)  # the env says what is wrong
        actor = negotiation.speaker
        action = actions.get(actor)
        if negotiation.phase != Phase.DIALOGUE or not isinstance(action, str):
            return self._observed(*self.env.step(actions))
        stepped: list[tuple] = []
        penalty = self.episode.screen(
            negotiation,
            actor,
            action,
            lambda sent: stepped.append(self.env.step({**actions, actor: sent})),
        )
        if penalty is None:  # blocked: the same state, with the guidance added
            agents = self.env.agents
            observations = {a: negotiation.observation(a) for a in agents}
            infos = {
                a: {
                    **negotiation.summary_info(),
                    # as the env reports it: the other seat's action is never used
                    "ignored_action": a != actor and actions.get(a) is not None,
                }
                for a in agents
            }
            return (
                self._decorated(observations),
                {a: 0.0 for a in agents},
                {a: False for a in agents},
                {a: False for a in agents},
                self._with_summary(infos),
            )
        observations, rewards, terminations, truncations, infos = stepped[0]
        if penalty and actor in rewards:
            rewards[actor] -= penalty
        return self._observed(observations, rewards, terminations, truncations, infos)

    def _observed(
        self, observations: dict, rewards: dict, terminations: dict, truncations: dict, infos: dict
    ) -> tuple[dict, dict, dict, dict, dict]:
        return (
            self._decorated(observations),
            rewards,
            terminations,
            truncations,
            self._with_summary(infos),
        )

    def _decorated(self, observations: dict[str, Any]) -> dict[str, Any]:
        return {a: self.episode.decorate(a, o) for a, o in observations.items()}

    def _with_summary(self, infos: dict[str, Any]) -> dict[str, Any]:
        summary = self.episode.summary()
        for info in infos.values():
            info["observer"] = summary
        return infos
