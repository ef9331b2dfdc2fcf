"""Length bucketing of training micro-batches (trainers/buckets.py): every real token kept,
padding cut, and the same gradient as TRL's plain split on a tiny random model."""

from __future__ import annotations

import os

import pytest
import torch
from trl.trainer.utils import split_tensor_dict

from tests.scripts.tiny import always_agree
from tests.test_trainer import CountingJudge, generation_batch, prepared, tiny_config
from trainers.buckets import length_buckets
from trainers.selfplay import build_trainer

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def synthetic_batch() -> dict:
    """Four samples, prompts left-padded to 5 and completions right-padded to 4."""
    prompt_lengths, completion_lengths = [5, 1, 3, 2], [1, 4, 2, 1]
    prompt_mask = torch.tensor([[0] * (5 - n) + [1] * n for n in prompt_lengths])
    completion_mask = torch.tensor([[1] * n + [0] * (4 - n) for n in completion_lengths])
    return {
        "prompt_ids": prompt_mask * torch.arange(1, 6),
        "prompt_mask": prompt_mask,
        "completion_ids": completion_mask * torch.arange(11, 15),
        "completion_mask": completion_mask,
        "old_per_token_logps": completion_mask * -0.5,
        "advantages": torch.tensor([0.1, 0.2, 0.3, 0.4]),
        "seats": ["a", "b", "c", "d"],
        "num_items_in_batch": torch.tensor(8),
    }


def real_tokens(bucket: dict, row: int) -> tuple[list[int], list[int]]:
    prompt = bucket["prompt_ids"][row][bucket["prompt_mask"][row] == 1].tolist()
    completion = bucket["completion_ids"][row][bucket["completion_mask"][row] == 1].tolist()
    return prompt, completion


def test_buckets_hold_similar_lengths_keep_every_token_and_cut_shared_padding():
    batch = synthetic_batch()
    first, second = length_buckets(batch, 2)
    # real lengths 6, 5, 5, 3: the two shortest (rows 3 and 1) share a micro-batch
    assert first["seats"] == ["d", "b"] and second["seats"] == ["c", "a"]
    assert first["advantages"].tolist() == pytest.approx([0.4, 0.2])
    assert first["prompt_ids"].shape == (2, 2) and first["completion_ids"].shape == (2, 4)
    assert second["prompt_ids"].shape == (2, 5) and second["completion_ids"].shape == (2, 2)
    assert second["old_per_token_logps"].shape == (2, 2)  # completion-aligned: cut alike
    assert first["num_items_in_batch"] is batch["num_items_in_batch"]
    for bucket in (first, second):
        for row, seat in enumerate(bucket["seats"]):
            original = "abcd".index(seat)
            assert real_tokens(bucket, row) == real_tokens(batch, original)


def test_uneven_split_is_refused():
    with pytest.raises(ValueError, match="4 samples do not split into 3"):
        length_buckets(synthetic_batch(), 3)


def accumulated(trainer, micro_batches):
    """Loss and parameter gradients of one optimisation step over ``micro_batches``."""
    trainer.model.zero_grad()
    trainer.current_gradient_accumulation_steps = len(micro_batches)
    loss = 0.0
    for inputs in micro_batches:
        step = trainer.compute_loss(trainer.model, inputs)
        step.backward()
        loss += step.item()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss, grads


def test_bucketed_step_has_the_plain_split_gradient_on_fewer_columns(tiny_model_dir, tmp_path):
    config = tiny_config(
        tiny_model_dir, tmp_path, **{"env.mode": "evaluation", "optim.micro_batch_size": 2}
    )
    trainer = build_trainer(config, judge=CountingJudge(), agreement_detector=always_agree)
    inputs = prepared(trainer, config)
    chunks = trainer.args.steps_per_generation
    assert chunks == 4  # 2 scenarios x 2 dialogues x 2 turns, 2 samples per micro-batch
    plain = split_tensor_dict(inputs, chunks)
    buckets = length_buckets(inputs, chunks)

    def columns(batches):
        return sum(b["prompt_ids"].numel() + b["completion_ids"].numel() for b in batches)

    assert columns(buckets) < columns(plain)
    plain_loss, plain_grads = accumulated(trainer, plain)
    bucket_loss, bucket_grads = accumulated(trainer, buckets)
    assert bucket_loss == pytest.approx(plain_loss, abs=1e-5)
    assert plain_grads.keys() == bucket_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        assert torch.allclose(bucket_grads[name], grad, atol=1e-5), name


def test_the_trainer_hands_out_bucketed_micro_batches_unless_the_loss_depends_on_grouping(
    tiny_model_dir, tmp_path
):
    config = tiny_config(
        tiny_model_dir, tmp_path, **{"env.mode": "evaluation", "optim.micro_batch_size": 2}
    )
    trainer = build_trainer(config, judge=CountingJudge(), agreement_detector=always_agree)
    trainer.model.train()
    first = trainer._prepare_inputs(generation_batch(config))
    lengths = [
        (b["prompt_mask"].sum(1) + b["completion_mask"].sum(1)).tolist()
        for b in trainer._buffered_inputs
    ]
    assert first is trainer._buffered_inputs[0]
    flat = [n for bucket in lengths for n in bucket]
    assert flat == sorted(flat)

    trainer.args.loss_type = "bnpo"  # normalised per micro-batch: TRL's own random split
    trainer._buffered_inputs = None
    trainer._prepare_inputs(generation_batch(config))
    widths = {b["prompt_ids"].shape[1] for b in trainer._buffered_inputs}
    assert len(widths) == 1  # every micro-batch at the batch's full width
