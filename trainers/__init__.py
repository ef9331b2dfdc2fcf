"""Trainers: GRPO self-play on negotiations (the paper's method) and the single-agent baseline.

The trainers pull in TRL, transformers and torch; they are imported on first use, so that
importing :mod:`trainers.config` (the command line does, to build its parser) stays cheap.
"""

from importlib import import_module
from typing import Any

from trainers.config import TrainConfig

_LAZY = {
    "TrainResult": "trainers.selfplay",
    "build_trainer": "trainers.selfplay",
    "train_selfplay": "trainers.selfplay",
    "train_single_agent": "trainers.single_agent",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainers' has no attribute {name!r}")


__all__ = ["TrainConfig", "TrainResult", "build_trainer", "train_selfplay", "train_single_agent"]
