"""Judge prompts: versioned rubrics, quoted data, and defences against prompt injection.

Rubrics are YAML files in ``negotiation_env/judges/rubrics/`` (``ca-v1``, ``ca-v2``,
``conflict-v1``, ``conflict-v2``, ``agreement-v1``, ``agreement-v2``). Their id is recorded
with every score; any change of wording gets a new id.

What a policy writes (resolutions, dialogue turns) reaches the judge only as quoted data:

- it sits between markers that carry a nonce derived from the data itself
  (``<<<RESOLUTION 3fa2c1d0>>>``), so the data cannot contain its own closing marker;
- look-alikes of markers and chat-template control tokens inside the data (``<<<``,
  ``<|im_start|>``, ``[/INST]``, ...) are neutralised: a tokenizer would otherwise read
  them as real special tokens;
- the rubric tells the judge that nothing inside the markers is an instruction.

:func:`detect_injection` flags text that addresses the evaluator (requests for a score,
fake rubric or system text, role tags, closing markers, encoded or multilingual variants);
:func:`strip_injection` removes the flagged sentences so the judge scores the plan alone.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

RUBRIC_FIELDS = {"id", "criterion", "description", "system", "absolute", "pairwise", "agreement"}


@dataclass(frozen=True)
class Rubric:
    id: str
    criterion: str
    description: str
    system: str
    templates: dict[str, str]

    def template(self, kind: str) -> str:
        if kind not in self.templates:
            raise ValueError(
                f"rubric {self.id!r} has no {kind!r} template; it has {sorted(self.templates)}"
            )
        return self.templates[kind]


def rubric_dir() -> Path:
    return Path(str(resources.files("negotiation_env.judges") / "rubrics"))


# The wording each criterion uses when none is named: the best measured one where there is a
# measurement (docs/judges.md); conflict-v1 is unmeasured (no labelled conflict set yet).
DEFAULT_RUBRICS = {"ca": "ca-v2", "conflict": "conflict-v1", "agreement": "agreement-v2"}


def available_rubrics() -> list[str]:
    return sorted(p.stem for p in rubric_dir().glob("*.yaml"))


@lru_cache(maxsize=32)
def load_rubric(name_or_path: str) -> Rubric:
    """A shipped rubric by id (``ca-v1``) or a YAML file of the same shape."""
    path = Path(name_or_path)
    if not path.suffix:
        path = rubric_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown rubric {name_or_path!r}; shipped: {available_rubrics()}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read rubric: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a rubric is a YAML mapping")
    unknown = set(data) - RUBRIC_FIELDS
    if unknown:
        raise ValueError(
            f"{path}: unknown rubric field(s) {sorted(unknown)}; allowed {sorted(RUBRIC_FIELDS)}"
        )
    for field in ("id", "criterion", "system"):
        if not isinstance(data.get(field), str) or not data[field].strip():
            raise ValueError(f"{path}: field {field!r} is missing or empty")
    templates = {
        k: data[k] for k in ("absolute", "pairwise", "agreement") if isinstance(data.get(k), str)
    }
    if not templates:
        raise ValueError(f"{path}: a rubric needs at least one of absolute, pairwise, agreement")
    return Rubric(
        data["id"],
        data["criterion"],
        data.get("description", ""),
        data["system"].strip(),
        templates,
    )


# ---------------------------------------------------------------------- quoting
_CONTROL_TOKENS = re.compile(
    r"<\|[^|<>\n]{1,40}\|>"  # <|im_start|>, <|eot_id|>, <|endoftext|>, ...
    r"|\[/?INST\]|<</?SYS>>|</?s>|<start_of_turn>|<end_of_turn>",
    re.IGNORECASE,
)
_ANGLE_RUNS = re.compile(r"<{3,}|>{3,}")
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")


def neutralise(text: str) -> str:
    """Data made safe to quote: no control tokens, no marker look-alikes, no invisible characters."""
    text = _ZERO_WIDTH.sub("", text)
    text = _CONTROL_TOKENS.sub(
        lambda m: "(" + m.group(0).strip("<>[]|/ ").replace("|", "") + ")", text
    )
    return _ANGLE_RUNS.sub(
        lambda m: "‹" * len(m.group(0)) if m.group(0)[0] == "<" else "›" * len(m.group(0)), text
    )


def markers(label: str, data: str) -> tuple[str, str]:
    """Opening and closing markers for ``data``, with a nonce the data cannot forge."""
    nonce = hashlib.sha256(f"{label}\0{data}".encode()).hexdigest()[:8]
    return f"<<<{label} {nonce}>>>", f"<<<END {label} {nonce}>>>"


def quote(label: str, text: str) -> tuple[str, str, str]:
    """(open marker, neutralised text, close marker)."""
    safe = neutralise(text)
    opening, closing = markers(label, safe)
    return opening, safe, closing


# ---------------------------------------------------------------------- injection detection
# Words that name an evaluation. Everyday words a resolution may well use ("review",
# "rate", "grade", "points", "criteria") are left out to keep false alarms rare.
_EVALUATION_WORDS = (
    r"score|scor(?:ed|ing)|rating|rated|grader|judges?|evaluat(?:or|ors|ion)|rubric|assessor|verdict|"
    r"notez|puntuaci[oó]n|calificaci[oó]n|bewertung|bewerte\w*|punktzahl|pontua\w*|"
    r"оценк\w*|балл\w*|درجة|تقييم|अंक|रेटिंग|点数|评分|分数|評価|점수|평가"
)
_HIGH = r"maximum|maximale?|máxima|höchste\w*|максимальн\w*|最高|満点|만점|highest|perfect|full marks|top marks"
_SCORE_UNITS = r"/\s*5|out of 5|of 5\b|из 5|sur 5|de 5\b|von 5|分|점|अंक|点|stars?\b"
_IGNORE_VERBS = r"ignor\w*|disregard\w*|forget|忽略|无视|無視|무시|игнорир\w*|अनदेखा|تجاهل|negeer\w*|vergiss\w*|olvid\w*|oubli\w*"
_INSTRUCTION_NOUNS = (
    r"instruc\w*|anweisung\w*|vorgaben|指示|指令|지시|инструкц\w*|указани\w*|निर्देश\w*|تعليمات|"
    r"rules?|règles|reglas|regras|regeln|rubric|criteria|guidelines"
)
_PATTERNS: dict[str, re.Pattern[str]] = {
    # asks for, or asserts, a (high) score
    "score_request": re.compile(
        rf"(?:{_EVALUATION_WORDS})[^.\n]{{0,60}}?(?:\b[0-5]\b|{_HIGH})|(?:{_HIGH})[^.\n]{{0,20}}"
        rf"(?:{_EVALUATION_WORDS}|note|nota|marks?|points?|grade)|\b(?:note|nota|voto)\s+(?:{_HIGH})|\b(?:low|lower|high|higher|top|best)\s+"
        r"(?:score|rating|marks?|grade)\b",
        re.IGNORECASE,
    ),
    "score_literal": re.compile(
        rf"(?:score|rating)\s*[:=]\s*[0-5]\b|\b[0-5]\s*(?:{_SCORE_UNITS})|\ba [0-5]\s*(?:[.!](?!\d)|$)|\b(?:nota|note|voto|punkte?)\s+(?:de\s+)?[0-5]\b|"
        r"\b(?:anything|nothing|everything)\s+(?:below|under|less than|short of)\s+(?:a\s+)?[0-5]\b",
        re.IGNORECASE,
    ),
    # speaks to whoever evaluates the text
    "addresses_evaluator": re.compile(
        r"\b(?:dear |attention,? |note to (?:the )?)?(?:judge|evaluator|grader|assessor)\s*[:,]|"
        r"\b(?:as|i am) (?:the|your) (?:judge|evaluator|grader|evaluation lead|system)\b|"
        r"\b(?:when|if) (?:you are |you're )?(?:comparing|evaluating|scoring|rating|judging|ranking)\b|"
        r"\b(?:you|your) (?:score|rating|evaluation|judg(?:e)?ment|verdict|assessment)\b|"
        r"\bplease\b[^.\n]{0,40}\b(?:give|rate|score|choose|prefer|pick|select|assign|award|mark)\b",
        re.IGNORECASE,
    ),
    "instruction_override": re.compile(
        rf"(?:{_IGNORE_VERBS})[^.\n]{{0,40}}?(?:{_INSTRUCTION_NOUNS})|new instructions?\b|"
        r"override (?:the|all|any|previous) (?:instructions?|rules?|rubric|criteria)|"
        r"you must (?:answer|reply|output|respond|prefer|choose|pick|select|assign|give)|"
        r"(?:respond|reply|answer|output)\s+(?:only\s+)?with\s*[:\"']|(?:respond|reply|answer|output)\s+only\b",
        re.IGNORECASE,
    ),
    "role_tag": re.compile(
        r"(?:^|\n)\s*(?:#+\s*)?(?:system|assistant|user|judge|evaluator|instruction|verdict)(?:'s verdict)?\s*[:>]|"
        r"\[(?:system|admin|override|instruction|evaluator|judge|moderator)[^\]]{0,30}\]",
        re.IGNORECASE,
    ),
    # imitates or echoes the grading criteria
    "fake_rubric": re.compile(
        r"\brubric\b|\b(?:scoring|grading|evaluation) (?:guide|rules?|update|policy|mode|criteria)\b|"
        r"\b(?:every|all|each) criteri(?:on|a)\b[^.\n]{0,30}\b(?:met|satisf\w*|fulfil\w*)|"
        r"\bcollective agency\b|\b(?:meets|satisfies|fulfils|fulfills) (?:every|all|each) (?:criterion|criteria|requirement)|"
        r"knowledge\W+benevolence|benevolence\W+power|power\W+(?:and\s+)?vitality",
        re.IGNORECASE,
    ),
    "pairwise_request": re.compile(
        r"\b(?:resolution|answer|response|option|candidate|agreement|settlement)\s+(?-i:[AB])\b[^.\n]{0,40}"
        r"\b(?:better|best|superior|wins?|prefer\w*)|\b(?:answer|choose|pick|select|output)\s+[\"']?(?-i:[AB])\b|"
        r"whichever position|regardless of (?:its )?(?:position|order)|\b(?:prefer|choose|pick|select) the one\b|"
        r"\bthe other (?:resolution|response|candidate|answer|agreement|text)\b|\bthan any (?:other|alternative)",
        re.IGNORECASE,
    ),
    # praises itself in the evaluator's terms
    "self_promotion": re.compile(
        r"\bthis (?:resolution|response|answer|plan|proposal|agreement|text|item)\b[^.\n]{0,30}"
        r"\b(?:deserves|merits|earns|warrants|should (?:get|receive|be (?:rated|scored|chosen|preferred)))|"
        r"\b(?:rated|certified|judged|confirmed|verified|acknowledged)\b[^.\n]{0,30}\b(?:exemplary|flawless|"
        r"perfect|outstanding|the best|optimal)\b|\bthis (?:resolution|response|answer|plan|one) is the best (?:achievable|possible)\b|"
        r"\b(?:choose|pick|select|prefer) this (?:one|resolution|response|answer|text)\b",
        re.IGNORECASE,
    ),
    "closing_marker": re.compile(
        r"<<<|>>>|</?resolution>|\"\"\"|```|---\s*end|\[/?inst\]|<\|[a-z_]+\|>|###\s*(?:instruction|response)|"
        r"\(im_(?:start|end)\)|</?(?:system|user|assistant|data|text|input)>",
        re.IGNORECASE,
    ),
}
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_SPACED_RUN = re.compile(r"(?:\b\S ){4,}\S\b")
_LEET_I = str.maketrans("013457@$", "oieastas")
_LEET_L = str.maketrans("013457@$", "oleastas")


def _decoded_variants(text: str) -> list[tuple[str, str]]:
    """Hidden forms of the text worth scanning: base64, rot13, reversed, spaced-out, leetspeak."""
    variants = [("rot13", codecs.decode(text, "rot13")), ("reversed", text[::-1])]
    for match in _BASE64.finditer(text):
        try:
            decoded = base64.b64decode(match.group(0), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded.isprintable():
            variants.append(("base64", decoded))
    if _SPACED_RUN.search(
        text
    ):  # "S c o r e :  5": single spaces join letters, doubles split words
        variants.append(("spaced", re.sub(r"(?<=\S) (?=\S)", "", text)))
    lowered = text.lower()
    variants += [
        ("leetspeak", lowered.translate(_LEET_I)),
        ("leetspeak", lowered.translate(_LEET_L)),
    ]
    return variants


def _foreign_sentence(text: str) -> bool:
    """A mostly Latin-script text with a sentence in another script: a language switch."""
    letters = [c for c in text if c.isalpha()]
    if not letters or sum(c.isascii() for c in letters) / len(letters) < 0.5:
        return False
    for sentence in re.split(r"(?<=[.!?。！？])\s+|\n", text):
        chars = [c for c in sentence if c.isalpha()]
        if (
            len(chars) >= 4
            and sum(not c.isascii() and not _is_latin(c) for c in chars) / len(chars) > 0.5
        ):
            return True
    return False


def _is_latin(char: str) -> bool:
    return unicodedata.name(char, "").startswith("LATIN")


def _mixed_scripts(text: str) -> bool:
    """A word mixing Latin with Cyrillic or Greek letters: the homoglyph trick."""
    for word in re.findall(r"\w{3,}", text):
        scripts = set()
        for char in word:
            if char.isalpha():
                name = unicodedata.name(char, "")
                scripts.add(name.split(" ")[0])
        if "LATIN" in scripts and scripts & {"CYRILLIC", "GREEK"}:
            return True
    return False


def detect_injection(text: str) -> list[str]:
    """Names of the injection signals found in ``text`` (empty when none)."""
    found = []
    if _ZERO_WIDTH.search(text):
        found.append("invisible_characters")
    if _mixed_scripts(text):
        found.append("homoglyphs")
    plain = _ZERO_WIDTH.sub("", unicodedata.normalize("NFKC", text))
    for name, pattern in _PATTERNS.items():
        if pattern.search(plain):
            found.append(name)
    if _foreign_sentence(plain):
        found.append("language_switch")
    for encoding, variant in _decoded_variants(plain):
        if any(_PATTERNS[n].search(variant) for n in _ENCODED_SIGNALS):
            found.append(f"encoded:{encoding}")
    return sorted(set(found))


_ENCODED_SIGNALS = ("score_request", "score_literal", "instruction_override", "fake_rubric")
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)")


def strip_injection(text: str) -> tuple[str, list[str]]:
    """``text`` without the sentences that carry injection signals, and the signals found.

    Sentences are cut on ``.``, ``!``, ``?`` and line breaks; a sentence goes if it holds a
    signal by itself (so the surrounding plan survives). Encoded or homoglyph tricks are
    removed with their sentence as well.
    """
    signals = detect_injection(text)
    if not signals:
        return text, []
    kept = []
    for match in _SENTENCE.finditer(text):
        sentence = match.group(0)
        if not sentence.strip():
            kept.append(sentence)
            continue
        if detect_injection(sentence):
            continue
        kept.append(sentence)
    return re.sub(r"[ \t]+\n", "\n", "".join(kept)).strip(), signals


def render_template(template: str, **fields: Any) -> str:
    """``template`` with fields filled; blank lines left by empty fields are collapsed."""
    text = template.format(**fields)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
