"""Reading and validating scenario files (JSONL), and the bank of scenarios an env samples from.

Three files make a scenario set, one JSON object per line:

- dilemmas: ``{"id", "category", "title", "text", "split"}`` (``split`` optional, default
  ``"train"``; ``category`` one of professional, interpersonal, everyday);
- personas: ``{"id", "name", "core_values": [...], "stance"}``;
- persona pairs: ``{"id", "tension", "persona_a", "persona_b", "split"}`` where the two
  personas are ids from the personas file.

Generated records may carry a ``source`` object (generator, prompt version). Every problem
is reported as ``FILE:LINE: field 'NAME': what is wrong``; nothing is skipped silently.
Besides what :func:`negotiation_env.jsonl.read_jsonl` rejects in any data file, text fields
may not hold control characters other than tab and newline (an escape sequence would act
on the terminal that shows it), ids may not hold ``/`` (it separates the dilemma from the
pair in a scenario id), and every field has a length bound (``records.MAX_*``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from negotiation_env.jsonl import DataFileError
from negotiation_env.jsonl import read_jsonl as read_data_lines
from negotiation_env.scenarios.records import (
    CATEGORIES,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    MAX_VALUE_CHARS,
    MAX_VALUES,
    SCENARIO_ID_SEPARATOR,
    SPLITS,
    Dilemma,
    Persona,
    PersonaPair,
    Scenario,
    scenario_id,
    split_scenario_id,
)

SHIPPED_FILES = {
    "dilemmas": "dilemmas.jsonl",
    "personas": "personas.jsonl",
    "pairs": "persona_pairs.jsonl",
}


class ScenarioDataError(DataFileError):
    """A scenario file is malformed; the message names the file, the line and the field."""


def shipped_data_path(kind: str) -> Path:
    """Path of a file of the dataset shipped with the package (kind: dilemmas, personas, pairs)."""
    return Path(str(resources.files("negotiation_env.scenarios") / "data" / SHIPPED_FILES[kind]))


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; malformed lines raise."""
    return read_data_lines(path, ScenarioDataError)


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str  # "id", "text", "text_list", "choice", "object"
    required: bool = True
    choices: tuple[str, ...] = ()
    max_chars: int = MAX_NAME_CHARS  # of the text, or of each item of a text list


_DILEMMA_FIELDS = (
    _Field("id", "id", max_chars=MAX_ID_CHARS),
    _Field("category", "choice", choices=CATEGORIES),
    _Field("title", "text"),
    _Field("text", "text", max_chars=MAX_TEXT_CHARS),
    _Field("split", "choice", required=False, choices=SPLITS),
    _Field("source", "object", required=False),
)
_PERSONA_FIELDS = (
    _Field("id", "id", max_chars=MAX_ID_CHARS),
    _Field("name", "text"),
    _Field("core_values", "text_list", max_chars=MAX_VALUE_CHARS),
    _Field("stance", "text", max_chars=MAX_TEXT_CHARS),
    _Field("source", "object", required=False),
)
_PAIR_FIELDS = (
    _Field("id", "id", max_chars=MAX_ID_CHARS),
    _Field("tension", "text"),
    _Field("persona_a", "id", max_chars=MAX_ID_CHARS),
    _Field("persona_b", "id", max_chars=MAX_ID_CHARS),
    _Field("split", "choice", required=False, choices=SPLITS),
    _Field("source", "object", required=False),
)
_ALLOWED_CONTROLS = "\t\n"


def _text_problem(text: str, max_chars: int) -> str | None:
    """What is wrong with a (stripped) text value, or None."""
    if len(text) > max_chars:
        return f"{len(text)} characters, more than the {max_chars} allowed"
    for position, char in enumerate(text, 1):
        code = ord(char)
        if (code < 0x20 or 0x7F <= code <= 0x9F) and char not in _ALLOWED_CONTROLS:
            return (
                f"control character U+{code:04X} at character {position}; only tab and "
                "newline are allowed (escape sequences would act on the terminal showing it)"
            )
    return None


