# noqa: D212, D415
"""
# Persona Negotiation

| Creation           | `pettingzoo.make("aec", "negotiation/persona_negotiation-v0")`      |
|--------------------|---------------------------------------------------------------------|
| Parallel API       | Yes: `pettingzoo.make("parallel", "negotiation/persona_negotiation-v0")` |
| Manual Control     | No                                                                  |
| Agents             | `agents = ['negotiator_0', 'negotiator_1']`                         |
| Agents             | 2                                                                   |
| Action Space       | `UnicodeText(0, max_utterance_chars)`: the utterance                |
| Observation Space  | `Dict` of chat messages and structured fields (below)               |
| Reward             | terminal, shared: the judge's score of the joint resolution (0-5)   |

Two LLM negotiators with opposing value personas (e.g. *cost vs quality*) discuss a
dilemma in alternating turns. The dialogue ends when an agreement detector says they agree,
or after `max_turns` turns; then the summarizer writes the final joint resolution, and a
judge scores it. Both negotiators receive that score: the objective is cooperative.

### Arguments

```python
import negotiation_env, pettingzoo
env = pettingzoo.make("aec", "negotiation/persona_negotiation-v0",
                      mode="evaluation", max_turns=7, context_turns=2, split="train",
                      judge="default", agreement_detector=None, scenarios=None,
                      render_mode=None)
```

Every field of :class:`~negotiation_env.protocol.NegotiationConfig` is a keyword argument
(`mode`, `max_turns`, `context_turns`, `first_speaker`, `summarizer`,
`min_turns_for_agreement`, `no_agreement_reward`, `judge_failure_reward`,
`max_utterance_chars`, `turn_word_limit`, `summary_word_limit`, `agreement_marker`,
`reveal_partner_persona`, `split`); or pass `config=NegotiationConfig(...)`.

`judge`: what scores the resolution. `"default"`: the measured default CA judge (the
shipped reward model, loaded on the first judgement; `negotiate models fetch smollm2`
first); any judge spec string (`"rm"`, `"checklist"`, `"ensemble:checklist+rm"`, an LLM
spec; see `negotiation_env.judges.specs.load_judge`); an object with
`score_batch(requests)`; or a function `f(scenario, transcript, resolution) -> float`.
Default (None): **no judge**: resolutions are not scored, the reward is
`judge_failure_reward` and `info["judgement"]["error"]` says that no judge is configured.
`"keyword"` names the deterministic keyword test double, for tests only.

`agreement_detector`: an object with `detect_batch(requests)` or a function
`f(scenario, transcript) -> bool`. Default: `MarkerAgreementDetector`, which looks for
`agreement_marker` ("[AGREE]") in the latest turn.

`scenarios`: a `ScenarioBank` (default: the shipped data set). `prompts`: `PromptTemplates`.

`reset(seed=s)` draws the scenario from the `split` pool with a generator seeded by `s`,
so the same seed gives the same scenario. `reset(options={"scenario": "pro-001/cost_vs_quality"})`
(an id or a `Scenario`) plays a given scenario; `options={"split": ..., "category": ...}`
narrows the draw. Other option keys are ignored.

### Observation Space

A `gymnasium.spaces.Dict`:

| key | space | meaning |
|---|---|---|
| `messages` | `Sequence(Dict(role, content))` | the chat from this agent's side: system (its persona and the rules), user (the dilemma, and the partner's turns), assistant (its own turns); only the last `context_turns` turns. In the summary phase the summarizer instead sees the summary prompt with the full transcript. |
| `phase` | `Text` | `"dialogue"`, `"summary"` or `"done"` |
| `turn` | `Discrete(max_turns + 1)` | dialogue turns spoken so far |
| `acting` | `Discrete(2)` | 1 if this agent acts next |
| `scenario_id` | `UnicodeText` | `DILEMMA_ID/PAIR_ID` |
| `own_values`, `partner_values` | `Sequence(UnicodeText)` | core values (partner's empty if `reveal_partner_persona=False`) |

Text spaces are :class:`~negotiation_env.spaces.UnicodeText`: any UTF-8-encodable string
within the length bounds, because LLMs write punctuation, accents and other scripts that
Gymnasium's default `Text` charset (letters and digits) rejects. PettingZoo's `api_test`
only compares dtypes of an observation's `"observation"` entry, which this Dict does not have,
so no dtype shim is needed.

### Action Space

`UnicodeText(0, max_utterance_chars)`: the utterance, or in the summary phase the
resolution. A non-string action raises `TypeError` naming the agent. Longer text is
truncated to `max_utterance_chars`; lone surrogates are replaced by U+FFFD; empty or
whitespace-only text counts as a turn in which the agent said nothing. Each of these is
recorded in the turn's `flags` (`"truncated"`, `"sanitized"`, `"empty"`).

### Rewards

0 on every step but the last. At the end both agents receive the judge's score of the
resolution; in `training` mode an episode without agreement ends without a resolution and
gives `no_agreement_reward` (0). If the judge returns no score (or raises), the reward is
`judge_failure_reward` and `info["judge_failed"]` is True, with the reason in
`info["judgement"]["error"]`.

### After the episode

When the episode ends, both agents are terminated; the AEC form expects each to be stepped
once with `None` (PettingZoo's dead step; `env.agent_iter()` does this), after which
`env.agents` is empty. From then on, in every form (AEC, `env()`, parallel, Gymnasium),
`step()` with any action, and `last()`, raise `EpisodeOver` (a `RuntimeError` and a
`ValueError`) saying to call `reset()`; so does a non-`None` action for a terminated agent.
No action is silently dropped. In the parallel form, an action given for the agent that is
not acting is ignored and reported as `info[agent]["ignored_action"]`, but it must still be
a string or `None` (anything else is a `TypeError`).

`info[agent]` always carries `scenario_id`, `phase`, `turn`, `agreement`,
`rounds_to_agreement` (dialogue turns until agreement), the full `transcript`, the
`resolution`, the `judgement` and every `agreement_checks` decision.
"""

