"""Building agents from short specs, as used on the command line and in configs.

==========================  ====================================================
``scripted:NAME``           a scripted baseline (stubborn, conceding, random,
                            mediator)
``module:function``         a user's own callable (a class is instantiated
                            without arguments); ``path/to/file.py:function``
                            also works
==========================  ====================================================

New kinds of agent register a prefix in :data:`AGENT_FACTORIES`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.scripted import SCRIPTED_AGENTS


class AgentSpecError(ValueError):
    """An agent spec could not be turned into an agent; the message says what would work."""


def _scripted(name: str, **options: Any) -> Any:
    if name not in SCRIPTED_AGENTS:
        raise AgentSpecError(
            f"unknown scripted agent {name!r}; expected one of {sorted(SCRIPTED_AGENTS)}"
        )
    return SCRIPTED_AGENTS[name](**options)


AGENT_FACTORIES: dict[str, Callable[..., Any]] = {"scripted": _scripted}


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
    """An agent from a spec string (see the module docstring); ``options`` go to its factory."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in AGENT_FACTORIES:
        return AGENT_FACTORIES[prefix](rest, **options)
    if sep:
        target = load_object(spec)
        agent = target(**options) if isinstance(target, type) else target
        if not callable(agent):
            raise AgentSpecError(f"{spec!r} is not callable; an agent maps an observation to a str")
        return agent
    raise AgentSpecError(
        f"unknown agent spec {spec!r}; expected one of "
        + ", ".join(f"'{p}:...'" for p in AGENT_FACTORIES)
        + " or 'module:function'"
    )