def _check_record(
    record: dict[str, Any], fields: Sequence[_Field], path: str | Path, line: int
) -> dict[str, Any]:
    known = {f.name for f in fields}
    for key in record:
        if key not in known:
            raise ScenarioDataError(
                path, line, key, f"unknown field; expected one of {sorted(known)}"
            )
    cleaned: dict[str, Any] = {}
    for spec in fields:
        if spec.name not in record or record[spec.name] is None:
            if spec.required:
                raise ScenarioDataError(path, line, spec.name, "missing")
            continue
        value = record[spec.name]
        if spec.kind in ("id", "text", "choice"):
            if not isinstance(value, str):
                raise ScenarioDataError(
                    path, line, spec.name, f"expected a string, got {type(value).__name__}"
                )
            value = value.strip()
            if not value:
                raise ScenarioDataError(path, line, spec.name, "empty")
            if spec.kind == "choice" and value not in spec.choices:
                raise ScenarioDataError(
                    path, line, spec.name, f"{value!r:.80} is not one of {list(spec.choices)}"
                )
            problem = _text_problem(value, spec.max_chars)
            if problem:
                raise ScenarioDataError(path, line, spec.name, problem)
            if spec.kind == "id" and SCENARIO_ID_SEPARATOR in value:
                raise ScenarioDataError(
                    path,
                    line,
                    spec.name,
                    f"{value!r} holds {SCENARIO_ID_SEPARATOR!r}, which separates the dilemma "
                    "from the pair in a scenario id; use letters, digits, '-' or '_'",
                )
        elif spec.kind == "text_list":
            if not isinstance(value, list) or not value:
                raise ScenarioDataError(
                    path, line, spec.name, "expected a non-empty list of strings"
                )
            if len(value) > MAX_VALUES:
                raise ScenarioDataError(
                    path, line, spec.name, f"{len(value)} items, more than the {MAX_VALUES} allowed"
                )
            for index, item in enumerate(value):
                if not isinstance(item, str) or not item.strip():
                    raise ScenarioDataError(
                        path, line, f"{spec.name}[{index}]", "expected a non-empty string"
                    )
                problem = _text_problem(item.strip(), spec.max_chars)
                if problem:
                    raise ScenarioDataError(path, line, f"{spec.name}[{index}]", problem)
            value = tuple(item.strip() for item in value)
        elif spec.kind == "object" and not isinstance(value, dict):
            raise ScenarioDataError(
                path, line, spec.name, f"expected an object, got {type(value).__name__}"
            )
        cleaned[spec.name] = value
    return cleaned


def _check_unique_id(seen: dict[str, int], record_id: str, path: str | Path, line: int) -> None:
    if record_id in seen:
        raise ScenarioDataError(
            path,
            line,
            "id",
            f"duplicate id {record_id!r} (first defined on line {seen[record_id]})",
        )
    seen[record_id] = line


def parse_dilemma(record: dict[str, Any], path: str | Path = "<record>", line: int = 1) -> Dilemma:
    return Dilemma(**_check_record(record, _DILEMMA_FIELDS, path, line))


def parse_persona(record: dict[str, Any], path: str | Path = "<record>", line: int = 1) -> Persona:
    return Persona(**_check_record(record, _PERSONA_FIELDS, path, line))


def parse_pair(
    record: dict[str, Any],
    personas: dict[str, Persona],
    path: str | Path = "<record>",
    line: int = 1,
) -> PersonaPair:
    fields = _check_record(record, _PAIR_FIELDS, path, line)
    sides = fields["tension"].split(" vs ")
    if len(sides) != 2 or not all(side.strip() for side in sides):
        raise ScenarioDataError(
            path,
            line,
            "tension",
            f"expected the form 'X vs Y' (e.g. 'cost vs quality'), got {fields['tension']!r}",
        )
    for side in ("persona_a", "persona_b"):
        if fields[side] not in personas:
            raise ScenarioDataError(
                path, line, side, f"unknown persona id {fields[side]!r} (not in the personas file)"
            )
    if fields["persona_a"] == fields["persona_b"]:
        raise ScenarioDataError(path, line, "persona_b", "a pair needs two different personas")
    fields["persona_a"] = personas[fields["persona_a"]]
    fields["persona_b"] = personas[fields["persona_b"]]
    return PersonaPair(**fields)


def load_dilemmas(path: str | Path) -> list[Dilemma]:
    seen: dict[str, int] = {}
    dilemmas = []
    for line, record in read_jsonl(path):
        dilemma = parse_dilemma(record, path, line)
        _check_unique_id(seen, dilemma.id, path, line)
        dilemmas.append(dilemma)
    if not dilemmas:
        raise ScenarioDataError(path, None, None, "no dilemmas in file")
    return dilemmas


def load_personas(path: str | Path) -> dict[str, Persona]:
    seen: dict[str, int] = {}
    personas: dict[str, Persona] = {}
    for line, record in read_jsonl(path):
        persona = parse_persona(record, path, line)
        _check_unique_id(seen, persona.id, path, line)
        personas[persona.id] = persona
    if not personas:
        raise ScenarioDataError(path, None, None, "no personas in file")
    return personas


def load_pairs(path: str | Path, personas: dict[str, Persona]) -> list[PersonaPair]:
    seen: dict[str, int] = {}
    pairs = []
    for line, record in read_jsonl(path):
        pair = parse_pair(record, personas, path, line)
        _check_unique_id(seen, pair.id, path, line)
        pairs.append(pair)
    if not pairs:
        raise ScenarioDataError(path, None, None, "no persona pairs in file")
    return pairs