from __future__ import annotations

import dataclasses
import string
import warnings
from typing import Any

from gymnasium.spaces import Dict, Discrete, Sequence, Space, Text
from gymnasium.utils import seeding
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import wrappers

from negotiation_env.judges import default_components, judge_safely
from negotiation_env.protocol import (
    AGENTS,
    EpisodeOver,
    Need,
    Negotiation,
    NegotiationConfig,
    PromptTemplates,
)
from negotiation_env.render import render_transcript
from negotiation_env.scenarios import Scenario, ScenarioBank
from negotiation_env.spaces import UnicodeText

ENV_ID = "negotiation/persona_negotiation-v0"
_NAME_CHARSET = string.ascii_lowercase + "_"


def make_observation_space(config: NegotiationConfig) -> Dict:
    # The summary prompt holds the whole transcript plus persona text; leave room for both.
    content_limit = config.max_turns * (config.max_utterance_chars + 200) + 50_000
    return Dict(
        {
            "messages": Sequence(
                Dict(
                    {
                        "role": Text(16, min_length=1, charset=_NAME_CHARSET),
                        "content": UnicodeText(content_limit),
                    }
                )
            ),
            "phase": Text(16, min_length=1, charset=_NAME_CHARSET),
            "turn": Discrete(config.max_turns + 1),
            "acting": Discrete(2),
            "scenario_id": UnicodeText(512, min_length=1),
            "own_values": Sequence(UnicodeText(1000)),
            "partner_values": Sequence(UnicodeText(1000)),
        }
    )


