"""The negotiation protocol: configuration, prompts, and the per-episode state machine.

One episode of :class:`Negotiation` runs through three phases:

``dialogue``
    The two negotiators alternate (``first_speaker`` opens). After each turn, from
    ``min_turns_for_agreement`` on, an agreement detector decides whether the parties agree.
    The dialogue ends on agreement or after ``max_turns`` turns.
``summary``
    The ``summarizer`` writes the final joint resolution. In ``training`` mode an episode
    without agreement skips this phase and ends with ``no_agreement_reward`` (the paper's
    rule); in ``evaluation`` mode a resolution is always written.
``done``
    A judge has scored the resolution (or there was none to score).

The state machine does no I/O: the environment asks it what is needed next
(:attr:`Negotiation.needs`) and feeds it agreement decisions and judgements, so vectorized
callers can batch those calls across many episodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from negotiation_env.judges.base import AgreementDecision, AgreementRequest, Judgement, JudgeRequest
from negotiation_env.scenarios import Persona, Scenario
from negotiation_env.spaces import make_utf8_safe
from negotiation_env.transcript import Turn, format_transcript

AGENTS = ("negotiator_0", "negotiator_1")


class _Named(str, Enum):
    """A fixed set of names that compare equal to (and print as) their plain strings, so
    records and configs keep writing ``"dialogue"`` while the code names each value."""

    def __str__(self) -> str:
        return str(self.value)


class Mode(_Named):
    """What happens when the turns run out without agreement."""

    TRAINING = "training"  # the episode ends with no_agreement_reward and no resolution
    EVALUATION = "evaluation"  # a resolution is written and judged anyway


class Phase(_Named):
    """Where an episode is: talking, writing the joint resolution, or over."""

    DIALOGUE = "dialogue"
    SUMMARY = "summary"
    DONE = "done"


class Need(_Named):
    """What the caller must supply before an episode can continue (``Negotiation.needs``)."""

    AGREEMENT = "agreement"  # an AgreementDecision for the last turn
    JUDGEMENT = "judgement"  # a Judgement of the resolution


MODES = tuple(m.value for m in Mode)
PHASES = tuple(p.value for p in Phase)
DEFAULT_AGREEMENT_MARKER = "[AGREE]"


class EpisodeOver(RuntimeError, ValueError):
    """An action for an episode that is over (or not started): every API of the env raises
    it, naming what to do. It is a ValueError too, as PettingZoo's own dead-step check is."""


def partner_of(agent: str) -> str:
    return AGENTS[1] if agent == AGENTS[0] else AGENTS[0]


