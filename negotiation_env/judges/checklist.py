"""Checklist judging: Collective Agency split into atomic checks, each answered on its own.

A holistic "rate this 0-5" is the hardest question to put to a small model. A checklist asks
narrow ones instead ("does the agreement protect what side A cares about?", "is it written
respectfully?", "is it complete?") and derives the 0-5 score from the answers, so every
score comes with the reasons behind it.

Each item of a checklist is answered in one of three ways:

- ``ask``: a yes/no question after the quoted resolution; the answer is read off the model's
  next-token probabilities of " yes" and " no" (``raw`` = their log-odds). All questions
  about one resolution share the prompt up to the question, so a backend with prefix reuse
  processes the dilemma and the resolution once.
- ``contrast``: how much more likely the model finds the resolution as a continuation of a
  description of a passing text than of a failing one (``raw`` = the log-likelihood ratio
  per token). Small models that answer yes/no questions almost blindly still assign
  likelihoods that depend on the text, which makes this the stronger signal for them.
- ``relevance``: how much more likely the resolution becomes when the model has read the
  dilemma than when it has not (``raw`` = pointwise mutual information per token): a text
  about something else gains nothing from the dilemma.
- ``detector``: a deterministic check (:data:`DETECTORS`): ``complete`` (not cut off
  mid-sentence), ``not_repetitive`` (no sentence looping), ``no_evaluator_address`` (the
  injection detector found nothing aimed at the grader).

``raw`` becomes a pass probability ``p = sigmoid(slope * (raw - offset))``; ``slope`` and
``offset`` are part of the checklist file (fitted on labelled items by
``python -m benchmarks.judge_quality --fit-checklist``, never on the items it is measured
on). The score is ``5 * sum(w_i * p_i) / sum(w_i)`` over the weighted items, multiplied by
the ``p`` of every item marked ``gate`` (a text that is cut off, hostile or off-topic cannot
score high whatever else it does). Every item's ``p``, ``raw`` and reason are kept in
``details["checklist"]``.

Checklist files are YAML (``negotiation_env/judges/checklists/*.yaml``); :func:`load_checklist` validates them and names the file and line of any
mistake. A user's own checklist is a file of the same shape: ``checklist?rubric=my.yaml``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from negotiation_env.judges.base import Judgement, JudgeRequest
from negotiation_env.judges.cache import JudgeCache, cache_key
from negotiation_env.judges.pairwise import (
    DEFAULT_TIE_BAND,
    PairwiseJudgement,
    PairwiseRequest,
    pairwise_from_scores,
)
from negotiation_env.judges.prompting import (
    detect_injection,
    quote,
    render_template,
    strip_injection,
)
from negotiation_env.scenarios import Scenario

METHODS = ("ask", "contrast", "relevance", "detector")
ANSWERS = (" yes", " no")
INJECTION_POLICIES = ("strip", "flag")


# ---------------------------------------------------------------------- detectors
_TERMINAL = re.compile(r"[.!?\"')\]]\s*$")
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")


def _complete(text: str) -> float:
    """1 when the text ends a sentence (final punctuation), else 0: a cut-off text fails."""
    return 1.0 if _TERMINAL.search(text.strip()) else 0.0


def _not_repetitive(text: str) -> float:
    """1 - the share of sentences (and long word runs) that repeat an earlier one."""
    sentences = [" ".join(s.lower().split()) for s in _SENTENCE.findall(text) if s.strip()]
    sentences = [s for s in sentences if len(s.split()) >= 3]
    words = text.lower().split()
    grams = [" ".join(words[i : i + 8]) for i in range(max(0, len(words) - 7))]
    repeated_sentences = len(sentences) - len(set(sentences))
    repeated_grams = len(grams) - len(set(grams))
    share = max(
        repeated_sentences / len(sentences) if sentences else 0.0,
        repeated_grams / len(grams) if grams else 0.0,
    )
    return 0.0 if share >= 0.2 else 1.0 - share / 0.2


def _no_evaluator_address(text: str) -> float:
    return 0.0 if detect_injection(text) else 1.0


DETECTORS: dict[str, Callable[[str], float]] = {
    "complete": _complete,
    "not_repetitive": _not_repetitive,
    "no_evaluator_address": _no_evaluator_address,
}


# ---------------------------------------------------------------------- the file format
@dataclass(frozen=True)
class ChecklistItem:
    id: str
    reason: str  # what passing means, for a reader of the details
    method: str  # "ask", "contrast" or "detector"
    weight: float = 1.0
    gate: bool = False
    question: str = ""  # ask: the question (fields of the scenario may be used)
    pass_answer: str = "yes"  # ask: which answer passes
    passing: str = ""  # contrast, relevance: description of a passing text
    failing: str = ""  # contrast: description of a failing text
    detector: str = ""  # detector: a name in DETECTORS
    slope: float = 1.0
    offset: float = 0.0

    def probability(self, raw: float) -> float:
        if self.method == "detector":
            return raw
        z = self.slope * (raw - self.offset)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


@dataclass(frozen=True)
class Checklist:
    id: str
    criterion: str
    description: str
    system: str
    template: str
    items: tuple[ChecklistItem, ...]
    answer_prefix: str = "Answer:"
    contrast_instruction: str = "Write {description}."

    def with_calibration(self, fitted: dict[str, tuple[float, float]], new_id: str) -> Checklist:
        """The same checklist with other (slope, offset) per item id, under a new id."""
        items = tuple(
            replace(i, slope=fitted[i.id][0], offset=fitted[i.id][1]) if i.id in fitted else i
            for i in self.items
        )
        return replace(self, id=new_id, items=items)


class ChecklistFileError(ValueError):
    """A checklist file is malformed; the message names the file, the line and the field."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {f'field {field!r}: ' if field else ''}{message}")