class _NegotiationEnvBase:
    """What the AEC and parallel forms share: set-up, episodes, judging, observing, rendering."""

    metadata = {
        "name": "persona_negotiation_v0",
        "render_modes": ["human", "ansi"],
        "is_parallelizable": True,
    }

    def _setup(
        self,
        config: NegotiationConfig | None,
        scenarios: ScenarioBank | None,
        judge: Any,
        agreement_detector: Any,
        prompts: PromptTemplates | None,
        render_mode: str | None,
        settings: dict[str, Any],
    ) -> None:
        if config is None:
            config = NegotiationConfig.from_dict(settings)
        elif settings:
            config = dataclasses.replace(config, **settings)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode {render_mode!r} is not one of {self.metadata['render_modes']}"
            )
        self.config = config
        self.render_mode = render_mode
        self.scenarios = scenarios if scenarios is not None else ScenarioBank.default()
        self.judge, self.agreement_detector = default_components(
            judge, agreement_detector, config.agreement_marker
        )
        self.prompts = prompts or PromptTemplates()
        self.possible_agents = list(AGENTS)
        self._observation_spaces = {a: make_observation_space(config) for a in AGENTS}
        self._action_spaces = {a: UnicodeText(config.max_utterance_chars) for a in AGENTS}
        self.np_random, self.np_random_seed = seeding.np_random(None)
        self.negotiation: Negotiation | None = None

    def observation_space(self, agent: str) -> Space:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> Space:
        return self._action_spaces[agent]

    # ------------------------------------------------------------------ episodes
    def _new_episode(self, seed: int | None, options: dict[str, Any] | None) -> Negotiation:
        if seed is not None:
            self.np_random, self.np_random_seed = seeding.np_random(seed)
        options = options or {}
        chosen = options.get("scenario")
        if isinstance(chosen, Scenario):
            scenario = chosen
        elif isinstance(chosen, str):
            scenario = self.scenarios.get(chosen)
        elif chosen is None:
            scenario = self.scenarios.sample(
                self.np_random, options.get("split", self.config.split), options.get("category")
            )
        else:
            raise TypeError(
                f"options['scenario'] must be a Scenario or a scenario id string, "
                f"got {type(chosen).__name__}"
            )
        self.negotiation = Negotiation(scenario, self.config, self.prompts)
        return self.negotiation

    def _submit(self, agent: str, action: Any) -> None:
        """Apply one action and resolve what the protocol then needs (agreement, judgement)."""
        negotiation = self.negotiation
        negotiation.submit(agent, action)
        if negotiation.needs == Need.AGREEMENT:
            decision = self.agreement_detector.detect_batch([negotiation.agreement_request()])
            negotiation.apply_agreement(decision[0])
        if negotiation.needs == Need.JUDGEMENT:
            negotiation.apply_judgement(judge_safely(self.judge, [negotiation.judge_request()])[0])

    # ------------------------------------------------------------------ observing
    def observe(self, agent: str) -> dict[str, Any]:
        return self.negotiation.observation(agent)

    def _info(self, agent: str) -> dict[str, Any]:
        return self.negotiation.summary_info()

    def render(self) -> str | None:
        if self.render_mode is None:
            warnings.warn(
                "render() called without a render_mode; pass render_mode='ansi' or 'human'",
                stacklevel=2,
            )
            return None
        if self.negotiation is None:
            text = "(no episode yet: call reset())"
        else:
            text = render_transcript(self.negotiation, color=self.render_mode == "ansi")
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        pass


class raw_env(_NegotiationEnvBase, AECEnv):
    """The AEC form; :func:`env` wraps it with PettingZoo's order enforcement."""

    def __init__(
        self,
        config: NegotiationConfig | None = None,
        *,
        scenarios: ScenarioBank | None = None,
        judge: Any = None,
        agreement_detector: Any = None,
        prompts: PromptTemplates | None = None,
        render_mode: str | None = None,
        **settings: Any,
    ):
        AECEnv.__init__(self)
        self._setup(config, scenarios, judge, agreement_detector, prompts, render_mode, settings)

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        negotiation = self._new_episode(seed, options)
        self.agents = self.possible_agents[:]
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: self._info(a) for a in self.agents}
        self.agent_selection = negotiation.speaker

    def step(self, action: Any) -> None:
        if self.negotiation is None or not self.agents:
            raise EpisodeOver("step() called on a finished or unstarted episode; call reset()")
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            if action is not None:
                raise EpisodeOver(
                    f"the episode is over for {agent}: step it with None (PettingZoo's dead "
                    "step, as env.agent_iter() expects) or call reset()"
                )
            self._was_dead_step(action)
            return
        self._submit(agent, action)
        negotiation = self.negotiation
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        if negotiation.done:
            reward = negotiation.reward()
            for a in self.agents:
                self.rewards[a] = reward
                self.terminations[a] = True
        else:
            self.agent_selection = negotiation.speaker
        self.infos = {a: self._info(a) for a in self.agents}
        self._accumulate_rewards()
        if self.render_mode == "human":
            self.render()

    def last(self, observe: bool = True) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.negotiation is None or not self.agents:
            raise EpisodeOver(
                "last() called on a finished or unstarted episode: no agent acts; the "
                "episode's record is env.unwrapped.negotiation.summary_info(); call reset()"
            )
        return super().last(observe)

    def sync_finished(self) -> None:
        """Bring the PettingZoo bookkeeping (rewards, terminations, infos, the acting agent)
        up to date after the episode was played outside :meth:`step`, by a
        :class:`~negotiation_env.vector.VectorNegotiationEnv` that adopted this env
        (``agents.play_episodes`` does this)."""
        negotiation = self.negotiation
        if negotiation.done:
            reward = negotiation.reward()
            self.rewards = {a: reward for a in self.agents}
            self._cumulative_rewards = dict(self.rewards)
            self.terminations = {a: True for a in self.agents}
        else:
            self.agent_selection = negotiation.speaker
        self.infos = {a: self._info(a) for a in self.agents}


