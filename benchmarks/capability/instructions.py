"""Verifiable instruction following, in the spirit of IFEval (our own checks and prompts).

Each prompt states one to three instructions that a program can decide without a judge
("answer in under 50 words", "use exactly three bullet points"). A model that lost its
general abilities during alignment training follows them less often.

A check is a dict ``{"type": ..., <parameters>}``. The types, their parameters and when they
pass (words are runs of letters and digits, joined by inner apostrophes or hyphens, so
"don't" and "well-known" are one word each; keyword matches are case-insensitive and whole
words, and a keyword of several words matches across any whitespace):

=====================  ========================  ===========================================
type                   parameters                passes when the answer ...
=====================  ========================  ===========================================
``max_words``          ``n``                     has between 1 and ``n`` words
``min_words``          ``n``                     has at least ``n`` words
``max_sentences``      ``n``                     has between 1 and ``n`` sentences [1]_
``include_keywords``   ``keywords``              contains every keyword
``exclude_keywords``   ``keywords``              has a word and contains none of the keywords
``keyword_frequency``  ``keyword``, ``at_least`` contains the keyword ``at_least`` times
``starts_with``        ``text``                  begins with ``text``, ignoring case and
                                                 leading whitespace
``ends_with``          ``text``                  ends with ``text``, ignoring case and
                                                 trailing whitespace
``json_valid``         ``required_keys`` (opt.)  parses as JSON, whole or as the only content
                                                 of one ```` ```json ```` fenced block; with
                                                 ``required_keys``, is an object holding them
``bullet_count``       ``n``                     has exactly ``n`` lines starting with "- "
                                                 or "* " (after indentation)
``numbered_list``      ``n``                     has at least ``n`` lines starting with a
                                                 number and "." or ")" ("1. ", "2) ")
``all_lowercase``      (none)                    has a lowercase letter and no uppercase one
``all_uppercase``      (none)                    has an uppercase letter and no lowercase one
``no_commas``          (none)                    has a word and no comma
``paragraph_count``    ``n``                     has exactly ``n`` paragraphs, separated by
                                                 blank lines
``placeholder_count``  ``n``                     has at least ``n`` placeholders in square
                                                 brackets, like ``[name]`` (markdown links
                                                 ``[text](url)`` do not count)
``quoted``             (none)                    is wrapped whole in double quotes, straight
                                                 ("...") or curly (“...”)
``title``              (none)                    contains a title in double angular brackets,
                                                 like ``<<A Day Out>>``
``language_english``   (none)                    has letters, at least 80% of them ASCII
``contains_question``  (none)                    contains a question mark
``postscript``         (none)                    has a line starting with "P.S."
=====================  ========================  ===========================================

.. [1] A sentence ends at ".", "!" or "?" (possibly repeated, possibly followed by closing
   quotes or brackets) followed by whitespace or the end, or at a blank line; a segment
   counts only if it holds a word. Abbreviations such as "e.g. " end a sentence too, so
   prompts leave some slack.

``n`` and ``at_least`` are positive integers; ``keywords`` and ``required_keys`` are non-empty
lists of non-empty strings; ``keyword`` and ``text`` are non-empty strings. A parameter not
listed is an error, so a typo cannot silently turn a check off.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from negotiation_env.jsonl import DataFileError, read_jsonl

DEFAULT_PROMPTS_PATH = Path(__file__).parents[1] / "data" / "instructions.jsonl"

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)|\n\s*\n")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_BULLET_LINE = re.compile(r"^[ \t]*[-*][ \t]+\S", re.MULTILINE)
_NUMBERED_LINE = re.compile(r"^[ \t]*\d+[.)][ \t]+\S", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\[([^\[\]\n]+)\](?!\()")
_TITLE = re.compile(r"<<([^<>\n]+)>>")
_POSTSCRIPT = re.compile(r"^[ \t]*P\.S\.", re.MULTILINE | re.IGNORECASE)
_JSON_FENCE = re.compile(r"```(?:json)?[ \t]*\n(.*)\n[ \t]*```", re.DOTALL | re.IGNORECASE)


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _sentences(text: str) -> list[str]:
    return [part for part in _SENTENCE_END.split(text) if _WORD.search(part)]


def _keyword_count(text: str, keyword: str) -> int:
    body = r"\s+".join(re.escape(part) for part in keyword.split())
    return len(re.findall(rf"(?<!\w){body}(?!\w)", text, re.IGNORECASE))


def _max_words(answer: str, spec: dict) -> bool:
    return 1 <= len(_words(answer)) <= spec["n"]


def _min_words(answer: str, spec: dict) -> bool:
    return len(_words(answer)) >= spec["n"]


def _max_sentences(answer: str, spec: dict) -> bool:
    return 1 <= len(_sentences(answer)) <= spec["n"]


def _include_keywords(answer: str, spec: dict) -> bool:
    return all(_keyword_count(answer, keyword) > 0 for keyword in spec["keywords"])


def _exclude_keywords(answer: str, spec: dict) -> bool:
    has_words = bool(_words(answer))
    return has_words and not any(_keyword_count(answer, keyword) for keyword in spec["keywords"])


def _keyword_frequency(answer: str, spec: dict) -> bool:
    return _keyword_count(answer, spec["keyword"]) >= spec["at_least"]


def _starts_with(answer: str, spec: dict) -> bool:
    return answer.lstrip().casefold().startswith(spec["text"].strip().casefold())


def _ends_with(answer: str, spec: dict) -> bool:
    return answer.rstrip().casefold().endswith(spec["text"].strip().casefold())


def _json_valid(answer: str, spec: dict) -> bool:
    text = answer.strip()
    fenced = _JSON_FENCE.fullmatch(text)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return False
    required = spec.get("required_keys")
    if required is None:
        return True
    return isinstance(value, dict) and all(key in value for key in required)


def _bullet_count(answer: str, spec: dict) -> bool:
    return len(_BULLET_LINE.findall(answer)) == spec["n"]


def _numbered_list(answer: str, spec: dict) -> bool:
    return len(_NUMBERED_LINE.findall(answer)) >= spec["n"]


def _all_lowercase(answer: str, spec: dict) -> bool:
    return any(c.islower() for c in answer) and not any(c.isupper() for c in answer)


def _all_uppercase(answer: str, spec: dict) -> bool:
    return any(c.isupper() for c in answer) and not any(c.islower() for c in answer)


def _no_commas(answer: str, spec: dict) -> bool:
    return bool(_words(answer)) and "," not in answer


def _paragraph_count(answer: str, spec: dict) -> bool:
    paragraphs = [part for part in _PARAGRAPH_BREAK.split(answer.strip()) if part.strip()]
    return len(paragraphs) == spec["n"]


def _placeholder_count(answer: str, spec: dict) -> bool:
    placeholders = [inner for inner in _PLACEHOLDER.findall(answer) if inner.strip()]
    return len(placeholders) >= spec["n"]


def _quoted(answer: str, spec: dict) -> bool:
    text = answer.strip()
    return len(text) >= 2 and (text[0], text[-1]) in {('"', '"'), ("“", "”")}


def _title(answer: str, spec: dict) -> bool:
    return any(inner.strip() for inner in _TITLE.findall(answer))


def _language_english(answer: str, spec: dict) -> bool:
    letters = [c for c in answer if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) >= 0.8 * len(letters)


def _contains_question(answer: str, spec: dict) -> bool:
    return "?" in answer


def _postscript(answer: str, spec: dict) -> bool:
    return _POSTSCRIPT.search(answer) is not None


CHECKERS: dict[str, Callable[[str, dict], bool]] = {
    "max_words": _max_words,
    "min_words": _min_words,
    "max_sentences": _max_sentences,
    "include_keywords": _include_keywords,
    "exclude_keywords": _exclude_keywords,
    "keyword_frequency": _keyword_frequency,
    "starts_with": _starts_with,
    "ends_with": _ends_with,
    "json_valid": _json_valid,
    "bullet_count": _bullet_count,
    "numbered_list": _numbered_list,
    "all_lowercase": _all_lowercase,
    "all_uppercase": _all_uppercase,
    "no_commas": _no_commas,
    "paragraph_count": _paragraph_count,
    "placeholder_count": _placeholder_count,
    "quoted": _quoted,
    "title": _title,
    "language_english": _language_english,
    "contains_question": _contains_question,
    "postscript": _postscript,
}
"""Check type -> function(answer, spec) -> passed. Call :func:`check` to validate the spec first."""

_COUNT, _TEXT, _TEXTS = "a positive integer", "a non-empty string", "a non-empty list of strings"

# Parameters of each check type: name -> (kind, required).
CHECK_PARAMETERS: dict[str, dict[str, tuple[str, bool]]] = {
    "max_words": {"n": (_COUNT, True)},
    "min_words": {"n": (_COUNT, True)},
    "max_sentences": {"n": (_COUNT, True)},
    "include_keywords": {"keywords": (_TEXTS, True)},
    "exclude_keywords": {"keywords": (_TEXTS, True)},
    "keyword_frequency": {"keyword": (_TEXT, True), "at_least": (_COUNT, True)},
    "starts_with": {"text": (_TEXT, True)},
    "ends_with": {"text": (_TEXT, True)},
    "json_valid": {"required_keys": (_TEXTS, False)},
    "bullet_count": {"n": (_COUNT, True)},
    "numbered_list": {"n": (_COUNT, True)},
    "all_lowercase": {},
    "all_uppercase": {},
    "no_commas": {},
    "paragraph_count": {"n": (_COUNT, True)},
    "placeholder_count": {"n": (_COUNT, True)},
    "quoted": {},
    "title": {},
    "language_english": {},
    "contains_question": {},
    "postscript": {},
}


class CheckSpecError(ValueError):
    """A check spec is malformed; ``param`` names the offending parameter ("type" for the type)."""

    def __init__(self, param: str | None, message: str):
        self.param = param
        super().__init__(message)


def _is_valid(kind: str, value: Any) -> bool:
    if kind == _COUNT:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if kind == _TEXT:
        return isinstance(value, str) and bool(value.strip())
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, str) and item.strip() for item in value)
    )


def validate_spec(spec: Any) -> None:
    """Raise :class:`CheckSpecError` naming what is wrong with ``spec``; return if it is valid."""
    if not isinstance(spec, dict):
        raise CheckSpecError(None, f"a check must be a dict with a 'type' key, got {spec!r}")
    check_type = spec.get("type")
    if not isinstance(check_type, str) or check_type not in CHECKERS:
        raise CheckSpecError(
            "type", f"unknown check type {check_type!r}; expected one of: {', '.join(CHECKERS)}"
        )
    accepted = CHECK_PARAMETERS[check_type]
    for name in spec:
        if name != "type" and name not in accepted:
            allowed = ", ".join(accepted) or "none"
            raise CheckSpecError(
                name,
                f"check {check_type!r} has unknown parameter {name!r}; accepted: {allowed}",
            )
    for name, (kind, required) in accepted.items():
        if name not in spec:
            if required:
                raise CheckSpecError(
                    name, f"check {check_type!r} is missing parameter {name!r} ({kind})"
                )
            continue
        if not _is_valid(kind, spec[name]):
            raise CheckSpecError(
                name,
                f"check {check_type!r} parameter {name!r} must be {kind}, got {spec[name]!r}",
            )


def check(answer: str, spec: dict) -> bool:
    """Whether ``answer`` satisfies the check ``spec``; a malformed spec raises ``ValueError``.

    Example:
        >>> check("Dear Sam, thanks for the seeds.", {"type": "starts_with", "text": "dear"})
        True
        >>> check("one, two", {"type": "no_commas"})
        False
    """
    validate_spec(spec)
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a string, got {type(answer).__name__}")
    return CHECKERS[spec["type"]](answer, spec)


@dataclass(frozen=True)
class InstructionPrompt:
    """A prompt and the checks its answer must pass (validated when loaded)."""

    id: str
    prompt: str
    checks: list[dict[str, Any]]


class InstructionDataError(DataFileError):
    """An instruction-prompt file is malformed; the message names the file, line and field."""


def _parse_prompt(path: Path, line_no: int, record: Any) -> InstructionPrompt:
    def fail(field: str | None, message: str) -> InstructionDataError:
        return InstructionDataError(path, line_no, field, message)

    for field in record:
        if field not in ("id", "prompt", "checks"):
            raise fail(field, "unknown field; accepted: id, prompt, checks")
    for field in ("id", "prompt"):
        if field not in record:
            raise fail(field, "missing")
        if not isinstance(record[field], str) or not record[field].strip():
            raise fail(field, f"expected a non-empty string, got {record[field]!r}")
    checks = record.get("checks")
    if not isinstance(checks, list) or not checks:
        raise fail("checks", f"expected a non-empty list of checks, got {checks!r}")
    for index, spec in enumerate(checks):
        try:
            validate_spec(spec)
        except CheckSpecError as error:
            field = f"checks[{index}]" + (f".{error.param}" if error.param else "")
            raise fail(field, str(error)) from None
    return InstructionPrompt(id=record["id"], prompt=record["prompt"], checks=checks)


def load_prompts(path: str | Path | None = None) -> list[InstructionPrompt]:
    """Prompts of a JSONL file (default: the shipped ``benchmarks/data/instructions.jsonl``).

    Every line is an object ``{"id", "prompt", "checks"}``; ids are unique and every check
    spec is validated here, so a bad file fails at load time with its line and field.

    Example:
        >>> prompts = load_prompts()
        >>> prompts[0].id
        'if-001'
    """
    path = Path(path) if path is not None else DEFAULT_PROMPTS_PATH
    prompts: list[InstructionPrompt] = []
    seen: dict[str, int] = {}
    for line_no, record in read_jsonl(path, InstructionDataError):
        prompt = _parse_prompt(path, line_no, record)
        if prompt.id in seen:
            raise InstructionDataError(
                path, line_no, "id", f"duplicate id {prompt.id!r} (first on line {seen[prompt.id]})"
            )
        seen[prompt.id] = line_no
        prompts.append(prompt)
    if not prompts:
        raise InstructionDataError(path, None, None, "holds no prompts")
    return prompts


def score_answers(
    prompts: Sequence[InstructionPrompt], answers: Mapping[str, str] | Sequence[str]
) -> dict[str, Any]:
    """Accuracy of ``answers`` (by prompt id, or in the order of ``prompts``) on their checks.

    Returns ``prompt_level_accuracy`` (fraction of prompts whose checks all pass),
    ``instruction_level_accuracy`` (fraction of all checks that pass), ``per_type_accuracy``
    (check type -> fraction passed), the counts ``prompts`` and ``instructions``, and
    ``failed_checks`` (prompt id -> types of the checks it failed, for failing prompts only).

    Example:
        >>> prompt = InstructionPrompt("p", "Say hi in lowercase.", [{"type": "all_lowercase"}])
        >>> score_answers([prompt], {"p": "hi"})["prompt_level_accuracy"]
        1.0
    """
    if not prompts:
        raise ValueError("score_answers needs at least one prompt, got none")
    if isinstance(answers, Mapping):
        missing = [prompt.id for prompt in prompts if prompt.id not in answers]
        if missing:
            raise ValueError(f"no answer for prompt(s): {', '.join(missing)}")
        ordered = [answers[prompt.id] for prompt in prompts]
    else:
        if len(answers) != len(prompts):
            raise ValueError(f"got {len(answers)} answers for {len(prompts)} prompts")
        ordered = list(answers)

    prompts_passed = 0
    per_type: dict[str, list[bool]] = defaultdict(list)
    failed_checks: dict[str, list[str]] = {}
    for prompt, answer in zip(prompts, ordered, strict=True):
        if not isinstance(answer, str):
            raise ValueError(f"answer for prompt {prompt.id!r} must be a string, got {answer!r}")
        results = [(spec["type"], check(answer, spec)) for spec in prompt.checks]
        for check_type, passed in results:
            per_type[check_type].append(passed)
        failed = [check_type for check_type, passed in results if not passed]
        if failed:
            failed_checks[prompt.id] = failed
        else:
            prompts_passed += 1

    all_results = [passed for outcomes in per_type.values() for passed in outcomes]
    return {
        "prompt_level_accuracy": prompts_passed / len(prompts),
        "instruction_level_accuracy": sum(all_results) / len(all_results),
        "per_type_accuracy": {
            check_type: sum(outcomes) / len(outcomes)
            for check_type, outcomes in sorted(per_type.items())
        },
        "prompts": len(prompts),
        "instructions": len(all_results),
        "failed_checks": failed_checks,
    }
