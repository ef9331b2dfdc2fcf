"""Building agents, LLM backends and text generators from short specs.

==================================  =====================================================
``smollm2`` (any registry name)     a local model from the registry (``negotiate models list``)
``hf:PATH_OR_HUB_ID``               a local model folder, or a hub id where you have internet
``openai:MODEL@URL``                an OpenAI-compatible server, e.g.
                                    ``openai:llama3@http://127.0.0.1:8000/v1``
``scripted:NAME``                   a scripted baseline (stubborn, conceding, random, mediator)
                                    or adversary (insulting, judge, echo, stalling)
``module:function``                 your own callable (a class is instantiated without
                                    arguments); ``path/to/file.py:function`` also works
==================================  =====================================================

Options follow a ``?``: ``smollm2?temperature=0.3&max_new_tokens=64``,
``hf:./out/model?adapter=./out/adapter&dtype=bfloat16``,
``openai:gpt-4o-mini@https://api.example/v1?api_key_env=MY_KEY&concurrency=4``,
``scripted:random?seed=3``. Backend options: ``adapter``, ``device``, ``dtype``,
``max_batch_size`` (hf and registry names); ``api_key_env``, ``timeout``, ``max_retries``,
``concurrency`` (openai). Sampling options (LLM agents): ``temperature``, ``top_p``,
``top_k``, ``max_new_tokens``, ``seed``, and ``summary_temperature``,
``summary_max_new_tokens`` for the resolution. A model named twice in one process is loaded
once: backends are shared.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from agents.adversarial import ADVERSARIAL_AGENTS
from agents.models import registered
from agents.scripted import SCRIPTED_AGENTS
from negotiation_env.judges.prompting import DEFAULT_RUBRICS


class AgentSpecError(ValueError):
    """A spec could not be turned into an agent or backend; the message says what would work."""


_BACKEND_OPTIONS = {
    "hf": ("adapter", "device", "dtype", "max_batch_size", "cache"),
    "openai": (
        "api_key_env",
        "timeout",
        "max_retries",
        "concurrency",
        "backoff",
        "send_candidates",
    ),
}
_SAMPLING_OPTIONS = ("temperature", "top_p", "top_k", "max_new_tokens", "seed")
_SUMMARY_OPTIONS = ("summary_temperature", "summary_max_new_tokens")
_backends: dict[tuple, Any] = {}


def _value(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def split_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"smollm2?temperature=0.3"`` -> ``("smollm2", {"temperature": 0.3})``."""
    base, _, query = spec.partition("?")
    options = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        options[key] = _value(value)
    return base, options


def with_option(spec: str, key: str, value: Any) -> str:
    """``spec`` with one more ``key=value`` option (the rule judge takes no options; every
    member of an ensemble gets it)."""
    if spec in ("rule", "keyword", "marker"):
        return spec
    if spec.startswith("ensemble:"):
        members = spec[len("ensemble:") :].split("+")
        return "ensemble:" + "+".join(with_option(m, key, value) for m in members)
    return f"{spec}{'&' if '?' in spec else '?'}{key}={value}"


def _kind(base: str) -> tuple[str, str]:
    """(kind, target) for an LLM spec base: kind is "hf" or "openai", or "" when not an LLM."""
    prefix, sep, rest = base.partition(":")
    if sep and prefix in ("hf", "openai"):
        return prefix, rest
    if registered(base) is not None:
        return "hf", base
    return "", base


def is_llm_spec(spec: str) -> bool:
    return _kind(split_spec(spec)[0])[0] != ""


