"""Trainers: GRPO self-play on negotiations (the paper's method) and the single-agent baseline."""

from trainers.config import TrainConfig
from trainers.selfplay import TrainResult, build_trainer, train_selfplay
from trainers.single_agent import train_single_agent

__all__ = ["TrainConfig", "TrainResult", "build_trainer", "train_selfplay", "train_single_agent"]
