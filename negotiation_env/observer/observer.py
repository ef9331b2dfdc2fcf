"""The grounded observer: features per turn, trajectory constraints, and overlays that act.

Following the Grounded Observer framework, each constraint carries an **overlay** that says
what happens when it is violated:

``prohibitory``  the turn is blocked: the agent is asked to write it again with the reason
                 explained, up to ``max_regenerations`` times; then a safe fallback
                 utterance is sent in its place;
``transfer``     the turn goes through, and corrective guidance is added to the next
                 observation of the agent that violated it;
``permissive``   the violation is only logged.

``rigidity`` (0-1, default 0.5) sets how strict numeric thresholds are (see
:func:`~negotiation_env.observer.language.apply_rigidity`). Every check and intervention is
recorded; ``shaping_penalty`` turns violations into a negative reward for training.

A configuration file (YAML)::

    rigidity: 0.5
    max_regenerations: 2
    shaping_penalty: 0.0
    constraints:
      - name: never_address_judge
        rule: not addresses_judge
        overlay: prohibitory
        scope: speaker        # or dialogue: windows and once() then cover both speakers
        message: Speak to your counterpart only; do not address any judge or evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from negotiation_env.observer.features import CHEAP_FEATURES, Extractor, Utterance, cheap_features
from negotiation_env.observer.language import Node, apply_rigidity, check_features, parse
from negotiation_env.scenarios import Scenario

OVERLAYS = ("prohibitory", "transfer", "permissive")
FALLBACK = (
    "Let me put this constructively: I care about {own}, and I know {partner} matters to you. "
    "Can we look for a plan that protects both?"
)


SCOPES = ("speaker", "dialogue")


@dataclass
class Constraint:
    """``scope="speaker"`` evaluates the rule over the speaker's own turns (windows count
    that speaker's turns); ``"dialogue"`` over every turn of the dialogue."""

    name: str
    rule: str
    formula: Node
    overlay: str
    message: str
    scope: str = "speaker"


@dataclass
class Violation:
    constraint: str
    overlay: str
    turn: int
    speaker: str
    message: str

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