class ScenarioBank:
    """All dilemmas and persona pairs of a data set, and the scenarios they combine into.

    A split is a pool of scenarios: ``"train"`` = train dilemmas x train pairs, ``"test"`` =
    test dilemmas x held-out pairs (never seen in training), ``"all"`` = everything.

    >>> bank = ScenarioBank.default()
    >>> scenario = bank.get("pro-001/cost_vs_quality")
    >>> scenario.dilemma.category
    'professional'
    """

    def __init__(self, dilemmas: Sequence[Dilemma], pairs: Sequence[PersonaPair], origin: str = ""):
        self.origin = origin
        self._dilemmas = {d.id: d for d in dilemmas}
        self._pairs = {p.id: p for p in pairs}
        if len(self._dilemmas) != len(dilemmas):
            raise ValueError(f"{origin}: duplicate dilemma ids")
        if len(self._pairs) != len(pairs):
            raise ValueError(f"{origin}: duplicate persona pair ids")
        for kind, ids in (("dilemma", self._dilemmas), ("persona pair", self._pairs)):
            for record_id in ids:
                if SCENARIO_ID_SEPARATOR in record_id:  # get() could never find it
                    raise ValueError(
                        f"{origin}: {kind} id {record_id!r} holds {SCENARIO_ID_SEPARATOR!r}, "
                        "which separates the dilemma from the pair in a scenario id"
                    )

    @classmethod
    def from_files(
        cls,
        dilemmas: str | Path | None = None,
        personas: str | Path | None = None,
        pairs: str | Path | None = None,
    ) -> ScenarioBank:
        """Load and validate a scenario set; a path left as None takes the shipped file."""
        dilemma_path = Path(dilemmas) if dilemmas else shipped_data_path("dilemmas")
        persona_path = Path(personas) if personas else shipped_data_path("personas")
        pair_path = Path(pairs) if pairs else shipped_data_path("pairs")
        persona_by_id = load_personas(persona_path)
        return cls(
            load_dilemmas(dilemma_path),
            load_pairs(pair_path, persona_by_id),
            origin=f"{dilemma_path}, {pair_path}",
        )

    @classmethod
    def default(cls) -> ScenarioBank:
        """The data set shipped with the package (loaded once per process)."""
        return _default_bank()

    def dilemmas(self, split: str = "all", category: str | None = None) -> list[Dilemma]:
        _check_split(split)
        return [
            d
            for d in self._dilemmas.values()
            if (split == "all" or d.split == split) and (category is None or d.category == category)
        ]

    def pairs(self, split: str = "all") -> list[PersonaPair]:
        _check_split(split)
        return [p for p in self._pairs.values() if split == "all" or p.split == split]

    def personas(self) -> list[Persona]:
        seen: dict[str, Persona] = {}
        for pair in self._pairs.values():
            seen.setdefault(pair.persona_a.id, pair.persona_a)
            seen.setdefault(pair.persona_b.id, pair.persona_b)
        return list(seen.values())

    def dilemma(self, dilemma_id: str) -> Dilemma:
        try:
            return self._dilemmas[dilemma_id]
        except KeyError:
            raise KeyError(f"unknown dilemma id {dilemma_id!r} in {self.origin}") from None

    def pair(self, pair_id: str) -> PersonaPair:
        try:
            return self._pairs[pair_id]
        except KeyError:
            raise KeyError(f"unknown persona pair id {pair_id!r} in {self.origin}") from None

    def get(self, scenario: str) -> Scenario:
        """The scenario with id ``DILEMMA_ID/PAIR_ID`` (any split)."""
        dilemma_id, pair_id = split_scenario_id(scenario)
        return Scenario(self.dilemma(dilemma_id), self.pair(pair_id))

    def scenarios(self, split: str = "train", category: str | None = None) -> list[Scenario]:
        """Every (dilemma, pair) combination of a split, in file order."""
        return [Scenario(d, p) for d in self.dilemmas(split, category) for p in self.pairs(split)]

    def count(self, split: str = "train") -> int:
        return len(self.dilemmas(split)) * len(self.pairs(split))

    def sample(
        self, rng: np.random.Generator, split: str = "train", category: str | None = None
    ) -> Scenario:
        """Draw a dilemma and a persona pair of the split uniformly and independently."""
        dilemmas, pairs = self.dilemmas(split, category), self.pairs(split)
        if not dilemmas or not pairs:
            what = "dilemmas" if not dilemmas else "persona pairs"
            raise ValueError(
                f"no {what} in split {split!r}"
                + (f" and category {category!r}" if category else "")
                + f" of {self.origin}"
            )
        return Scenario(
            dilemmas[int(rng.integers(len(dilemmas)))], pairs[int(rng.integers(len(pairs)))]
        )

    def scenario_ids(self, split: str = "all") -> set[str]:
        return {scenario_id(d.id, p.id) for d in self.dilemmas(split) for p in self.pairs(split)}


def _check_split(split: str) -> None:
    if split not in (*SPLITS, "all"):
        raise ValueError(f"unknown split {split!r}; expected one of {[*SPLITS, 'all']}")


@lru_cache(maxsize=1)
def _default_bank() -> ScenarioBank:
    return ScenarioBank.from_files()
