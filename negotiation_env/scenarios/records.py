"""The scenario data model: dilemmas, personas, persona pairs and the scenarios they form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CATEGORIES = ("professional", "interpersonal", "everyday")
SPLITS = ("train", "test")

# Bounds on loaded text. They keep every observation inside the env's declared space
# (scenario ids of at most 512 characters, core values of at most 1000, messages of at
# least 50,000 for persona and dilemma text) with room for custom prompt templates; the
# shipped data uses about a tenth of each.
MAX_ID_CHARS = 100
MAX_NAME_CHARS = 100  # names, titles, tensions: one line
MAX_TEXT_CHARS = 4000  # a dilemma's text, a persona's stance
MAX_VALUES = 10
MAX_VALUE_CHARS = 100


@dataclass(frozen=True)
class Dilemma:
    """A situation where reasonable people disagree, ending in a decision to make."""

    id: str
    category: str
    title: str
    text: str
    split: str = "train"
    source: dict[str, Any] | None = field(default=None, compare=False)

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "category": self.category,
            "title": self.title,
            "text": self.text,
            "split": self.split,
        }
        if self.source:
            record["source"] = dict(self.source)
        return record


@dataclass(frozen=True)
class Persona:
    """A value orientation a negotiator argues from, general enough for any dilemma."""

    id: str
    name: str
    core_values: tuple[str, ...]
    stance: str
    source: dict[str, Any] | None = field(default=None, compare=False)

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "core_values": list(self.core_values),
            "stance": self.stance,
        }
        if self.source:
            record["source"] = dict(self.source)
        return record


@dataclass(frozen=True)
class PersonaPair:
    """Two personas on opposite sides of one value tension."""

    id: str
    tension: str
    persona_a: Persona
    persona_b: Persona
    split: str = "train"
    source: dict[str, Any] | None = field(default=None, compare=False)

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "tension": self.tension,
            "persona_a": self.persona_a.id,
            "persona_b": self.persona_b.id,
            "split": self.split,
        }
        if self.source:
            record["source"] = dict(self.source)
        return record


@dataclass(frozen=True)
class Scenario:
    """A dilemma negotiated by a persona pair: what one episode is about."""

    dilemma: Dilemma
    pair: PersonaPair

    @property
    def id(self) -> str:
        return scenario_id(self.dilemma.id, self.pair.id)

    @property
    def personas(self) -> tuple[Persona, Persona]:
        """(persona of negotiator_0, persona of negotiator_1)."""
        return (self.pair.persona_a, self.pair.persona_b)

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dilemma": self.dilemma.to_record(),
            "tension": self.pair.tension,
            "pair_id": self.pair.id,
            "persona_a": self.pair.persona_a.to_record(),
            "persona_b": self.pair.persona_b.to_record(),
        }


SCENARIO_ID_SEPARATOR = "/"


def scenario_id(dilemma_id: str, pair_id: str) -> str:
    return f"{dilemma_id}{SCENARIO_ID_SEPARATOR}{pair_id}"


def split_scenario_id(value: str) -> tuple[str, str]:
    dilemma_id, sep, pair_id = value.partition(SCENARIO_ID_SEPARATOR)
    if not sep or not dilemma_id or not pair_id:
        raise ValueError(
            f"scenario id {value!r} is not of the form 'DILEMMA_ID{SCENARIO_ID_SEPARATOR}PAIR_ID' "
            f"(e.g. 'pro-001{SCENARIO_ID_SEPARATOR}cost_vs_quality')"
        )
    return dilemma_id, pair_id
