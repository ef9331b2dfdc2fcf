"""Many negotiations stepped in lockstep, with agreement checks and judging batched.

The trainer plays G dialogues per scenario for many scenarios at once, and the benchmark
suite plays whole test sets; both want every LLM call batched. :class:`VectorNegotiationEnv`
holds N :class:`~negotiation_env.protocol.Negotiation` states and, after each round of
actions, asks the agreement detector about every dialogue that needs it in **one** call;
the judge is called once, for every finished resolution, when no dialogue is still running
(or per group of dialogues on the same scenario, for in-group pairwise rewards).

    vec = VectorNegotiationEnv(config=NegotiationConfig(mode="training"), judge=my_judge)
    vec.reset(["pro-001/cost_vs_quality"] * 4)        # or VectorNegotiationEnv(4).reset(seed=0)
    while not vec.done:
        pending = vec.pending()                      # [(index, seat, observation), ...]
        vec.step({i: my_policy(obs) for i, _, obs in pending})
    rewards = vec.rewards()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from negotiation_env.judges import Judgement, default_components, judge_safely
from negotiation_env.protocol import (
    AGENTS,
    Need,
    Negotiation,
    NegotiationConfig,
    Phase,
    PromptTemplates,
)
from negotiation_env.scenarios import Scenario, ScenarioBank

# (judge, requests of one scenario group) -> judgements: e.g. LLMJudge.group_rewards
GroupJudge = Callable[[Sequence[Any]], list[Judgement]]


class VectorNegotiationEnv:
    def __init__(
        self,
        num_envs: int | None = None,
        config: NegotiationConfig | None = None,
        *,
        scenarios: ScenarioBank | None = None,
        judge: Any = None,
        agreement_detector: Any = None,
        group_judge: GroupJudge | None = None,
        prompts: PromptTemplates | None = None,
        observer: Any = None,
    ):
        if num_envs is not None and num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        # A fixed number of envs (every reset must fill them all), or None: as many as each
        # reset names.
        self.num_envs = num_envs
        self.config = config or NegotiationConfig()
        self.scenarios = scenarios if scenarios is not None else ScenarioBank.default()
        self.judge, self.agreement_detector = default_components(
            judge, agreement_detector, self.config.agreement_marker
        )
        self.group_judge = group_judge
        self.prompts = prompts or PromptTemplates()
        self.observer = observer  # an Observer: runtime constraints on every dialogue turn
        self.negotiations: list[Negotiation] = []
        self.episodes: list[Any] = []

    def reset(
        self,
        scenarios: Sequence[Scenario | str] | None = None,
        seed: int | None = None,
        split: str = "train",
    ) -> None:
        """Start one negotiation per given scenario (ids or objects). Without scenarios,
        ``num_envs`` scenarios are drawn from ``split`` of the bank (seeded by ``seed``)."""
        if scenarios is None:
            if self.num_envs is None:
                raise ValueError("reset: give the scenarios, or build the env with num_envs")
            rng = np.random.default_rng(seed)
            scenarios = [self.scenarios.sample(rng, split) for _ in range(self.num_envs)]
        if not scenarios:
            raise ValueError("reset needs at least one scenario")
        if self.num_envs is not None and len(scenarios) != self.num_envs:
            raise ValueError(
                f"reset: {len(scenarios)} scenarios for {self.num_envs} envs (num_envs); "
                "build the env with num_envs=None to reset with any number"
            )
        resolved = [s if isinstance(s, Scenario) else self.scenarios.get(s) for s in scenarios]
        self.negotiations = [Negotiation(s, self.config, self.prompts) for s in resolved]
        if self.observer is not None:
            from negotiation_env.observer.observer import ObservedEpisode

            self.episodes = [ObservedEpisode(self.observer, s) for s in resolved]

    @property
    def done(self) -> bool:
        return all(n.done for n in self.negotiations)

    def pending(self) -> list[tuple[int, str, dict[str, Any]]]:
        """(env index, acting seat, observation) for every negotiation waiting for an action."""
        waiting = []
        for index, negotiation in enumerate(self.negotiations):
            if negotiation.done or negotiation.needs is not None:
                continue
            observation = negotiation.observation(negotiation.speaker)
            if self.episodes:
                observation = self.episodes[index].decorate(negotiation.speaker, observation)
            waiting.append((index, negotiation.speaker, observation))
        return waiting

    def step(self, actions: dict[int, Any]) -> None:
        """Submit the acting seat's action for each given env index, then resolve what the
        protocol needs: agreement checks now (batched), judgements once nothing is running."""
        for index, action in actions.items():
            negotiation = self.negotiations[index]
            speaker = negotiation.speaker
            if self.episodes and negotiation.phase == Phase.DIALOGUE and isinstance(action, str):
                # a blocked turn stays pending: the agent is asked again, with the reason
                self.episodes[index].screen(
                    negotiation, speaker, action, partial(negotiation.submit, speaker)
                )
                continue
            negotiation.submit(speaker, action)
        waiting = [n for n in self.negotiations if n.needs == Need.AGREEMENT]
        if waiting:
            decisions = self.agreement_detector.detect_batch(
                [n.agreement_request() for n in waiting]
            )
            for negotiation, decision in zip(waiting, decisions, strict=True):
                negotiation.apply_agreement(decision)
        if not self.pending() and any(n.needs == Need.JUDGEMENT for n in self.negotiations):
            self._judge_all()

    def _judge_all(self) -> None:
        waiting = [n for n in self.negotiations if n.needs == Need.JUDGEMENT]
        if self.group_judge is None:
            judgements = judge_safely(self.judge, [n.judge_request() for n in waiting])
            for negotiation, judgement in zip(waiting, judgements, strict=True):
                negotiation.apply_judgement(judgement)
            return
        groups: dict[str, list[Negotiation]] = {}
        for negotiation in waiting:
            groups.setdefault(negotiation.scenario.id, []).append(negotiation)
        for members in groups.values():
            judge = _GroupAsJudge(self.group_judge)
            for negotiation, judgement in zip(
                members, judge_safely(judge, [n.judge_request() for n in members]), strict=True
            ):
                negotiation.apply_judgement(judgement)

    def play(
        self,
        act: Callable[[list[tuple[int, str, dict[str, Any]]]], Mapping[int, Any]],
        after_round: Callable[[VectorNegotiationEnv], None] | None = None,
    ) -> None:
        """Step every negotiation to its end. Each round, ``act`` gets the pending
        ``(index, seat, observation)`` triples and returns ``{index: action}`` for them
        (e.g. one batched generation per seat or phase); ``after_round`` (e.g. a progress
        bar) is called after each. The one episode loop: ``negotiate play``, the trainer's
        rollouts and the benchmark suite all run through it."""
        while not self.done:
            pending = self.pending()
            actions = act(pending)
            if not actions:
                waiting = [index for index, _, _ in pending]
                raise RuntimeError(f"act returned no action for the waiting envs {waiting}")
            self.step(actions)
            if after_round is not None:
                after_round(self)

    def rounds(self) -> int:
        """The most rounds an episode can take: every dialogue turn, and the resolution."""
        return self.config.max_turns + 1

    def rewards(self) -> list[float]:
        """Each negotiation's terminal reward, shared by both seats (0 before the end)."""
        return [n.reward() for n in self.negotiations]

    def shaped_rewards(self, seats: Sequence[str] = AGENTS) -> list[float | None]:
        """Each negotiation's reward for a learner playing ``seats``: the shared reward minus
        the observer's shaping penalties of those seats (the one place shaping is applied);
        None where the judge failed, since there is no score to learn from."""
        shaped: list[float | None] = []
        for index, negotiation in enumerate(self.negotiations):
            if negotiation.judge_failed:
                shaped.append(None)
                continue
            reward = negotiation.reward()
            if self.episodes:
                penalties = self.episodes[index].penalties
                reward -= sum(penalties.get(seat, 0.0) for seat in seats)
            shaped.append(reward)
        return shaped

    @classmethod
    def adopt(cls, envs: Sequence[Any]) -> VectorNegotiationEnv:
        """The episodes of PettingZoo envs that have just been reset, stepped together.

        The negotiations (and observed episodes, for envs under an ``ObserverWrapper``)
        are the envs' own objects, so each env's state shows the played episode; the first
        env's judge and agreement detector serve all of them, batched. After :meth:`play`,
        call each env's ``sync_finished()`` so its PettingZoo bookkeeping (terminations,
        rewards, infos) matches."""
        if not envs:
            raise ValueError("adopt needs at least one env")
        first = envs[0].unwrapped
        vector = cls(
            len(envs),
            first.config,
            scenarios=first.scenarios,
            judge=first.judge,
            agreement_detector=first.agreement_detector,
            prompts=first.prompts,
        )
        vector.negotiations = [env.unwrapped.negotiation for env in envs]
        if any(env.unwrapped.negotiation is None for env in envs):
            raise ValueError("adopt: reset every env first")
        episodes = [getattr(env, "episode", None) for env in envs]
        if any(e is not None for e in episodes):
            if any(e is None for e in episodes):
                raise ValueError("adopt: either every env or none is under an ObserverWrapper")
            vector.episodes = episodes
        return vector

    def infos(self) -> list[dict[str, Any]]:
        infos = [n.summary_info() for n in self.negotiations]
        for info, episode in zip(infos, self.episodes, strict=False):
            info["observer"] = episode.summary()
        return infos


class _GroupAsJudge:
    """Adapts a group judge function to the batched Judge interface (for judge_safely)."""

    def __init__(self, function: GroupJudge):
        self.function = function
        self.name = getattr(function, "__qualname__", "group-judge")

    def score_batch(self, requests: Sequence[Any]) -> list[Judgement]:
        return self.function(requests)