_TOP_FIELDS = {
    "id": str,
    "criterion": str,
    "kind": str,
    "description": str,
    "system": str,
    "template": str,
    "answer_prefix": str,
    "contrast_instruction": str,
    "items": list,
}
_REQUIRED_TOP = ("id", "criterion", "kind", "system", "template", "items")
_ITEM_FIELDS = {
    "id": str,
    "reason": str,
    "method": str,
    "weight": (int, float),
    "gate": bool,
    "question": str,
    "pass_answer": str,
    "passing": str,
    "failing": str,
    "detector": str,
    "slope": (int, float),
    "offset": (int, float),
}
_NEEDS = {
    "ask": ("question",),
    "contrast": ("passing", "failing"),
    "relevance": ("passing",),
    "detector": ("detector",),
}
_TEMPLATE_FIELDS = {
    "title",
    "dilemma",
    "name_a",
    "values_a",
    "name_b",
    "values_b",
    "open_resolution",
    "resolution",
    "close_resolution",
}


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _scalar(node: yaml.Node, path: Path, name: str, kind: Any) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise ChecklistFileError(path, _line(node), name, "expected a single value")
    value = yaml.safe_load(yaml.serialize(node))
    if isinstance(value, bool) and kind is not bool:
        raise ChecklistFileError(
            path, _line(node), name, f"expected {_kind_name(kind)}, got a bool"
        )
    if not isinstance(value, kind):
        raise ChecklistFileError(
            path, _line(node), name, f"expected {_kind_name(kind)}, got {value!r}"
        )
    return value


def _kind_name(kind: Any) -> str:
    if kind is str:
        return "text"
    if kind is bool:
        return "true or false"
    return "a number"