def load_backend(spec: str, **options: Any) -> Any:
    """The (shared) LLM backend of a registry name, ``hf:...`` or ``openai:MODEL@URL`` spec."""
    base, spec_options = split_spec(spec)
    options = {**spec_options, **options}
    kind, target = _kind(base)
    if not kind:
        raise AgentSpecError(
            f"{spec!r} is not an LLM spec; use a registered model name, 'hf:PATH' or "
            "'openai:MODEL@URL'"
        )
    allowed = _BACKEND_OPTIONS[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise AgentSpecError(
            f"{spec!r}: unknown backend option(s) {unknown}; allowed: {list(allowed)}"
        )
    key = (kind, target, tuple(sorted(options.items())))
    if key not in _backends:
        if kind == "hf":
            from agents.backends.transformers_backend import TransformersBackend

            _backends[key] = TransformersBackend(target, **options)
        else:
            from agents.backends.openai_backend import OpenAIBackend

            model, at, url = target.partition("@")
            if not at or not model or not url:
                raise AgentSpecError(
                    f"{spec!r}: expected 'openai:MODEL@URL', e.g. openai:llama3@http://127.0.0.1:8000/v1"
                )
            _backends[key] = OpenAIBackend(base_url=url, model=model, **options)
    return _backends[key]


def _llm_agent(spec: str, options: dict[str, Any]) -> Any:
    from agents.llm import LLMAgent

    sampling = {k: options.pop(k) for k in _SAMPLING_OPTIONS if k in options}
    summary = {k.removeprefix("summary_"): options.pop(k) for k in _SUMMARY_OPTIONS if k in options}
    base, _ = split_spec(spec)
    backend = load_backend(base, **options)
    agent = LLMAgent(backend)
    agent.dialogue = dataclasses.replace(agent.dialogue, **sampling)
    summary_carry = {k: v for k, v in sampling.items() if k == "seed"}
    agent.summary = dataclasses.replace(agent.summary, **{**summary_carry, **summary})
    return agent


def load_object(reference: str) -> Any:
    """The attribute named by ``module:attr`` or ``path/to/file.py:attr``."""
    module_name, sep, attribute = reference.rpartition(":")
    if not sep or not module_name or not attribute:
        raise AgentSpecError(f"{reference!r} is not of the form 'module:attribute'")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise AgentSpecError(f"{reference!r}: file {path} not found")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules.setdefault(path.stem, module)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise AgentSpecError(
                f"{reference!r}: cannot import {module_name!r} ({error})"
            ) from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise AgentSpecError(
            f"{reference!r}: module {module_name!r} has no {attribute!r}"
        ) from None


def load_agent(spec: str, **options: Any) -> Any:
    """An agent from a spec string (see the module docstring); ``options`` add to the spec's."""
    base, spec_options = split_spec(spec)
    options = {**spec_options, **options}
    prefix, sep, rest = base.partition(":")
    if prefix == "scripted" and sep:
        known = {**SCRIPTED_AGENTS, **ADVERSARIAL_AGENTS}
        if rest not in known:
            raise AgentSpecError(
                f"unknown scripted agent {rest!r}; expected one of {sorted(known)}"
            )
        try:
            return known[rest](**options)
        except TypeError as error:
            raise AgentSpecError(f"{spec!r}: {error}") from None
    if is_llm_spec(base):
        return _llm_agent(base, options)
    if sep:
        target = load_object(base)
        agent = target(**options) if isinstance(target, type) else target
        if not callable(agent):
            raise AgentSpecError(f"{spec!r} is not callable; an agent maps an observation to a str")
        return agent
    raise AgentSpecError(
        f"unknown agent spec {spec!r}; expected a registered model name (smollm2, ...), "
        "'hf:PATH', 'openai:MODEL@URL', 'scripted:NAME' or 'module:function'"
    )


# The judges used when a command says ``--judge default``: chosen by measurement with
# ``python -m benchmarks.judge_quality`` on the 156 hand-written judge-quality items, which
# none of them was built or tuned on (docs/judges.md has the numbers and the reasons).
# CA scoring, reward and evaluation: the shipped reward model ca-rm-v1 (``rm``): 0.86
# absolute (0.90 on the length-controlled items), 0.81 pairwise with position consistency
# 1.00, where the holistic grades of the local LLMs were at chance on the length-controlled
# items and answered pairwise questions by position; it is also the fastest. One model as
# both reward and evaluation judge cannot show reward hacking: the learning benchmark
# (benchmarks/learning.py) therefore reports a second judge beside it.
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


def _judge_parts(spec: str, role: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(backend spec, judge options, backend options) of a judge spec."""
    base, options = split_spec(spec)
    if base == "default":  # the measured default, with any options given added to its own
        base, default_options = split_spec(DEFAULT_JUDGES[role])
        options = {**default_options, **options}
    judge_options = {k: options.pop(k) for k in _JUDGE_OPTIONS if k in options}
    cache_path = options.pop("judge_cache", None)
    if cache_path is not None:
        judge_options["cache"] = _judge_caches.setdefault(
            str(cache_path), _new_cache(str(cache_path))
        )
    return base, judge_options, options


def _new_cache(path: str) -> Any:
    from negotiation_env.judges.cache import JudgeCache

    return JudgeCache(path)


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
        k: options.pop(k) for k in ("injection", "injection_penalty", "cache") if k in options
    }
    allowed = ("adapter", "device", "dtype", "max_batch_size", "cache_dir")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise AgentSpecError(f"rm: unknown option(s) {unknown}; allowed: {list(allowed)}")
    key = tuple(sorted(options.items()))
    if key not in _reward_backends:
        from agents.backends.reward_backend import RewardModelBackend

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
        raise AgentSpecError(
            f"{spec!r}: an ensemble names two or more judge specs joined by '+', "
            "e.g. ensemble:checklist+rm"
        )
    return members


def load_judge(spec: str, criterion: str = "ca", role: str = "evaluation") -> Any:
    """A judge from a spec:

    - ``default``: the measured default for ``role`` (reward or evaluation; ``DEFAULT_JUDGES``);
    - ``checklist``: checklist judging (``rubric`` a checklist id or YAML file, ``model`` the
      backend spec answering it, default SmolLM2);
    - ``rm``: the trained reward model shipped with the package (``adapter=DIR`` for another);
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
        raise AgentSpecError(f"criterion: {criterion!r} is not one of ['ca', 'conflict']")
    base, options = split_spec(spec)
    if base == "default":  # the measured default, with any options given added to its own
        resolved = DEFAULT_JUDGES[role]
        for key, value in options.items():
            resolved = with_option(resolved, key, value)
        return load_judge(resolved, criterion, role)
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
        raise AgentSpecError(f"judge spec {spec!r}: {error}") from None


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
        raise AgentSpecError(f"agreement detector spec {spec!r}: {error}") from None


def load_text_generator(
    spec: str, max_new_tokens: int = 1024, temperature: float = 0.9
) -> Callable[[str], str]:
    """A ``prompt -> text`` function from an LLM spec or a user's ``module:function``."""
    base, options = split_spec(spec)
    if is_llm_spec(base):
        from agents.backends.base import GenerationSettings

        settings = GenerationSettings(
            max_new_tokens=int(options.pop("max_new_tokens", max_new_tokens)),
            temperature=float(options.pop("temperature", temperature)),
        )
        backend = load_backend(base, **options)

        def generate(prompt: str) -> str:
            return backend.generate([[{"role": "user", "content": prompt}]], settings)[0].text

        generate.__qualname__ = backend.name
        return generate
    target = load_object(base)
    generator = target() if isinstance(target, type) else target
    if not callable(generator):
        raise AgentSpecError(f"generator {spec!r} is not callable (prompt -> text)")
    return generator