class parallel_env(_NegotiationEnvBase, ParallelEnv):
    """The parallel form: each ``step`` advances one turn.

    ``actions`` is a dict ``{agent: utterance}`` (anything else is a ``TypeError``). Only the
    acting agent's action is used (its observation has ``acting == 1``); actions given for
    the other agent are ignored and reported as ``info[agent]["ignored_action"]``.
    """

    def __init__(
        self,
        config: NegotiationConfig | None = None,
        *,
        scenarios: ScenarioBank | None = None,
        judge: Any = None,
        agreement_detector: Any = None,
        prompts: PromptTemplates | None = None,
        render_mode: str | None = None,
        **settings: Any,
    ):
        self._setup(config, scenarios, judge, agreement_detector, prompts, render_mode, settings)
        self.agents: list[str] = []

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        self._new_episode(seed, options)
        self.agents = self.possible_agents[:]
        return (
            {a: self.observe(a) for a in self.agents},
            {a: self._info(a) for a in self.agents},
        )

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        check_actions(actions)
        negotiation = self.negotiation
        if negotiation is None or not self.agents:
            raise EpisodeOver("step() called on a finished or unstarted episode; call reset()")
        actor = negotiation.speaker
        if actor not in actions:
            raise KeyError(f"no action for {actor}, whose turn it is (phase {negotiation.phase})")
        for agent, action in actions.items():
            if agent not in self.possible_agents:
                raise KeyError(f"actions: {agent!r} is not an agent; agents are {self.agents}")
            if agent != actor and action is not None and not isinstance(action, str):
                # ignored, but a bad action is a bug in the caller: say so
                raise TypeError(
                    f"action of {agent} must be a str (the utterance) or None, got "
                    f"{type(action).__name__}"
                )
        self._submit(actor, actions[actor])
        agents = self.agents
        observations = {a: self.observe(a) for a in agents}
        reward = negotiation.reward() if negotiation.done else 0.0
        rewards = {a: reward for a in agents}
        terminations = {a: negotiation.done for a in agents}
        truncations = {a: False for a in agents}
        infos = {}
        for a in agents:
            infos[a] = self._info(a)
            infos[a]["ignored_action"] = a != actor and actions.get(a) is not None
        if negotiation.done:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return observations, rewards, terminations, truncations, infos


def check_actions(actions: Any) -> None:
    """The parallel API's actions must be a dict {agent: utterance}; say so otherwise."""
    if not isinstance(actions, dict):
        raise TypeError(
            f"actions must be a dict {{agent: utterance}}, e.g. {{'negotiator_0': 'Hello'}}; "
            f"got {type(actions).__name__}"
        )


def env(**kwargs: Any) -> AECEnv:
    """The AEC environment with PettingZoo's order-enforcing wrapper (see the module docstring)."""
    return _OrderEnforcing(raw_env(**kwargs))


class _OrderEnforcing(wrappers.OrderEnforcingWrapper):
    """PettingZoo's order enforcement, except that stepping a finished episode raises
    :class:`EpisodeOver` (PettingZoo's wrapper only logs a warning and drops the action, so
    an action would be lost without a trace), as the raw, parallel and Gymnasium forms do."""

    def step(self, action: Any) -> None:
        if self._has_reset and not self.agents:
            raise EpisodeOver("step() called on a finished episode; call reset()")
        super().step(action)

    def last(self, observe: bool = True) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._has_reset and not self.agents:
            return self.unwrapped.last(observe)  # raises EpisodeOver, with what to do
        return super().last(observe)