class Observer:
    def __init__(
        self,
        constraints: Sequence[Constraint],
        extractors: Sequence[Extractor] = (),
        rigidity: float = 0.5,
        max_regenerations: int = 2,
        shaping_penalty: float = 0.0,
        fallback: str = FALLBACK,
    ):
        if not 0.0 <= rigidity <= 1.0:
            raise ValueError(f"rigidity must be in [0, 1], got {rigidity}")
        if max_regenerations < 0:
            raise ValueError(f"max_regenerations must be >= 0, got {max_regenerations}")
        self.constraints = list(constraints)
        self.extractors = list(extractors)
        self.rigidity = rigidity
        self.max_regenerations = max_regenerations
        self.shaping_penalty = shaping_penalty
        self.fallback = fallback

    @classmethod
    def from_file(
        cls, path: str | Path, extractors: Sequence[Extractor] = (), **overrides: Any
    ) -> Observer:
        path = Path(path)
        return cls.from_text(path.read_text(encoding="utf-8"), str(path), extractors, **overrides)

    @classmethod
    def default(cls, **overrides: Any) -> Observer:
        """The shipped constraint set (``negotiation_env/observer/default_constraints.yaml``)."""
        path = Path(str(resources.files("negotiation_env.observer") / "default_constraints.yaml"))
        return cls.from_file(path, **overrides)

    @classmethod
    def load(cls, spec: str, **overrides: Any) -> Observer:
        """``default`` (the shipped constraints) or the path of a constraint file."""
        return cls.default(**overrides) if spec == "default" else cls.from_file(spec, **overrides)

    @classmethod
    def from_text(
        cls,
        text: str,
        source: str = "<observer>",
        extractors: Sequence[Extractor] = (),
        extra_features: Sequence[str] = (),
        **overrides: Any,
    ) -> Observer:
        """Parse a YAML configuration; every error names ``source``, line and column."""
        try:
            root = yaml.compose(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{source}: not valid YAML: {error}") from None
        if root is None or not isinstance(root, yaml.MappingNode):
            raise ValueError(
                f"{source}: the configuration must be a mapping with a 'constraints' list"
            )
        data = yaml.safe_load(text)
        allowed = {"rigidity", "max_regenerations", "shaping_penalty", "fallback", "constraints"}
        for key in data:
            if key not in allowed:
                raise ValueError(f"{source}: unknown key {key!r}; allowed: {sorted(allowed)}")
        settings = {
            k: data[k]
            for k in ("rigidity", "max_regenerations", "shaping_penalty", "fallback")
            if k in data
        }
        settings.update(overrides)
        rigidity = float(settings.get("rigidity", 0.5))
        known = set(CHEAP_FEATURES) | set(extra_features)
        constraints_node = next((v for k, v in root.value if k.value == "constraints"), None)
        if constraints_node is None or not isinstance(constraints_node, yaml.SequenceNode):
            raise ValueError(f"{source}: 'constraints' must be a list")
        constraints, names = [], set()
        for index, item in enumerate(constraints_node.value):
            where = f"{source}:{item.start_mark.line + 1}"
            if not isinstance(item, yaml.MappingNode):
                raise ValueError(f"{where}: constraint {index} must be a mapping")
            fields = {k.value: v for k, v in item.value}
            for key in fields:
                if key not in ("name", "rule", "overlay", "message", "scope"):
                    raise ValueError(
                        f"{where}: unknown field {key!r}; expected name, rule, overlay, message, scope"
                    )
            for key in ("name", "rule", "overlay"):
                if key not in fields or not str(fields[key].value).strip():
                    raise ValueError(f"{where}: constraint {index} needs {key!r}")
            name, overlay = fields["name"].value, fields["overlay"].value
            if name in names:
                raise ValueError(f"{where}: duplicate constraint name {name!r}")
            names.add(name)
            if overlay not in OVERLAYS:
                raise ValueError(f"{where}: overlay {overlay!r} is not one of {list(OVERLAYS)}")
            rule_node = fields["rule"]
            line, column = rule_node.start_mark.line + 1, rule_node.start_mark.column + 1
            column += 1 if rule_node.style in ("'", '"') else 0
            formula = parse(rule_node.value, source, line, column)
            check_features(formula, known, (rule_node.value, source, line, column))
            message = (
                fields["message"].value
                if "message" in fields
                else f"this turn breaks the rule {name!r}"
            )
            scope = fields["scope"].value if "scope" in fields else "speaker"
            if scope not in SCOPES:
                raise ValueError(f"{where}: scope {scope!r} is not one of {list(SCOPES)}")
            formula = apply_rigidity(formula, rigidity)
            constraints.append(Constraint(name, rule_node.value, formula, overlay, message, scope))
        return cls(constraints, extractors, **settings)

    # ------------------------------------------------------------------ checking
    def features(self, scenario: Scenario, turns: Sequence[Utterance]) -> dict[str, float]:
        values = cheap_features(scenario, turns)
        for extractor in self.extractors:
            values.update(extractor(scenario, turns))
        values["turn"] = float(len(turns) - 1)
        values["speaker"] = float(turns[-1].speaker.endswith("1"))
        return values

    def check(self, history: Sequence[dict[str, float]], speaker: str) -> list[Violation]:
        """Violations at the last entry of ``history`` (the candidate turn of ``speaker``)."""
        seat = history[-1]["speaker"]
        own = [h for h in history if h["speaker"] == seat]
        violations = []
        for constraint in self.constraints:
            scoped = own if constraint.scope == "speaker" else history
            if not constraint.formula.holds(scoped, len(scoped) - 1):
                violations.append(
                    Violation(
                        constraint.name,
                        constraint.overlay,
                        len(history) - 1,
                        speaker,
                        constraint.message,
                    )
                )
        return violations

    def fallback_utterance(self, scenario: Scenario, speaker: str) -> str:
        seat = 0 if speaker.endswith("0") else 1
        own, partner = scenario.personas[seat], scenario.personas[1 - seat]
        return self.fallback.format(own=own.core_values[0], partner=partner.core_values[0])


@dataclass
class Decision:
    """What to do with a candidate turn: send ``text`` (maybe a fallback) or block it."""

    blocked: bool
    text: str
    violations: list[Violation]
    features: dict[str, float]
    fallback: bool = False  # ``text`` replaces the candidate

    def sent(self, action: str) -> str:
        """What to pass to the env for the reviewed ``action``: the fallback, or the action
        itself (so that the env flags what it truncated or sanitized)."""
        return self.text if self.fallback else action


@dataclass
class ObservedEpisode:
    """One episode under an observer: feature history, guidance, attempts and records.

    Used by the PettingZoo wrappers and by the vectorized env, so both behave the same.
    """

    observer: Observer
    scenario: Scenario
    history: list[dict[str, float]] = field(default_factory=list)
    turns: list[Utterance] = field(default_factory=list)
    guidance: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    interventions: list[dict[str, Any]] = field(default_factory=list)
    penalties: dict[str, float] = field(default_factory=dict)

    def review(self, speaker: str, text: str) -> Decision:
        """Check a candidate dialogue turn and decide; call :meth:`commit` once it is sent.

        ``text`` is what the env would keep of the action (``Negotiation.clean``): the
        observer judges what the dialogue will contain, and never reads more than the
        env's limit."""
        candidate = [*self.turns, Utterance(speaker, text)]
        features = self.observer.features(self.scenario, candidate)
        violations = self.observer.check([*self.history, features], speaker)
        turn = len(self.turns)
        self.checks.append(
            {
                "turn": turn,
                "speaker": speaker,
                "features": features,
                "violations": [v.to_record() for v in violations],
            }
        )
        prohibitory = [v for v in violations if v.overlay == "prohibitory"]
        if prohibitory:
            attempts = self.attempts.get(speaker, 0)
            reasons = "; ".join(v.message for v in prohibitory)
            if attempts < self.observer.max_regenerations:
                self.attempts[speaker] = attempts + 1
                self.guidance[speaker] = (
                    f"Your last reply was not sent because: {reasons} Write a new reply to the same message."
                )
                self.interventions.append(
                    {
                        "turn": turn,
                        "speaker": speaker,
                        "kind": "blocked",
                        "constraints": [v.constraint for v in prohibitory],
                    }
                )
                return Decision(True, text, violations, features)
            fallback = self.observer.fallback_utterance(self.scenario, speaker)
            self.interventions.append(
                {
                    "turn": turn,
                    "speaker": speaker,
                    "kind": "fallback",
                    "constraints": [v.constraint for v in prohibitory],
                }
            )
            features = self.observer.features(
                self.scenario, [*self.turns, Utterance(speaker, fallback)]
            )
            return Decision(False, fallback, violations, features, fallback=True)
        return Decision(False, text, violations, features)

    def commit(self, speaker: str, decision: Decision) -> float:
        """Record a sent turn; returns its reward shaping penalty (also added to ``penalties``)."""
        self.turns.append(Utterance(speaker, decision.text))
        self.history.append(decision.features)
        self.attempts.pop(speaker, None)
        self.guidance.pop(speaker, None)
        transfer = [v for v in decision.violations if v.overlay == "transfer"]
        if transfer:
            self.guidance[speaker] = "Guidance for your next reply: " + " ".join(
                v.message for v in transfer
            )
            self.interventions.append(
                {
                    "turn": len(self.turns) - 1,
                    "speaker": speaker,
                    "kind": "guidance",
                    "constraints": [v.constraint for v in transfer],
                }
            )
        penalty = self.observer.shaping_penalty * len(decision.violations)
        if penalty:
            self.penalties[speaker] = self.penalties.get(speaker, 0.0) + penalty
        return penalty

    def screen(
        self, negotiation: Any, speaker: str, action: str, send: Callable[[str], Any]
    ) -> float | None:
        """Review ``speaker``'s dialogue turn and, unless it is blocked, ``send`` what goes
        out (the action, or the observer's fallback) and commit it. Returns the turn's reward
        shaping penalty, or None when the turn was blocked (the speaker is asked again, with
        the reason in its next observation). The one path by which every driver (the
        PettingZoo wrappers and the vectorized env) applies an observer."""
        decision = self.review(speaker, negotiation.clean(action)[0])
        if decision.blocked:
            return None
        send(decision.sent(action))
        return self.commit(speaker, decision)

    def decorate(self, agent: str, observation: dict[str, Any]) -> dict[str, Any]:
        """The observation with pending guidance for ``agent`` added to its last user message."""
        note = self.guidance.get(agent)
        if not note or observation.get("phase") != "dialogue":
            return observation
        messages = [dict(m) for m in observation["messages"]]
        for message in reversed(messages):
            if message["role"] == "user":
                message["content"] += f"\n\n(Moderator: {note})"
                break
        return {**observation, "messages": tuple(messages)}

    def summary(self) -> dict[str, Any]:
        violations: dict[str, int] = {}
        for check in self.checks:
            for violation in check["violations"]:
                violations[violation["constraint"]] = violations.get(violation["constraint"], 0) + 1
        return {
            "checks": self.checks,
            "interventions": self.interventions,
            "violations_by_constraint": violations,
            "penalties": dict(self.penalties),
        }
