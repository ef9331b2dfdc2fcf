"""The loss's log-probabilities from the completion positions alone (trainers/logprobs.py)
equal TRL's fused LM head over every position: values, entropies and gradients."""

from __future__ import annotations

import os

import torch
from trl import GRPOTrainer

from tests.scripts.tiny import always_agree
from tests.test_trainer import CountingJudge, prepared, tiny_config
from trainers.selfplay import build_trainer

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def per_token(trainer, inputs, path):
    """(log-probs, entropies, parameter gradients of their masked sum) along ``path``."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    width = inputs["completion_ids"].size(1)
    trainer.model.zero_grad()
    logps, entropies, _ = path(trainer.model, ids, mask, width, batch_size=3, compute_entropy=True)
    (logps * inputs["completion_mask"]).sum().backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return logps.detach(), entropies.detach(), grads


def test_completion_only_logprobs_equal_trls_fused_head_over_every_position(
    tiny_model_dir, tmp_path
):
    config = tiny_config(tiny_model_dir, tmp_path, **{"env.mode": "evaluation"})
    trainer = build_trainer(config, judge=CountingJudge(), agreement_detector=always_agree)
    inputs = prepared(trainer, config)
    assert inputs["prompt_ids"].size(1) > 4 * inputs["completion_ids"].size(1)  # mostly prompt

    ours = per_token(trainer, inputs, trainer._get_per_token_logps_and_entropies)
    trls = per_token(
        trainer,
        inputs,
        lambda *a, **k: GRPOTrainer._get_per_token_logps_and_entropies(trainer, *a, **k),
    )
    scored = inputs["completion_mask"].bool()
    assert torch.allclose(ours[0][scored], trls[0][scored], atol=1e-5)
    assert torch.allclose(ours[1][scored], trls[1][scored], atol=1e-5)
    assert torch.all(ours[0][~scored] == 0) and torch.all(ours[1][~scored] == 0)
    assert ours[2].keys() == trls[2].keys() and ours[2]
    for name, grad in trls[2].items():
        # float32 sums in another order: an embedding row's gradient gathers every position,
        # so the round-off scales with the gradient's size (6e-5 of 18.8 seen on an AMD EPYC)
        scale = max(float(grad.abs().max()), 1.0)
        assert torch.allclose(ours[2][name], grad, atol=1e-5 * scale), name


def test_a_micro_batch_of_padding_only_gives_zero_gradient(tiny_model_dir, tmp_path):
    config = tiny_config(tiny_model_dir, tmp_path, **{"env.mode": "evaluation"})
    trainer = build_trainer(config, judge=CountingJudge(), agreement_detector=always_agree)
    inputs = prepared(trainer, config)
    inputs["completion_mask"] = torch.zeros_like(inputs["completion_mask"])
    logps, _, grads = per_token(trainer, inputs, trainer._get_per_token_logps_and_entropies)
    assert torch.all(logps == 0)
    assert all(torch.all(g == 0) for g in grads.values())
