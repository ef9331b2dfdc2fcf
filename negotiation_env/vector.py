"""Many negotiations stepped in lockstep, with agreement checks and judging batched.

The trainer plays G dialogues per scenario for many scenarios at once, and the benchmark
suite plays whole test sets; both want every LLM call batched. :class:`VectorNegotiationEnv`
holds N :class:`~negotiation_env.protocol.Negotiation` states and, after each round of
actions, asks the agreement detector about every dialogue that needs it in **one** call;
the judge is called once, for every finished resolution, when no dialogue is still running
(or per group of dialogues on the same scenario, for in-group pairwise rewards).

    vec = VectorNegotiationEnv(4, NegotiationConfig(mode="training"), judge=my_judge)
    vec.reset(["pro-001/cost_vs_quality"] * 4)
    while not vec.done:
        pending = vec.pending()                      # [(index, seat, observation), ...]
        vec.step({i: my_policy(obs) for i, _, obs in pending})
    rewards = vec.rewards()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from negotiation_env.judges import Judgement, default_components, judge_safely
from negotiation_env.protocol import Negotiation, NegotiationConfig, PromptTemplates
from negotiation_env.scenarios import Scenario, ScenarioBank

# (judge, requests of one scenario group) -> judgements: e.g. LLMJudge.group_rewards
GroupJudge = Callable[[Sequence[Any]], list[Judgement]]


class VectorNegotiationEnv:
    def __init__(
        self,
        num_envs: int = 1,
        config: NegotiationConfig | None = None,
        *,
        scenarios: ScenarioBank | None = None,
        judge: Any = None,
        agreement_detector: Any = None,
        group_judge: GroupJudge | None = None,
        prompts: PromptTemplates | None = None,
        observer: Any = None,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
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

    def reset(self, scenarios: Sequence[Scenario | str]) -> None:
        """Start one negotiation per given scenario (ids or objects); the number of envs
        follows the number of scenarios."""
        if not scenarios:
            raise ValueError("reset needs at least one scenario")
        self.num_envs = len(scenarios)
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
            if self.episodes and negotiation.phase == "dialogue" and isinstance(action, str):
                decision = self.episodes[index].review(speaker, negotiation.clean(action)[0])
                if decision.blocked:
                    continue  # stays pending: the agent is asked again, with the reason
                negotiation.submit(speaker, decision.sent(action))
                self.episodes[index].commit(speaker, decision)
                continue
            negotiation.submit(speaker, action)
        waiting = [n for n in self.negotiations if n.needs == "agreement"]
        if waiting:
            decisions = self.agreement_detector.detect_batch(
                [n.agreement_request() for n in waiting]
            )
            for negotiation, decision in zip(waiting, decisions, strict=True):
                negotiation.apply_agreement(decision)
        if not self.pending() and any(n.needs == "judgement" for n in self.negotiations):
            self._judge_all()

    def _judge_all(self) -> None:
        waiting = [n for n in self.negotiations if n.needs == "judgement"]
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

    def rewards(self) -> list[float]:
        return [n.reward() for n in self.negotiations]

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
