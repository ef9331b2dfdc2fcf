"""Building agents from short specs.

==================================  =====================================================
``smollm2`` (any registry name)     an LLM agent on a local model from the registry
``hf:PATH_OR_HUB_ID``               an LLM agent on a local model folder
``openai:MODEL@URL``                an LLM agent on an OpenAI-compatible server
``scripted:NAME``                   a scripted baseline (stubborn, conceding, random, mediator)
                                    or adversary (insulting, judge, echo, stalling)
``module:function``                 your own callable (a class is instantiated without
                                    arguments); ``path/to/file.py:function`` also works
==================================  =====================================================

Options follow a ``?``: ``smollm2?temperature=0.3&max_new_tokens=64``,
``scripted:random?seed=3``. Sampling options (LLM agents): ``temperature``, ``top_p``,
``top_k``, ``max_new_tokens``, ``seed``, ``no_repeat_ngram_size``, and
``summary_temperature``, ``summary_max_new_tokens``, ``summary_no_repeat_ngram_size`` for
the resolution; the backend options are :mod:`llm.specs`'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agents.adversarial import ADVERSARIAL_AGENTS
from agents.scripted import SCRIPTED_AGENTS
from llm.interface import GenerationSettings
from llm.specs import (
    SpecError,
    backend_option_names,
    check_backend,
    is_llm_spec,
    load_backend,
    load_object,
    split_spec,
)

# Agent specs raise the same error type as backend and judge specs.
AgentSpecError = SpecError

_SAMPLING_OPTIONS = (
    "temperature",
    "top_p",
    "top_k",
    "max_new_tokens",
    "seed",
    "no_repeat_ngram_size",
)
_SUMMARY_OPTIONS = (
    "summary_temperature",
    "summary_max_new_tokens",
    "summary_no_repeat_ngram_size",
)


# what each sampling option must be: a number (float) or a whole number (int)
_OPTION_TYPES = {
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "max_new_tokens": int,
    "seed": int,
    "no_repeat_ngram_size": int,
}


def _sampling_value(spec: str, key: str, value: Any) -> Any:
    kind = _OPTION_TYPES[key.removeprefix("summary_")]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        wanted = "a number" if kind is float else "a whole number"
        raise AgentSpecError(f"{spec!r}: option {key} must be {wanted}, got {value!r}")
    if kind is int and not float(value).is_integer():
        raise AgentSpecError(f"{spec!r}: option {key} must be a whole number, got {value!r}")
    return kind(value)


def _agent_options(
    base: str, options: dict[str, Any], spec: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(dialogue sampling, summary sampling, backend options) of an LLM agent spec, checked;
    errors quote the whole ``spec``."""
    backend_options = backend_option_names(base)
    unknown = sorted(set(options) - {*_SAMPLING_OPTIONS, *_SUMMARY_OPTIONS, *backend_options})
    if unknown:
        raise AgentSpecError(
            f"{spec!r}: unknown option(s) {unknown}; sampling options: "
            f"{[*_SAMPLING_OPTIONS, *_SUMMARY_OPTIONS]}; backend options: {list(backend_options)}"
        )
    typed = {
        k: _sampling_value(spec, k, v) if k in (*_SAMPLING_OPTIONS, *_SUMMARY_OPTIONS) else v
        for k, v in options.items()
    }
    sampling = {k: typed.pop(k) for k in _SAMPLING_OPTIONS if k in typed}
    summary = {k.removeprefix("summary_"): typed.pop(k) for k in _SUMMARY_OPTIONS if k in typed}
    try:  # GenerationSettings' range checks, without building an agent
        GenerationSettings(**sampling)
        GenerationSettings(**summary)
    except ValueError as error:
        raise AgentSpecError(f"{spec!r}: {error}") from None
    return sampling, summary, typed


def _llm_agent(base: str, options: dict[str, Any], spec: str) -> Any:
    """An LLM agent on ``base`` with ``options``; errors quote the whole ``spec``."""
    from agents.llm import LLMAgent

    sampling, summary, options = _agent_options(base, options, spec)
    backend = load_backend(base, **options)
    agent = LLMAgent(backend)
    agent.dialogue = dataclasses.replace(agent.dialogue, **sampling)
    summary_carry = {k: v for k, v in sampling.items() if k == "seed"}
    agent.summary = dataclasses.replace(agent.summary, **{**summary_carry, **summary})
    return agent


def _scripted_agent_class(name: str) -> type:
    known = {**SCRIPTED_AGENTS, **ADVERSARIAL_AGENTS}
    if name not in known:
        raise AgentSpecError(f"unknown scripted agent {name!r}; expected one of {sorted(known)}")
    return known[name]


def _unknown_spec(spec: str) -> AgentSpecError:
    return AgentSpecError(
        f"unknown agent spec {spec!r}; expected a registered model name (smollm2, ...), "
        "'hf:PATH', 'openai:MODEL@URL', 'scripted:NAME' or 'module:function'"
    )


def check_agent_spec(spec: str) -> None:
    """Everything about an agent spec that can be checked without loading a model (its form,
    the scripted agent's name, the options, the folders it names, a user module's import),
    so that a command can refuse a bad spec before slower agents have run."""
    base, options = split_spec(spec)
    prefix, sep, rest = base.partition(":")
    if prefix == "scripted" and sep:
        _scripted_agent_class(rest)
        return
    if is_llm_spec(base):
        _, _, backend_options = _agent_options(base, options, spec)
        check_backend(base, backend_options)
        return
    if sep:
        load_object(base)
        return
    raise _unknown_spec(spec)


def load_agent(spec: str, **options: Any) -> Any:
    """An agent from a spec string (see the module docstring); ``options`` add to the spec's."""
    base, spec_options = split_spec(spec)
    options = {**spec_options, **options}
    prefix, sep, rest = base.partition(":")
    if prefix == "scripted" and sep:
        try:
            return _scripted_agent_class(rest)(**options)
        except TypeError as error:
            raise AgentSpecError(f"{spec!r}: {error}") from None
    if is_llm_spec(base):
        return _llm_agent(base, options, spec)
    if sep:
        target = load_object(base)
        agent = target(**options) if isinstance(target, type) else target
        if not callable(agent):
            raise AgentSpecError(f"{spec!r} is not callable; an agent maps an observation to a str")
        return agent
    raise _unknown_spec(spec)
