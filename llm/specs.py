"""Building LLM backends and text generators from short specs.

==================================  =====================================================
``smollm2`` (any registry name)     a local model from the registry (``negotiate models list``)
``hf:PATH_OR_HUB_ID``               a local model folder, or a hub id where you have internet
``openai:MODEL@URL``                an OpenAI-compatible server, e.g.
                                    ``openai:llama3@http://127.0.0.1:8000/v1``
``module:function``                 your own callable (:func:`load_object`; a ``prompt ->
                                    text`` generator for :func:`load_text_generator`)
==================================  =====================================================

Options follow a ``?``: ``hf:./out/model?adapter=./out/adapter&dtype=bfloat16``,
``openai:gpt-4o-mini@https://api.example/v1?api_key_env=MY_KEY&concurrency=4``. Backend
options: ``adapter``, ``device``, ``dtype``, ``max_batch_size``, ``cache`` (hf and registry
names); ``api_key_env``, ``timeout``, ``max_retries``, ``concurrency``, ``backoff``,
``send_candidates`` (openai). A model named twice in one process is loaded once: backends
are shared. Agents (:mod:`agents.specs`) and judges (:mod:`negotiation_env.judges.specs`)
are built on these.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from llm.models import registered


class SpecError(ValueError):
    """A spec could not be turned into a backend, agent or judge; the message says what
    would work."""


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
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as error:
        raise SpecError(
            f"{spec!r}: malformed options after '?' ({error}); write KEY=VALUE pairs joined "
            "by '&', e.g. smollm2?temperature=0.3&max_new_tokens=64"
        ) from None
    for key, value in pairs:
        options[key] = _value(value)
    return base, options


def _kind(base: str) -> tuple[str, str]:
    """(kind, target) for an LLM spec base: kind is "hf" or "openai", or "" when not an LLM."""
    prefix, sep, rest = base.partition(":")
    if sep and prefix in ("hf", "openai"):
        return prefix, rest
    if registered(base) is not None:
        return "hf", base
    return "", base


def backend_option_names(spec: str) -> tuple[str, ...]:
    """The options the backend of an LLM spec takes (none for other specs)."""
    kind, _ = _kind(split_spec(spec)[0])
    return _BACKEND_OPTIONS.get(kind, ())


def check_backend(base: str, options: dict[str, Any]) -> None:
    """Everything about a backend spec that can be checked without loading the model: its
    form, its options and the folders it names (a registered model not yet fetched is fine:
    it is fetched on first use)."""
    from llm.models import check_adapter, resolve_model

    kind, target = _kind(base)
    if not kind:
        raise SpecError(
            f"{base!r} is not an LLM spec; use a registered model name, 'hf:PATH' or "
            "'openai:MODEL@URL'"
        )
    unknown = sorted(set(options) - set(_BACKEND_OPTIONS[kind]))
    if unknown:
        raise SpecError(
            f"{base!r}: unknown backend option(s) {unknown}; allowed: {list(_BACKEND_OPTIONS[kind])}"
        )
    if kind == "openai":
        model, at, url = target.partition("@")
        if not at or not model or not url:
            raise SpecError(
                f"{base!r}: expected 'openai:MODEL@URL', e.g. openai:llama3@http://127.0.0.1:8000/v1"
            )
        return
    if registered(target) is None:
        resolve_model(target)  # a folder that is not there is named now
    if options.get("adapter"):
        check_adapter(options["adapter"])


def is_llm_spec(spec: str) -> bool:
    return _kind(split_spec(spec)[0])[0] != ""


def load_backend(spec: str, **options: Any) -> Any:
    """The (shared) LLM backend of a registry name, ``hf:...`` or ``openai:MODEL@URL`` spec."""
    base, spec_options = split_spec(spec)
    options = {**spec_options, **options}
    check_backend(base, options)
    kind, target = _kind(base)
    key = (kind, target, tuple(sorted(options.items())))
    if key not in _backends:
        if kind == "hf":
            from llm.transformers_backend import TransformersBackend

            _backends[key] = TransformersBackend(target, **options)
        else:
            from llm.openai_backend import OpenAIBackend

            model, _, url = target.partition("@")
            _backends[key] = OpenAIBackend(base_url=url, model=model, **options)
    return _backends[key]


def load_object(reference: str) -> Any:
    """The attribute named by ``module:attr`` or ``path/to/file.py:attr``."""
    module_name, sep, attribute = reference.rpartition(":")
    if not sep or not module_name or not attribute:
        raise SpecError(f"{reference!r} is not of the form 'module:attribute'")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise SpecError(f"{reference!r}: file {path} not found")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules.setdefault(path.stem, module)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise SpecError(f"{reference!r}: cannot import {module_name!r} ({error})") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise SpecError(f"{reference!r}: module {module_name!r} has no {attribute!r}") from None


def load_text_generator(
    spec: str, max_new_tokens: int = 1024, temperature: float = 0.9
) -> Callable[[str], str]:
    """A ``prompt -> text`` function from an LLM spec or a user's ``module:function``."""
    base, options = split_spec(spec)
    if is_llm_spec(base):
        from llm.interface import GenerationSettings

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
        raise SpecError(f"generator {spec!r} is not callable (prompt -> text)")
    return generator
