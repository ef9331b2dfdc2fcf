"""Our trainer overrides three TRL/transformers internals (trainers/grpo.py names them). These
checks fail loudly, naming the method, when an upgrade of TRL changes what an override relies
on; the behaviour of each override is tested in test_buckets, test_logprobs and
test_trainer."""

import dataclasses
import inspect

import pytest

from trainers.buckets import LengthBucketMixin
from trainers.common import CheckpointMixin
from trainers.grpo import NegotiationGRPOTrainer
from trainers.logprobs import CompletionLogProbMixin

trl = pytest.importorskip("trl")
GRPOTrainer = trl.GRPOTrainer

# method -> the leading parameters our override takes and passes on, in order
EXPECTED = {
    "_prepare_inputs": ["self", "generation_batch"],
    "_get_per_token_logps_and_entropies": [
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
    ],
    "_save_checkpoint": ["self", "model", "trial"],
}


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_trl_methods_we_override_keep_their_signature(method):
    assert hasattr(GRPOTrainer, method), f"TRL's GRPOTrainer no longer has {method}"
    names = list(inspect.signature(getattr(GRPOTrainer, method)).parameters)
    expected = EXPECTED[method]
    assert names[: len(expected)] == expected, (
        f"GRPOTrainer.{method} now takes {names}; our override expects {expected} first"
    )


def test_extra_log_probability_arguments_are_keyword_defaults_we_pass_through():
    # CompletionLogProbMixin hands every further (multimodal) argument back to TRL untouched
    # and uses its own path only when all of them are None: they must stay optional.
    parameters = inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters
    extra = list(parameters)[len(EXPECTED["_get_per_token_logps_and_entropies"]) :]
    assert all(parameters[name].default is None for name in extra), extra


def test_the_state_the_length_buckets_use_is_still_trls():
    # LengthBucketMixin replays TRL's generation schedule with these members of the trainer.
    source = inspect.getsource(GRPOTrainer)
    for member in (
        "self._step",
        "self._buffered_inputs",
        "self.num_iterations",
        "steps_per_generation",
    ):
        assert member in source, f"GRPOTrainer no longer uses {member}"
    assert hasattr(GRPOTrainer, "_generate_and_score_completions")


def test_each_override_lives_in_one_mixin_of_our_trainer():
    owners = {
        "_prepare_inputs": LengthBucketMixin,
        "_get_per_token_logps_and_entropies": CompletionLogProbMixin,
        "_save_checkpoint": CheckpointMixin,
    }
    for method, mixin in owners.items():
        defined = [k for k in NegotiationGRPOTrainer.__mro__ if method in vars(k)]
        assert defined[0] is mixin, f"{method} is overridden by {defined[0]}, not {mixin}"
        assert [k for k in defined if k.__module__.startswith("trainers.")] == [mixin]
    assert "rollout_func" in inspect.signature(GRPOTrainer.__init__).parameters


def test_the_vllm_path_the_server_engine_rides_on_is_still_trls():
    # NegotiationGRPOTrainer._use_engine sets use_vllm, vllm_generation and
    # _last_loaded_step; TRL must still sync through them before a custom rollout and apply
    # the truncated importance-sampling correction to the rollout's log-probabilities.
    rollout = inspect.getsource(GRPOTrainer._generate)
    assert "self.rollout_func(" in rollout
    assert "self.use_vllm and self.state.global_step != self._last_loaded_step" in rollout
    assert "self.vllm_generation.sync_weights()" in rollout
    generate = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert "self.use_vllm and self.vllm_importance_sampling_correction" in generate
    assert 'output["importance_sampling_ratio"]' in generate
    assert 'inputs["importance_sampling_ratio"]' in inspect.getsource(GRPOTrainer._compute_loss)
    fields = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
    assert {
        "vllm_importance_sampling_correction",
        "vllm_importance_sampling_mode",
        "vllm_importance_sampling_clip_max",
        "shuffle_dataset",
    } <= fields