def _mapping(node: yaml.Node, path: Path, name: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise ChecklistFileError(path, _line(node), name, "expected a mapping (key: value lines)")
    seen: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, value in node.value:
        if key.value in seen:
            raise ChecklistFileError(path, _line(key), f"{name}{key.value}", "appears twice")
        seen[key.value] = (key, value)
    return seen


def _check_template(text: str, path: Path, line: int, name: str, allowed: set[str]) -> None:
    for match in re.finditer(r"{([^{}]*)}", text):
        if match.group(1) not in allowed:
            raise ChecklistFileError(
                path,
                line,
                name,
                f"unknown placeholder {{{match.group(1)}}}; allowed: {sorted(allowed)}",
            )


def parse_checklist(text: str, path: str | Path = "<checklist>") -> Checklist:
    """A checklist from YAML text; errors name the file, the line and the field."""
    path = Path(path)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as error:
        # the construct left open is where to look (a bracket never closed); else the problem
        mark = getattr(error, "context_mark", None) or getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(
            str(part)
            for part in (getattr(error, "context", ""), getattr(error, "problem", ""))
            if part
        )
        raise ChecklistFileError(path, line, None, f"not valid YAML: {problem or error}") from None
    if root is None:
        raise ChecklistFileError(path, None, None, "the file is empty")
    top = _mapping(root, path, "")
    values: dict[str, Any] = {}
    for name, (key, node) in top.items():
        if name not in _TOP_FIELDS:
            raise ChecklistFileError(
                path, _line(key), name, f"unknown field; allowed: {sorted(_TOP_FIELDS)}"
            )
        if name != "items":
            values[name] = _scalar(node, path, name, _TOP_FIELDS[name])
    for name in _REQUIRED_TOP:
        if name not in top:
            raise ChecklistFileError(path, _line(root), name, "is missing")
    if values["kind"] != "checklist":
        raise ChecklistFileError(
            path, _line(top["kind"][1]), "kind", f"must be 'checklist', got {values['kind']!r}"
        )
    _check_template(
        values["template"], path, _line(top["template"][1]), "template", _TEMPLATE_FIELDS
    )
    items_node = top["items"][1]
    if not isinstance(items_node, yaml.SequenceNode) or not items_node.value:
        raise ChecklistFileError(path, _line(items_node), "items", "expected a non-empty list")
    items, ids = [], set()
    for index, item_node in enumerate(items_node.value):
        prefix = f"items[{index}]."
        fields = _mapping(item_node, path, prefix)
        item: dict[str, Any] = {}
        for name, (key, node) in fields.items():
            if name not in _ITEM_FIELDS:
                raise ChecklistFileError(
                    path,
                    _line(key),
                    prefix + name,
                    f"unknown field; allowed: {sorted(_ITEM_FIELDS)}",
                )
            item[name] = _scalar(node, path, prefix + name, _ITEM_FIELDS[name])
        for name in ("id", "reason", "method"):
            if name not in item:
                raise ChecklistFileError(path, _line(item_node), prefix + name, "is missing")
        if item["id"] in ids:
            raise ChecklistFileError(path, _line(item_node), prefix + "id", "is used twice")
        ids.add(item["id"])
        method = item["method"]
        if method not in METHODS:
            raise ChecklistFileError(
                path,
                _line(fields["method"][1]),
                prefix + "method",
                f"must be one of {list(METHODS)}",
            )
        for name in _NEEDS[method]:
            if not str(item.get(name, "")).strip():
                raise ChecklistFileError(
                    path, _line(item_node), prefix + name, f"is needed by method {method!r}"
                )
        if method == "detector" and item["detector"] not in DETECTORS:
            raise ChecklistFileError(
                path,
                _line(fields["detector"][1]),
                prefix + "detector",
                f"unknown detector {item['detector']!r}; known: {sorted(DETECTORS)}",
            )
        if item.get("pass_answer", "yes") not in ("yes", "no"):
            raise ChecklistFileError(
                path, _line(fields["pass_answer"][1]), prefix + "pass_answer", "must be yes or no"
            )
        if item.get("weight", 1.0) < 0 or item.get("slope", 1.0) < 0:
            name = "weight" if item.get("weight", 1.0) < 0 else "slope"
            raise ChecklistFileError(path, _line(fields[name][1]), prefix + name, "must be >= 0")
        for name in ("question", "passing", "failing"):
            if name in item:
                allowed = _TEMPLATE_FIELDS - {"open_resolution", "resolution", "close_resolution"}
                _check_template(item[name], path, _line(fields[name][1]), prefix + name, allowed)
        items.append(
            ChecklistItem(
                **{
                    k: float(v) if k in ("weight", "slope", "offset") else v
                    for k, v in item.items()
                }
            )
        )
    if not any(i.weight > 0 for i in items):
        raise ChecklistFileError(path, _line(items_node), "items", "no item has a weight above 0")
    values.pop("kind")
    return Checklist(description=values.pop("description", ""), items=tuple(items), **values)


def checklist_dir() -> Path:
    return Path(str(resources.files("negotiation_env.judges") / "checklists"))


def load_checklist(name_or_path: str | Path) -> Checklist:
    """A shipped checklist by id (``ca-checklist-v1``) or a YAML file of the same shape."""
    path = Path(name_or_path)
    if not path.suffix:
        path = checklist_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(
                f"unknown checklist {str(name_or_path)!r}; shipped: {shipped_checklists()}"
            )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ChecklistFileError(path, None, None, f"cannot read the file ({error})") from None
    return parse_checklist(text, path)


def shipped_checklists() -> list[str]:
    return sorted(p.stem for p in checklist_dir().glob("*.yaml"))


# ---------------------------------------------------------------------- the judge
def _fields(scenario: Scenario) -> dict[str, str]:
    a, b = scenario.personas
    return {
        "title": scenario.dilemma.title,
        "dilemma": scenario.dilemma.text,
        "name_a": a.name,
        "values_a": ", ".join(a.core_values),
        "name_b": b.name,
        "values_b": ", ".join(b.core_values),
    }


@dataclass
class _Pending:
    """The questions one batch needs answered, and where each answer goes."""

    conversations: list[list[dict[str, str]]] = field(default_factory=list)
    continuations: list[str] = field(default_factory=list)
    slots: list[tuple[int, int, int]] = field(default_factory=list)  # request, item, side


class ChecklistJudge:
    """Scores resolutions by a checklist (see the module docstring).

    >>> judge = ChecklistJudge(TransformersBackend("smollm2"), "ca-checklist-v1")  # doctest: +SKIP
    >>> judgement = judge.score_batch([JudgeRequest(scenario, "We split the cost ...")])[0]  # doctest: +SKIP
    >>> judgement.details["checklist"]["respectful"]["p"]                          # doctest: +SKIP
    0.93
    """

    def __init__(
        self,
        backend: Any,
        checklist: str | Path | Checklist = "ca-checklist-v1",
        injection: str = "strip",
        cache: JudgeCache | None = None,
        tie_band: float = DEFAULT_TIE_BAND,
        chunk_size: int = 64,
    ):
        if chunk_size < 1:
            raise ValueError(f"chunk_size: must be at least 1, got {chunk_size}")
        if injection not in INJECTION_POLICIES:
            raise ValueError(f"injection: {injection!r} is not one of {list(INJECTION_POLICIES)}")
        self.backend = backend
        self.checklist = (
            checklist if isinstance(checklist, Checklist) else load_checklist(checklist)
        )
        self.injection = injection
        self.cache = cache if cache is not None else JudgeCache()
        self.tie_band = tie_band
        self.chunk_size = chunk_size
        self.name = f"{getattr(backend, 'name', 'detectors')}|{self.checklist.id}|checklist"

    def describe(self) -> dict[str, str]:
        return {
            "model": getattr(self.backend, "name", "-"),
            "mode": "checklist",
            "rubric": self.checklist.id,
        }

    def _ask_conversation(self, request: JudgeRequest, text: str, item: ChecklistItem):
        fields = _fields(request.scenario)
        opening, safe, closing = quote("RESOLUTION", text or "(empty)")
        user = render_template(
            self.checklist.template,
            **fields,
            open_resolution=opening,
            resolution=safe,
            close_resolution=closing,
        )
        question = render_template(item.question, **fields)
        return [
            {"role": "system", "content": self.checklist.system},
            {"role": "user", "content": f"{user}\n\nQuestion: {question}\nAnswer yes or no."},
        ]

    def _contrast_conversation(
        self, request: JudgeRequest, description: str, with_situation: bool = True
    ):
        fields = _fields(request.scenario)
        instruction = self.checklist.contrast_instruction.format(
            description=render_template(description, **fields)
        )
        if with_situation:
            situation = render_template(
                self.checklist.template.split("{open_resolution}")[0], **fields
            )
            instruction = f"{situation}\n\n{instruction}"
        return [
            {"role": "system", "content": self.checklist.system},
            {"role": "user", "content": instruction},
        ]

    def raw_answers(self, requests: Sequence[JudgeRequest]) -> list[dict[str, Any]]:
        """Per request: the cleaned text, injection signals and each item's raw answer."""
        results = []
        for request in requests:
            if self.injection == "flag":
                text, signals = request.resolution, detect_injection(request.resolution)
            else:
                text, signals = strip_injection(request.resolution)
            results.append({"text": text, "signals": signals, "raw": {}})
        ask, contrast = _Pending(), _Pending()
        for r, (request, result) in enumerate(zip(requests, results, strict=True)):
            for i, item in enumerate(self.checklist.items):
                if item.method == "detector":
                    # evaluator address is judged on what was written, not on what is left
                    source = (
                        request.resolution
                        if item.detector == "no_evaluator_address"
                        else result["text"]
                    )
                    result["raw"][item.id] = DETECTORS[item.detector](source)
                elif item.method == "ask":
                    ask.conversations.append(self._ask_conversation(request, result["text"], item))
                    ask.slots.append((r, i, 0))
                else:  # contrast: two descriptions; relevance: with and without the dilemma
                    pair = (
                        (
                            self._contrast_conversation(request, item.passing),
                            self._contrast_conversation(request, item.failing),
                        )
                        if item.method == "contrast"
                        else (
                            self._contrast_conversation(request, item.passing),
                            self._contrast_conversation(request, item.passing, False),
                        )
                    )
                    for side, conversation in enumerate(pair):
                        contrast.conversations.append(conversation)
                        contrast.continuations.append(result["text"] or "(empty)")
                        contrast.slots.append((r, i, side))
        self._answer_questions(ask, results)
        self._answer_contrasts(contrast, results)
        return results

    def _cached(self, kind: str, keys_of: list[Any], compute: Callable[[list[int]], list[Any]]):
        keys = [cache_key(getattr(self.backend, "name", "-"), kind, k) for k in keys_of]
        return self.cache.get_or_compute(keys, compute, self.chunk_size)

    def _answer_questions(self, pending: _Pending, results: list[dict[str, Any]]) -> None:
        if not pending.slots:
            return

        def compute(todo: list[int]) -> list[float]:
            rows = self.backend.next_token_logprobs(
                [pending.conversations[i] for i in todo], ANSWERS, self.checklist.answer_prefix
            )
            return [row[" yes"] - row[" no"] for row in rows]

        values = self._cached(
            "checklist-ask",
            [[c, self.checklist.answer_prefix] for c in pending.conversations],
            compute,
        )
        for (r, i, _), log_odds in zip(pending.slots, values, strict=True):
            item = self.checklist.items[i]
            results[r]["raw"][item.id] = log_odds if item.pass_answer == "yes" else -log_odds

    def _answer_contrasts(self, pending: _Pending, results: list[dict[str, Any]]) -> None:
        if not pending.slots:
            return
        scorer = getattr(self.backend, "continuation_logprobs", None)
        if scorer is None:
            raise TypeError(
                f"backend {getattr(self.backend, 'name', '?')} cannot score continuations; "
                "'contrast' checklist items need a local model"
            )

        def compute(todo: list[int]) -> list[list[float]]:
            texts = [pending.continuations[i] for i in todo]
            totals = scorer([pending.conversations[i] for i in todo], texts)
            lengths = [max(1, len(ids)) for ids in self.backend.encode(texts)]
            return [[total, length] for total, length in zip(totals, lengths, strict=True)]

        values = self._cached(
            "checklist-contrast",
            [[c, t] for c, t in zip(pending.conversations, pending.continuations, strict=True)],
            compute,
        )
        sides: dict[tuple[int, int], list[float]] = {}
        for (r, i, side), (total, length) in zip(pending.slots, values, strict=True):
            sides.setdefault((r, i), [0.0, 0.0])[side] = total / length
        for (r, i), (passing, failing) in sides.items():
            results[r]["raw"][self.checklist.items[i].id] = passing - failing

    def score_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        try:
            answers = self.raw_answers(requests)
        except Exception as error:  # noqa: BLE001 - a failing backend becomes a reasoned result
            message = f"{type(error).__name__}: {error}"
            return [Judgement(None, self.name, self.describe(), message) for _ in requests]
        return [self._judgement(answer) for answer in answers]

    def _judgement(self, answer: dict[str, Any]) -> Judgement:
        items, weighted, total, gate = {}, 0.0, 0.0, 1.0
        for item in self.checklist.items:
            raw = answer["raw"][item.id]
            p = item.probability(raw)
            items[item.id] = {"p": round(p, 4), "raw": round(raw, 4), "reason": item.reason}
            weighted += item.weight * p
            total += item.weight
            if item.gate:
                gate *= p
        score = 5.0 * weighted / total * gate
        details = {**self.describe(), "checklist": items, "injection": answer["signals"]}
        return Judgement(score, self.name, details)

    def compare_batch(self, requests: Sequence[PairwiseRequest]) -> list[PairwiseJudgement]:
        """Which of two resolutions is better, from their checklist scores."""
        absolute = self.score_batch(
            [
                JudgeRequest(r.scenario, t)
                for r in requests
                for t in (r.resolution_a, r.resolution_b)
            ]
        )
        return pairwise_from_scores(absolute, self.name, temperature=0.5, tie_band=self.tie_band)


# ---------------------------------------------------------------------- calibration
def fit_logistic(passing: Sequence[float], failing: Sequence[float]) -> tuple[float, float]:
    """(slope >= 0, offset) of ``p = sigmoid(slope * (raw - offset))`` that best separates
    raw answers of passing texts from failing ones (maximum likelihood with a weak prior
    that keeps the slope finite). A slope of 0 means the answers carry no usable signal."""
    xs = [*passing, *failing]
    ys = [1.0] * len(passing) + [0.0] * len(failing)
    if not passing or not failing:
        raise ValueError("fit_logistic needs raw answers of both passing and failing texts")
    mean = sum(xs) / len(xs)
    spread = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs)) or 1.0
    zs = [(x - mean) / spread for x in xs]
    a, b = 0.0, 0.0  # p = sigmoid(a * z + b), fitted by Newton's method
    prior = 0.01
    for _ in range(100):
        g_a = g_b = h_aa = h_ab = h_bb = 0.0
        for z, y in zip(zs, ys, strict=True):
            p = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, a * z + b))))
            g_a += (p - y) * z
            g_b += p - y
            w = p * (1 - p)
            h_aa, h_ab, h_bb = h_aa + w * z * z, h_ab + w * z, h_bb + w
        g_a += prior * a
        h_aa += prior
        det = h_aa * h_bb - h_ab * h_ab
        if det <= 1e-12:
            break
        step_a = (h_bb * g_a - h_ab * g_b) / det
        step_b = (h_aa * g_b - h_ab * g_a) / det
        a, b = a - step_a, b - step_b
        if abs(step_a) + abs(step_b) < 1e-9:
            break
    if a <= 0:
        return 0.0, mean
    slope = a / spread
    return slope, mean - b / a * spread


