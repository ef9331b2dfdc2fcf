"""Our GRPO trainer: TRL's ``GRPOTrainer`` driven by a negotiation rollout.

Three TRL or transformers internals are overridden, each in one mixin and nowhere else:
``_save_checkpoint`` (:class:`~trainers.common.CheckpointMixin`: a checkpoint counts only
once complete), ``_prepare_inputs`` (:class:`~trainers.buckets.LengthBucketMixin`:
micro-batches of similar length) and ``_get_per_token_logps_and_entropies``
(:class:`~trainers.logprobs.CompletionLogProbMixin`: log-probabilities of the completion
positions only); with the server engine, four attributes of TRL's vLLM path are set
(:meth:`NegotiationGRPOTrainer._use_engine`). ``tests/test_trl_overrides.py`` fails when
TRL changes what they rely on.
"""

from __future__ import annotations

import sys
from typing import Any

import transformers
from trl import GRPOTrainer

from trainers.buckets import LengthBucketMixin
from trainers.common import CheckpointMixin, MetricsLog, ProgressCallback, Rollout, StepTimer
from trainers.engine import ServerEngine
from trainers.logprobs import CompletionLogProbMixin


class NegotiationGRPOTrainer(
    CheckpointMixin, LengthBucketMixin, CompletionLogProbMixin, GRPOTrainer
):
    """A ``GRPOTrainer`` whose generations come from ``rollout`` (a
    :class:`~trainers.common.Rollout`: self-play dialogues or direct answers), with a
    readable progress line and the step's rollout and training time logged.

    ``rollout.last`` is the latest :class:`~trainers.common.RolloutResult`; every other
    keyword argument is ``GRPOTrainer``'s.
    """

    def __init__(
        self,
        *,
        rollout: Rollout,
        keep_checkpoints: int = 3,
        length_bucketing: bool = True,
        engine: ServerEngine | None = None,
        **grpo_arguments: Any,
    ):
        self.rollout = rollout
        self.keep_checkpoints = keep_checkpoints
        self.length_bucketing = length_bucketing
        self.engine = engine
        super().__init__(rollout_func=rollout, **grpo_arguments)
        if engine is not None:
            self._use_engine(engine)
        # transformers prints every metrics dictionary to the console (its progress bar or
        # printer); ours prints one readable line, and the full metrics go to TensorBoard
        # and metrics.jsonl
        self.remove_callback(transformers.trainer_callback.ProgressCallback)
        self.remove_callback(transformers.trainer_callback.PrinterCallback)
        self.add_callback(ProgressCallback(sys.stdout))
        self.add_callback(MetricsLog(self.args.output_dir))
        self.add_callback(StepTimer(self))

    def _use_engine(self, engine: ServerEngine) -> None:
        """Generate on the rollout servers. TRL's vLLM path does the rest, as for vLLM
        generations: with ``use_vllm`` set, ``_generate`` calls
        ``vllm_generation.sync_weights()`` before a new step's first rollout and
        ``_generate_and_score_completions`` applies the truncated importance-sampling
        correction to the sampled log-probabilities the rollout returns (the GRPOConfig's
        ``vllm_importance_sampling_*``). Nothing else of the vLLM path runs: generation is
        the rollout's (``rollout_func``).
        ``tests/test_trl_overrides.py`` pins the names this relies on."""
        engine.trainer = self
        self.rollout.engine = engine
        self.vllm_mode = "server"  # TRL's colocate branches would reach for an engine we lack
        self.use_vllm = True
        self.vllm_generation = engine
        self._last_loaded_step = -1
