"""Building judges and agreement detectors from short specs (``--judge`` on the command
line, ``reward.judge`` in configs): see :func:`load_judge`. The backends behind LLM-based
judges are :mod:`llm.specs` specs."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from llm.specs import SpecError, load_backend, split_spec
from negotiation_env.judges.base import Judgement, JudgeRequest, as_judge
from negotiation_env.judges.cache import JudgeCache
from negotiation_env.judges.prompting import DEFAULT_RUBRICS


def with_option(spec: str, key: str, value: Any) -> str:
    """``spec`` with one more ``key=value`` option (the rule judge takes no options; every
    member of an ensemble gets it)."""
    if spec in ("rule", "keyword", "marker"):
        return spec
    if spec.startswith("ensemble:"):
        members = spec[len("ensemble:") :].split("+")
        return "ensemble:" + "+".join(with_option(m, key, value) for m in members)
    return f"{spec}{'&' if '?' in spec else '?'}{key}={value}"


# The judges used when a command says ``--judge default``: chosen by measurement with
# ``python -m benchmarks.judge_quality`` on hand-written labelled items that none of them
# was built or tuned on (docs/judges.md has the numbers and the reasons).
# CA scoring, reward and evaluation: the shipped reward model ca-rm-v2 (``rm``): 0.88
# absolute on the 156 judge-quality items (0.94 on the length-controlled ones), 0.85
# pairwise with position consistency 1.00, and 0.72 on 72 pairs by other authors, where
# ca-rm-v1 had 0.86 / 0.65 (the choice followed a rule written before v2 was trained;
# docs/judges.md, "More writers"). The holistic grades of the local LLMs were at chance on
# the length-controlled items and answered pairwise questions by position; the reward model
# is also the fastest (about 0.5 s per resolution on 2 idle CPU cores), and text aimed at
# the grader lowers its score. On a balanced 54-item subset the checklist got 0.65 and the
# checklist+rm ensemble no more than rm (ca-rm-v1) alone (0.96), so neither replaces it as
# the evaluation judge. One model as both reward and evaluation judge cannot show reward
# hacking: the learning benchmark (benchmarks/learning.py) therefore reports a second judge
# beside it.
# Agreement: Qwen2.5-Coder-0.5B's P(agree) separates the labels (AUC 0.80 with
# agreement-v2) but sits below 0.5, so its threshold is the one fitted on the labelled set
# (0.32; 0.75 accuracy when fitted and tested on different halves).
# The rubric is the criterion's default wording unless the spec names one.
DEFAULT_JUDGES = {
    "reward": "rm",
    "evaluation": "rm",
    "agreement": "qwen2.5-coder-0.5b?dtype=bfloat16&mode=expected&threshold=0.32",
}
_JUDGE_OPTIONS = (
    "rubric",
    "mode",
    "injection",
    "injection_penalty",
    "include_transcript",
    "max_retries",
    "tie_band",
)
_judge_caches: dict[str, Any] = {}


def resolved_spec(spec: str, role: str) -> str:
    """``spec`` with ``default`` replaced by the default judge of ``role`` (its options kept
    after the default's own)."""
    base, options = split_spec(spec)
    if base != "default":
        return spec
    resolved = DEFAULT_JUDGES[role]
    for key, value in options.items():
        resolved = with_option(resolved, key, value)
    return resolved


def _judge_parts(spec: str, role: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(backend spec, judge options, backend options) of a judge spec."""
    base, options = split_spec(spec)
    if base == "default":  # the measured default, with any options given added to its own
        base, default_options = split_spec(DEFAULT_JUDGES[role])
        options = {**default_options, **options}
    judge_options = {k: options.pop(k) for k in _JUDGE_OPTIONS if k in options}
    cache_path = options.pop("judge_cache", None)
    if cache_path is not None:
        judge_options["cache"] = _judge_cache(str(cache_path))
    return base, judge_options, options


def _judge_cache(path: str) -> Any:
    """The one cache of ``path`` in this process (its SQLite connection is opened once)."""
    if path not in _judge_caches:
        _judge_caches[path] = JudgeCache(path)
    return _judge_caches[path]


ENSEMBLE_PREFIX = "ensemble:"
# The model behind ``checklist`` when the spec names none, and each criterion's checklist.
DEFAULT_CHECKLIST_MODEL = "smollm2"
DEFAULT_CHECKLISTS = {"ca": "ca-checklist-v1", "conflict": "ca-checklist-v1"}
_reward_backends: dict[tuple, Any] = {}


def _checklist_judge(options: dict[str, Any], criterion: str) -> Any:
    from negotiation_env.judges.checklist import ChecklistJudge

    checklist = options.pop("rubric", DEFAULT_CHECKLISTS[criterion])
    judge_options = {k: options.pop(k) for k in ("injection", "cache", "tie_band") if k in options}
    backend = load_backend(str(options.pop("model", DEFAULT_CHECKLIST_MODEL)), **options)
    return ChecklistJudge(backend, checklist, **judge_options)


def _reward_model_judge(options: dict[str, Any]) -> Any:
    from negotiation_env.judges.reward_model import RewardModelJudge

    judge_options = {
        k: options.pop(k)
        for k in ("injection", "injection_penalty", "cache", "off_topic_penalty", "tie_band")
        if k in options
    }
    gate_model = options.pop("relevance", None)
    threshold = options.pop("relevance_threshold", None)
    allowed = ("adapter", "device", "dtype", "max_batch_size", "cache_dir")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise SpecError(
            f"rm: unknown option(s) {unknown}; allowed: "
            f"{[*allowed, 'relevance', 'relevance_threshold', 'off_topic_penalty', 'tie_band']}"
        )
    if gate_model not in (None, "none"):
        from negotiation_env.judges.relevance import RelevanceGate

        judge_options["relevance"] = RelevanceGate.load(
            str(gate_model), threshold, cache=judge_options.get("cache")
        )
    elif threshold is not None or "off_topic_penalty" in judge_options:
        raise SpecError("rm: relevance_threshold and off_topic_penalty need relevance=MODEL")
    key = tuple(sorted(options.items()))
    if key not in _reward_backends:
        from llm.reward_backend import RewardModelBackend

        if "cache_dir" in options:
            options["cache"] = options.pop("cache_dir")
        _reward_backends[key] = RewardModelBackend(**options)
    return RewardModelJudge(_reward_backends[key], **judge_options)


def split_ensemble(spec: str) -> list[str] | None:
    """The member specs of ``ensemble:A+B``, or None for a spec that is not an ensemble."""
    if not spec.startswith(ENSEMBLE_PREFIX):
        return None
    members = [m for m in spec[len(ENSEMBLE_PREFIX) :].split("+")]
    if len(members) < 2 or not all(members):
        raise SpecError(
            f"{spec!r}: an ensemble names two or more judge specs joined by '+', "
            "e.g. ensemble:checklist+rm"
        )
    return members


def load_judge(spec: str, criterion: str = "ca", role: str = "evaluation") -> Any:
    """A judge from a spec:

    - ``default``: the measured default for ``role`` (reward or evaluation; ``DEFAULT_JUDGES``);
    - ``checklist``: checklist judging (``rubric`` a checklist id or YAML file, ``model`` the
      backend spec answering it, default SmolLM2);
    - ``rm``: the trained reward model shipped with the package (``adapter=DIR`` for another,
      ``adapter=ca-rm-v1`` for the earlier shipped one; ``relevance=smollm2`` adds the
      off-topic gate, with ``relevance_threshold`` and ``off_topic_penalty`` points);
    - ``ensemble:A+B``: the mean of several judges;
    - a registered model, ``hf:PATH`` or ``openai:MODEL@URL``: a holistic LLM judge with
      options ``rubric``, ``mode`` (auto, expected, parsed), ``include_transcript``;
    - ``rule``: the deterministic keyword test double (never behind a reported number).

    Every LLM-based judge takes ``injection`` (strip, penalize, flag), ``judge_cache=PATH``
    and its backend's options. ``criterion`` (``ca`` or ``conflict``) picks the rubric when
    the spec names none.
    """
    if spec in ("rule", "keyword"):
        from negotiation_env.judges import KeywordRubricJudge

        return KeywordRubricJudge()
    if criterion not in ("ca", "conflict"):
        raise SpecError(f"criterion: {criterion!r} is not one of ['ca', 'conflict']")
    base, options = split_spec(spec)
    if base == "default":  # the measured default, with any options given added to its own
        return load_judge(resolved_spec(spec, role), criterion, role)
    members = split_ensemble(spec)
    if members is not None:
        from negotiation_env.judges.ensemble import EnsembleJudge

        return EnsembleJudge([load_judge(m, criterion, role) for m in members])
    base, judge_options, backend_options = _judge_parts(spec, role)
    try:
        if base == "checklist":
            return _checklist_judge({**judge_options, **backend_options}, criterion)
        if base == "rm":
            return _reward_model_judge({**judge_options, **backend_options})
        judge_options.setdefault("rubric", DEFAULT_RUBRICS[criterion])
        from negotiation_env.judges.llm import LLMJudge

        return LLMJudge(load_backend(base, **backend_options), **judge_options)
    except (TypeError, ValueError) as error:
        raise SpecError(f"judge spec {spec!r}: {error}") from None


def load_agreement_detector(spec: str) -> Any:
    """An agreement detector: ``marker`` (the env's default), ``default``, or an LLM spec
    with options ``rubric``, ``threshold``, ``context_turns``, ``mode``."""
    if spec == "marker":
        from negotiation_env.judges import MarkerAgreementDetector

        return MarkerAgreementDetector()
    base, judge_options, backend_options = _judge_parts(spec, "agreement")
    extra = {
        k: backend_options.pop(k) for k in ("threshold", "context_turns") if k in backend_options
    }
    judge_options.setdefault("rubric", DEFAULT_RUBRICS["agreement"])
    allowed = {k: judge_options[k] for k in ("rubric", "mode", "cache") if k in judge_options}
    from negotiation_env.judges.llm import LLMAgreementDetector

    try:
        return LLMAgreementDetector(load_backend(base, **backend_options), **allowed, **extra)
    except (TypeError, ValueError) as error:
        raise SpecError(f"agreement detector spec {spec!r}: {error}") from None


NO_JUDGE = "none"
NO_JUDGE_REASON = (
    "no judge configured: the resolution was not scored. Pass judge='default' (the measured "
    "default CA judge, loaded on first use), any judge spec (see load_judge) or your own "
    "judge; 'keyword' names the keyword test double"
)


class NoJudge:
    """What an env without a judge uses: no score, with the reason in the judgement, so no
    reward can look real without a judge having been chosen. The env's reward is then its
    ``judge_failure_reward`` and ``info["judge_failed"]`` is True."""

    name = NO_JUDGE

    def score_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        warnings.warn(NO_JUDGE_REASON, stacklevel=3)
        return [
            Judgement(None, self.name, {"reason": NO_JUDGE_REASON}, error=NO_JUDGE_REASON)
            for _ in requests
        ]


class LazyJudge:
    """A judge spec loaded on its first use, so that building an env stays cheap; every
    attribute of the loaded judge (``compare_batch``, ``describe`` ...) is reachable."""

    def __init__(self, spec: str, criterion: str = "ca", role: str = "evaluation"):
        split_spec(spec)  # a malformed spec fails here, not at the end of the first episode
        self.spec, self.criterion, self.role = spec, criterion, role
        self._judge: Any = None

    @property
    def judge(self) -> Any:
        if self._judge is None:
            self._judge = load_judge(self.spec, self.criterion, self.role)
        return self._judge

    @property
    def name(self) -> str:
        return self.judge.name if self._judge is not None else self.spec

    def score_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        return self.judge.score_batch(requests)

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self.judge, attribute)


def judge_from(value: Any, criterion: str = "ca", role: str = "evaluation") -> Any:
    """The judge an env or trainer was given: None or ``"none"`` (no judge, no score),
    ``"keyword"`` (the test double, by name only), another spec string (loaded on first
    use), or a judge object or function."""
    if value is None or value == NO_JUDGE:
        return NoJudge()
    if isinstance(value, str):
        if value in ("rule", "keyword"):
            return load_judge(value)
        return LazyJudge(value, criterion, role)
    return as_judge(value)