@dataclass
class NegotiationConfig:
    """Protocol settings. Defaults are the paper's where it states one (see docs/environment.md)."""

    mode: str = field(
        default="evaluation",
        metadata={
            "help": "'training': no agreement -> no summary, reward no_agreement_reward; "
            "'evaluation': a resolution is always written and judged."
        },
    )
    max_turns: int = field(default=7, metadata={"help": "Dialogue turns at most (paper: 7)."})
    context_turns: int | None = field(
        default=2,
        metadata={
            "help": "Dialogue turns shown to the acting agent: the last k (paper: 2), "
            "or None for the full history."
        },
    )
    first_speaker: str = field(default="negotiator_0", metadata={"help": "Who opens."})
    summarizer: str = field(
        default="negotiator_0",
        metadata={"help": "Who writes the final resolution (paper: agent 1)."},
    )
    min_turns_for_agreement: int = field(
        default=2, metadata={"help": "Agreement is checked only once this many turns were spoken."}
    )
    no_agreement_reward: float = field(
        default=0.0, metadata={"help": "Reward of a training episode without agreement (paper: 0)."}
    )
    judge_failure_reward: float = field(
        default=0.0,
        metadata={"help": "Reward when the judge returns no score; info['judge_failed'] is set."},
    )
    max_utterance_chars: int = field(
        default=4000, metadata={"help": "Longer actions are truncated and flagged 'truncated'."}
    )
    turn_word_limit: int = field(default=120, metadata={"help": "Word limit stated in the prompt."})
    summary_word_limit: int = field(
        default=180, metadata={"help": "Word limit for the resolution stated in the prompt."}
    )
    agreement_marker: str = field(
        default=DEFAULT_AGREEMENT_MARKER,
        metadata={"help": "What the prompt asks an agreeing speaker to write."},
    )
    reveal_partner_persona: bool = field(
        default=True, metadata={"help": "Show each negotiator the partner's name and core values."}
    )
    split: str = field(
        default="train", metadata={"help": "Scenario pool for reset(): 'train', 'test' or 'all'."}
    )

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.mode not in MODES:
            raise ValueError(f"mode: {self.mode!r} is not one of {list(MODES)}")
        for name in ("first_speaker", "summarizer"):
            if getattr(self, name) not in AGENTS:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not one of {list(AGENTS)}")
        for name in ("max_turns", "max_utterance_chars", "turn_word_limit", "summary_word_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.context_turns is not None and self.context_turns < 1:
            raise ValueError(f"context_turns: must be None or at least 1, got {self.context_turns}")
        if not 1 <= self.min_turns_for_agreement <= self.max_turns:
            raise ValueError(
                f"min_turns_for_agreement: must be between 1 and max_turns ({self.max_turns}), "
                f"got {self.min_turns_for_agreement}"
            )
        if self.split not in ("train", "test", "all"):
            raise ValueError(f"split: {self.split!r} is not one of ['train', 'test', 'all']")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> NegotiationConfig:
        """Build from a mapping (e.g. a YAML section); unknown keys are errors naming the key."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ValueError(f"unknown negotiation setting {key!r}; known: {sorted(known)}")
        return cls(**values)


_TYPE_CHECKS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "int | None": (int, type(None)),
    "list[str]": (list,),
}


def check_field_types(instance: Any) -> None:
    """Reject wrongly typed dataclass fields, naming the field (bools are not ints here)."""
    for spec in dataclasses.fields(instance):
        expected = _TYPE_CHECKS.get(str(spec.type))
        if expected is None:
            continue
        value = getattr(instance, spec.name)
        if isinstance(value, bool) and bool not in expected:
            ok = False
        else:
            ok = isinstance(value, expected)
        if not ok:
            raise TypeError(
                f"{spec.name}: expected {spec.type}, got {type(value).__name__} ({value!r})"
            )


@dataclass
class PromptTemplates:
    """The text an LLM negotiator sees. Fields are ``str.format`` templates (see render_*)."""

    dialogue_system: str = (
        "You are {name}. Your core values: {values}.\n{stance}\n\n"
        "You are negotiating with {partner}{partner_values} about the dilemma below. "
        "Speak in the first person as {name}, in at most {word_limit} words. Argue for what "
        "matters to you, take the other side's concerns seriously, and work toward a concrete "
        "plan you could both accept. Only when you accept the other side's latest proposal, "
        "end your message with {marker}."
    )
    partner_values: str = ", whose core values are: {values}"
    dilemma: str = "Dilemma: {title}\n{text}"
    opening: str = "You speak first. Open the negotiation with your view and a first proposal."
    partner_opening: str = "{partner} says:\n{text}"
    omitted: str = "(Earlier turns of the negotiation are not shown.)"
    summary_system: str = (
        "You are {name}. Your core values: {values}. You have just negotiated with {partner}, "
        "whose core values are: {partner_values_list}. Write the final joint resolution of the "
        "dilemma: the decision and the concrete steps (who does what, and when), fair to the "
        "core values of both sides, in at most {word_limit} words. Write only the resolution, "
        "as one plain paragraph."
    )
    summary_request: str = (
        "Dilemma: {title}\n{text}\n\nNegotiation transcript:\n{transcript}\n\n{outcome}"
    )
    outcome_agreed: str = "You reached agreement after {turns} turns."
    outcome_not_agreed: str = (
        "You did not reach agreement within {turns} turns. Write the fairest joint resolution "
        "you can."
    )


def _values(persona: Persona) -> str:
    return ", ".join(persona.core_values)


class Negotiation:
    """The state of one episode. Agents act through :meth:`submit`; see the module docstring."""

    def __init__(
        self,
        scenario: Scenario,
        config: NegotiationConfig,
        prompts: PromptTemplates | None = None,
    ):
        self.scenario = scenario
        self.config = config
        self.prompts = prompts or PromptTemplates()
        self.turns: list[Turn] = []
        self.phase = Phase.DIALOGUE
        self.speaker = config.first_speaker
        self.agreed = False
        self.rounds_to_agreement: int | None = None
        self.resolution: Turn | None = None
        self.judgement: Judgement | None = None
        self.agreement_checks: list[AgreementDecision] = []
        # What the caller must supply before the episode can continue (None: an action).
        self.needs: Need | None = None

    # ------------------------------------------------------------------ identities
    def persona(self, agent: str) -> Persona:
        return self.scenario.personas[AGENTS.index(agent)]

    @property
    def done(self) -> bool:
        return self.phase == Phase.DONE

    # ------------------------------------------------------------------ acting
    def submit(self, agent: str, action: Any) -> Turn:
        """Record the acting agent's utterance (dialogue) or resolution (summary)."""
        if self.needs is not None:
            raise RuntimeError(f"the episode is waiting for a {self.needs}, not for an action")
        if self.phase == Phase.DONE:
            raise EpisodeOver("the episode is over; call reset()")
        if agent != self.speaker:
            raise RuntimeError(f"it is {self.speaker}'s turn, not {agent}'s")
        if not isinstance(action, str):
            raise TypeError(
                f"action of {agent} must be a str (the utterance), got {type(action).__name__}"
            )
        text, flags = self.clean(action)
        kind = Phase.SUMMARY.value if self.phase == Phase.SUMMARY else Phase.DIALOGUE.value
        turn = Turn(len(self.turns), agent, self.persona(agent).name, text, kind, flags)
        if kind == Phase.SUMMARY:
            self.resolution = turn
            self.needs = Need.JUDGEMENT
            return turn
        self.turns.append(turn)
        if len(self.turns) >= self.config.min_turns_for_agreement:
            self.needs = Need.AGREEMENT
        else:
            self._continue_dialogue()
        return turn

    def clean(self, action: str) -> tuple[str, tuple[str, ...]]:
        """The text a turn records for ``action``, and its flags: lone surrogates replaced,
        cut to ``max_utterance_chars``, stripped. An observer judges this text: what the
        env keeps, not what the agent sent."""
        flags = []
        safe = make_utf8_safe(action)
        if safe != action:
            flags.append("sanitized")
        if len(safe) > self.config.max_utterance_chars:
            safe = safe[: self.config.max_utterance_chars]
            flags.append("truncated")
        safe = safe.strip()
        if not safe:
            flags.append("empty")
        return safe, tuple(flags)

    def agreement_request(self) -> AgreementRequest:
        return AgreementRequest(self.scenario, tuple(self.turns))

    def apply_agreement(self, decision: AgreementDecision) -> None:
        if self.needs != Need.AGREEMENT:
            raise RuntimeError("no agreement check is pending")
        self.needs = None
        self.agreement_checks.append(decision)
        if decision.agreed:
            self.agreed = True
            self.rounds_to_agreement = len(self.turns)
            self._start_summary()
        else:
            self._continue_dialogue()

    def _continue_dialogue(self) -> None:
        if len(self.turns) >= self.config.max_turns:
            if self.config.mode == Mode.TRAINING:
                self.phase = Phase.DONE  # the paper's rule: no agreement, no summary, reward 0
            else:
                self._start_summary()
        else:
            self.speaker = partner_of(self.speaker)

    def _start_summary(self) -> None:
        self.phase = Phase.SUMMARY
        self.speaker = self.config.summarizer

    def judge_request(self) -> JudgeRequest:
        if self.resolution is None:
            raise RuntimeError("no resolution has been written")
        return JudgeRequest(self.scenario, self.resolution.text, tuple(self.turns))

    def apply_judgement(self, judgement: Judgement) -> None:
        if self.needs != Need.JUDGEMENT:
            raise RuntimeError("no judgement is pending")
        self.needs = None
        self.judgement = judgement
        self.phase = Phase.DONE

    @property
    def judge_failed(self) -> bool:
        """The resolution was judged and the judge returned no score."""
        return self.judgement is not None and self.judgement.score is None

    def reward(self) -> float:
        """The terminal reward both negotiators receive (0 before the end)."""
        if self.phase != Phase.DONE:
            return 0.0
        if self.resolution is None:
            return self.config.no_agreement_reward
        if self.judgement is None or self.judgement.score is None:
            return self.config.judge_failure_reward
        return float(self.judgement.score)

    # ------------------------------------------------------------------ observing
    def messages(self, agent: str) -> list[dict[str, str]]:
        """The chat an LLM in ``agent``'s seat would continue now."""
        if self.phase == Phase.SUMMARY and agent == self.speaker:
            return self._summary_messages(agent)
        return self._dialogue_messages(agent)

    def _dialogue_messages(self, agent: str) -> list[dict[str, str]]:
        p = self.prompts
        persona, partner = self.persona(agent), self.persona(partner_of(agent))
        partner_values = (
            p.partner_values.format(values=_values(partner))
            if self.config.reveal_partner_persona
            else ""
        )
        system = p.dialogue_system.format(
            name=persona.name,
            values=_values(persona),
            stance=persona.stance,
            partner=partner.name,
            partner_values=partner_values,
            word_limit=self.config.turn_word_limit,
            marker=self.config.agreement_marker,
        )
        visible = self.visible_turns()
        dilemma = p.dilemma.format(
            title=self.scenario.dilemma.title, text=self.scenario.dilemma.text
        )
        parts = [dilemma]
        if len(visible) < len(self.turns):
            parts.append(p.omitted)
        elif not self.turns or self.turns[0].speaker == agent:
            # the first speaker keeps the instruction it answered: the chat only grows from
            # turn to turn, so a backend can reuse what it computed for the earlier prompt
            parts.append(p.opening)
        elif visible and visible[0].speaker != agent:
            parts.append(p.partner_opening.format(partner=partner.name, text=visible[0].text))
            visible = visible[1:]
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": "\n\n".join(parts)},
        ]
        for turn in visible:
            role = "assistant" if turn.speaker == agent else "user"
            messages.append({"role": role, "content": turn.text})
        return messages

    def visible_turns(self) -> list[Turn]:
        k = self.config.context_turns
        return list(self.turns) if k is None else list(self.turns[-k:])

    def resolution_messages(self) -> list[dict[str, str]]:
        """The chat the summarizer continues to write the resolution, from the dialogue so
        far (also after the episode, e.g. to write further resolutions of one dialogue)."""
        return self._summary_messages(self.config.summarizer)

    def _summary_messages(self, agent: str) -> list[dict[str, str]]:
        p = self.prompts
        persona, partner = self.persona(agent), self.persona(partner_of(agent))
        outcome = (p.outcome_agreed if self.agreed else p.outcome_not_agreed).format(
            turns=len(self.turns)
        )
        system = p.summary_system.format(
            name=persona.name,
            values=_values(persona),
            partner=partner.name,
            partner_values_list=_values(partner),
            word_limit=self.config.summary_word_limit,
        )
        request = p.summary_request.format(
            title=self.scenario.dilemma.title,
            text=self.scenario.dilemma.text,
            transcript=format_transcript(self.turns),
            outcome=outcome,
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": request}]

    def observation(self, agent: str) -> dict[str, Any]:
        """What ``agent`` observes now (the env's observation space; see env.py)."""
        persona, partner = self.persona(agent), self.persona(partner_of(agent))
        return {
            "messages": tuple(
                {"role": m["role"], "content": m["content"]} for m in self.messages(agent)
            ),
            "phase": self.phase.value,
            "turn": len(self.turns),
            "acting": int(not self.done and self.speaker == agent),
            "scenario_id": self.scenario.id,
            "own_values": tuple(persona.core_values),
            "partner_values": tuple(partner.core_values)
            if self.config.reveal_partner_persona
            else (),
        }

    # ------------------------------------------------------------------ reporting
    def summary_info(self) -> dict[str, Any]:
        """What ``info`` carries about the episode so far (JSON-serialisable)."""
        return {
            "scenario_id": self.scenario.id,
            "phase": self.phase.value,
            "turn": len(self.turns),
            "agreement": self.agreed,
            "rounds_to_agreement": self.rounds_to_agreement,
            "transcript": [turn.to_record() for turn in self.turns],
            "resolution": self.resolution.text if self.resolution else None,
            "judgement": self.judgement.to_record() if self.judgement else None,
            "judge_failed": self.judge_failed,
            "agreement_checks": [d.to_record() for d in self.agreement_checks],
        }
