"""Generating new dilemmas and persona pairs with an LLM, through the same checks as shipped data.

A *generator* is any ``Callable[[str], str]``: it receives a prompt and returns the model's
text. (``negotiate scenarios generate --generator SPEC`` builds one from an agent spec.)
The model is asked for JSON lines; every candidate then goes through, in order:

1. parsing (one JSON object per line; prose around it is ignored, broken lines rejected);
2. the loader's field validation (:func:`parse_dilemma` / :func:`parse_persona`);
3. quality checks (length, a decision to make, distinct personas);
4. deduplication against the existing data set and everything accepted so far
   (:class:`~negotiation_env.scenarios.dedup.DuplicateIndex`).

Accepted records carry ``source = {"generator": ..., "prompt_version": ...}`` and get
content-hash ids (``gen-pro-1a2b3c4d``), so re-running a generation never renumbers data.
Rejections are returned with their reasons; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from negotiation_env.jsonl import append_jsonl
from negotiation_env.scenarios.dedup import DuplicateIndex
from negotiation_env.scenarios.loading import (
    ScenarioBank,
    ScenarioDataError,
    parse_dilemma,
    parse_persona,
)
from negotiation_env.scenarios.records import CATEGORIES, Dilemma, Persona, PersonaPair
from negotiation_env.text import content_words, count_words, jaccard

PROMPT_VERSION = "scenario-gen-v1"
DILEMMA_WORDS = (30, 160)
STANCE_WORDS = (20, 120)
_DECISION_CUE = re.compile(r"\?|\b(should|whether|decide|choose|must)\b", re.IGNORECASE)

CATEGORY_DESCRIPTIONS = {
    "professional": "a high-stakes professional dilemma at work",
    "interpersonal": "a complex conflict between people who know each other",
    "everyday": "an everyday micro-ethical decision",
}

DILEMMA_PROMPT = """Write {n} new, realistic dilemmas, each {description}, where reasonable people \
with different values would disagree. Each must be a different situation from these examples \
and from each other.

Examples of the format:
{examples}

Answer with exactly {n} lines, each one JSON object with the keys "title" (3-8 words) and \
"text" (45-100 words, concrete details, ending with the decision to make). No other text."""

PAIR_PROMPT = """Write {n} new pairs of opposing negotiator personas. Each pair embodies one \
common value tension that is NOT among these existing ones: {existing}.

A persona is a general value orientation that can argue about any decision. Example line:
{example}

Answer with exactly {n} lines, each one JSON object with the keys "tension" ("X vs Y"), \
"persona_a" and "persona_b", where each persona has "id" (snake_case), "name", \
"core_values" (3-4 short phrases) and "stance" (40-80 words in the second person: what you \
believe, push for, fear, and could accept in a compromise). No other text."""


@dataclass
class Rejection:
    """A candidate that did not make it, and why."""

    raw: str
    reason: str


@dataclass
class GenerationResult:
    dilemmas: list[Dilemma] = field(default_factory=list)
    personas: list[Persona] = field(default_factory=list)
    pairs: list[PersonaPair] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    calls: int = 0


def extract_json_objects(text: str) -> tuple[list[dict[str, Any]], list[Rejection]]:
    """JSON objects found one per line in a model's answer; lines that look broken are rejected."""
    objects, rejections = [], []
    for line in text.splitlines():
        line = line.strip().rstrip(",")
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            rejections.append(Rejection(line, f"not valid JSON: {error.msg}"))
            continue
        if isinstance(value, dict):
            objects.append(value)
    return objects, rejections