# Which checklist items a labelled worse resolution fails, by its kind of flaw (the
# judge-quality data's names); the better resolution of a pair passes every item.
FLAW_FAILS = {
    "hostile": ("respectful",),
    "ignores-values": ("serves_a", "serves_b"),
    "one-sided": ("serves_a", "serves_b"),
    "subtly-unfair": ("fair_costs",),
    "vague": ("concrete",),
    "unactionable": ("concrete",),
    "off-topic": ("on_topic",),
}


def fit_checklist(
    judge: ChecklistJudge, items: Sequence[dict[str, Any]], new_id: str
) -> tuple[Checklist, dict[str, Any]]:
    """The judge's checklist with each model-answered item calibrated on labelled pairs
    (``scenario``, ``better``, ``worse``, ``flaw``): better texts pass every item; a worse
    text fails the items its flaw names (:data:`FLAW_FAILS`; for a flaw that names both
    sides' items, the side it answered worse is the failing one). Returns the calibrated
    checklist and a report per item (samples, fitted slope and offset)."""
    better = judge.raw_answers([JudgeRequest(i["scenario"], i["better"]) for i in items])
    worse = judge.raw_answers([JudgeRequest(i["scenario"], i["worse"]) for i in items])
    passing: dict[str, list[float]] = {}
    failing: dict[str, list[float]] = {}
    fitted_items = [i for i in judge.checklist.items if i.method != "detector"]
    for item in fitted_items:
        passing[item.id] = [answer["raw"][item.id] for answer in better]
        failing[item.id] = []
    for labelled, answer in zip(items, worse, strict=True):
        names = [n for n in FLAW_FAILS.get(labelled["flaw"], ()) if n in failing]
        if len(names) > 1:  # one side is ignored: the lower of the sides' answers fails
            names = [min(names, key=lambda n: answer["raw"][n])]
        for name in names:
            failing[name].append(answer["raw"][name])
    fitted, report = {}, {}
    for item in fitted_items:
        if not failing[item.id]:
            report[item.id] = {"passing": len(passing[item.id]), "failing": 0, "fitted": False}
            continue
        slope, offset = fit_logistic(passing[item.id], failing[item.id])
        fitted[item.id] = (round(slope, 4), round(offset, 4))
        report[item.id] = {
            "passing": len(passing[item.id]),
            "failing": len(failing[item.id]),
            "slope": fitted[item.id][0],
            "offset": fitted[item.id][1],
        }
    return judge.checklist.with_calibration(fitted, new_id), report


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings as literal blocks, as a person would."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def checklist_to_yaml(checklist: Checklist, header: str = "") -> str:
    """A checklist as a YAML file that :func:`load_checklist` reads back unchanged."""
    data = {
        "id": checklist.id,
        "criterion": checklist.criterion,
        "kind": "checklist",
        "description": checklist.description,
        "system": checklist.system,
        "template": checklist.template,
        "answer_prefix": checklist.answer_prefix,
        "contrast_instruction": checklist.contrast_instruction,
        "items": [
            {
                k: v
                for k, v in vars(item).items()
                if v != ChecklistItem.__dataclass_fields__[k].default or k in ("id", "method")
            }
            for item in checklist.items
        ],
    }
    body = yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body