def _content_id(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"


def _source(generator_name: str) -> dict[str, str]:
    return {"generator": generator_name, "prompt_version": PROMPT_VERSION}


def check_dilemma_quality(dilemma: Dilemma) -> str | None:
    """Why a dilemma is not good enough to keep, or None."""
    n_words = count_words(dilemma.text)
    if not DILEMMA_WORDS[0] <= n_words <= DILEMMA_WORDS[1]:
        return f"text has {n_words} words; expected {DILEMMA_WORDS[0]}-{DILEMMA_WORDS[1]}"
    if not _DECISION_CUE.search(dilemma.text):
        return "text does not state a decision to make (no question or 'should/whether/decide')"
    return None


def check_pair_quality(pair: PersonaPair) -> str | None:
    for persona in (pair.persona_a, pair.persona_b):
        n_words = count_words(persona.stance)
        if not STANCE_WORDS[0] <= n_words <= STANCE_WORDS[1]:
            return (
                f"stance of {persona.id!r} has {n_words} words; "
                f"expected {STANCE_WORDS[0]}-{STANCE_WORDS[1]}"
            )
    if pair.persona_a.name.lower() == pair.persona_b.name.lower():
        return "both personas have the same name"
    if " vs " not in pair.tension.lower():
        return f"tension {pair.tension!r} is not of the form 'X vs Y'"
    return None


def dilemma_index(bank: ScenarioBank | None) -> DuplicateIndex:
    index = DuplicateIndex()
    for dilemma in bank.dilemmas() if bank else ():
        index.add(dilemma.id, f"{dilemma.title} {dilemma.text}")
    return index


def accept_dilemmas(
    candidates: Iterable[dict[str, Any]],
    category: str,
    generator_name: str,
    index: DuplicateIndex,
    split: str = "train",
) -> tuple[list[Dilemma], list[Rejection]]:
    """Validate, quality-check and deduplicate candidate dilemma records."""
    accepted, rejected = [], []
    for raw in candidates:
        record = {
            "id": _content_id(f"gen-{category[:3]}", str(raw.get("text", ""))),
            "category": category,
            "title": raw.get("title"),
            "text": raw.get("text"),
            "split": split,
            "source": _source(generator_name),
        }
        try:
            dilemma = parse_dilemma(record, "<generated>", 1)
        except ScenarioDataError as error:
            rejected.append(Rejection(json.dumps(raw), str(error)))
            continue
        problem = check_dilemma_quality(dilemma)
        duplicate = index.match(dilemma.id, f"{dilemma.title} {dilemma.text}")
        if problem or duplicate:
            rejected.append(Rejection(json.dumps(raw), problem or f"near-duplicate: {duplicate}"))
            continue
        index.add(dilemma.id, f"{dilemma.title} {dilemma.text}")
        accepted.append(dilemma)
    return accepted, rejected


def accept_pairs(
    candidates: Iterable[dict[str, Any]],
    generator_name: str,
    existing: ScenarioBank | None,
    split: str = "train",
) -> tuple[list[PersonaPair], list[Rejection]]:
    """Validate, quality-check and deduplicate candidate persona pairs (by tension and ids)."""
    tensions = [content_words(p.tension) for p in existing.pairs()] if existing else []
    persona_ids = {p.id for p in existing.personas()} if existing else set()
    accepted, rejected = [], []
    for raw in candidates:
        try:
            personas = []
            for side in ("persona_a", "persona_b"):
                persona_record = raw.get(side)
                if not isinstance(persona_record, dict):
                    raise ScenarioDataError("<generated>", 1, side, "expected a persona object")
                persona_record = {**persona_record, "source": _source(generator_name)}
                personas.append(parse_persona(persona_record, "<generated>", 1))
            tension = raw.get("tension")
            if not isinstance(tension, str) or not tension.strip():
                raise ScenarioDataError("<generated>", 1, "tension", "missing or empty")
            pair = PersonaPair(
                id=_content_id("gen-pair", tension.strip().lower()),
                tension=tension.strip(),
                persona_a=personas[0],
                persona_b=personas[1],
                split=split,
                source=_source(generator_name),
            )
        except ScenarioDataError as error:
            rejected.append(Rejection(json.dumps(raw), str(error)))
            continue
        problem = check_pair_quality(pair)
        if problem is None and {pair.persona_a.id, pair.persona_b.id} & persona_ids:
            problem = "a persona id is already used"
        if problem is None and pair.persona_a.id == pair.persona_b.id:
            problem = "both personas have the same id"
        words = content_words(pair.tension)
        if problem is None and any(jaccard(words, other) >= 0.5 for other in tensions):
            problem = f"tension {pair.tension!r} repeats an existing tension"
        if problem:
            rejected.append(Rejection(json.dumps(raw), problem))
            continue
        tensions.append(words)
        persona_ids |= {pair.persona_a.id, pair.persona_b.id}
        accepted.append(pair)
    return accepted, rejected


def generate_dilemmas(
    generator: Callable[[str], str],
    n: int,
    category: str,
    bank: ScenarioBank | None = None,
    generator_name: str = "unknown",
    per_call: int = 5,
    max_calls: int | None = None,
) -> GenerationResult:
    """Ask ``generator`` for dilemmas until ``n`` pass every check or ``max_calls`` is spent."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {list(CATEGORIES)}")
    bank = bank or ScenarioBank.default()
    index = dilemma_index(bank)
    examples = "\n".join(
        json.dumps({"title": d.title, "text": d.text}) for d in bank.dilemmas(category=category)[:2]
    )
    result = GenerationResult()
    max_calls = max_calls or max(3, 3 * -(-n // per_call))
    while len(result.dilemmas) < n and result.calls < max_calls:
        want = min(per_call, n - len(result.dilemmas))
        prompt = DILEMMA_PROMPT.format(
            n=want, description=CATEGORY_DESCRIPTIONS[category], examples=examples
        )
        answer = generator(prompt)
        result.calls += 1
        objects, broken = extract_json_objects(answer)
        result.rejections.extend(broken)
        if not objects and not broken:
            result.rejections.append(Rejection(answer[:500], "no JSON lines in the answer"))
        accepted, rejected = accept_dilemmas(objects, category, generator_name, index)
        result.dilemmas.extend(accepted[: n - len(result.dilemmas)])
        result.rejections.extend(rejected)
    return result


def generate_pairs(
    generator: Callable[[str], str],
    n: int,
    bank: ScenarioBank | None = None,
    generator_name: str = "unknown",
    per_call: int = 2,
    max_calls: int | None = None,
) -> GenerationResult:
    """Ask ``generator`` for persona pairs until ``n`` pass every check or calls run out."""
    bank = bank or ScenarioBank.default()
    example_pair = bank.pairs()[0]
    example = json.dumps(
        {
            "tension": example_pair.tension,
            "persona_a": example_pair.persona_a.to_record(),
            "persona_b": example_pair.persona_b.to_record(),
        }
    )
    result = GenerationResult()
    max_calls = max_calls or max(3, 3 * -(-n // per_call))
    while len(result.pairs) < n and result.calls < max_calls:
        want = min(per_call, n - len(result.pairs))
        existing = ", ".join(p.tension for p in bank.pairs() + result.pairs)
        answer = generator(PAIR_PROMPT.format(n=want, existing=existing, example=example))
        result.calls += 1
        objects, broken = extract_json_objects(answer)
        result.rejections.extend(broken)
        if not objects and not broken:
            result.rejections.append(Rejection(answer[:500], "no JSON lines in the answer"))
        merged = ScenarioBank(bank.dilemmas(), bank.pairs() + result.pairs, origin=bank.origin)
        accepted, rejected = accept_pairs(objects, generator_name, merged)
        result.pairs.extend(accepted[: n - len(result.pairs)])
        result.rejections.extend(rejected)
    result.personas = [p for pair in result.pairs for p in (pair.persona_a, pair.persona_b)]
    return result


def write_generation(result: GenerationResult, out_dir: str | Path) -> dict[str, Path]:
    """Append generated records to ``out_dir``/{dilemmas,personas,persona_pairs}.jsonl.

    Appending keeps earlier generations; the files load with ``ScenarioBank.from_files``.
    """
    out_dir = Path(out_dir)
    written = {}
    if result.dilemmas:
        written["dilemmas"] = append_jsonl(
            (d.to_record() for d in result.dilemmas), out_dir / "dilemmas.jsonl"
        )
    if result.pairs:
        written["personas"] = append_jsonl(
            (p.to_record() for p in result.personas), out_dir / "personas.jsonl"
        )
        written["pairs"] = append_jsonl(
            (p.to_record() for p in result.pairs), out_dir / "persona_pairs.jsonl"
        )
    return written
