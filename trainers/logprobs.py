"""Log-probabilities of the completion tokens only, on devices where TRL scores every position.

TRL 1.16 computes the loss's per-token log-probabilities with a fused LM head
(``trl.kernels.ChunkedLogProbFunction``: the vocabulary in tiles, the full logits never
materialised). On CUDA it projects only the positions that predict completion tokens; on
other devices (CPU) it projects *every* position of prompt and completion, to keep tile
shapes fixed for compilers, and masks the result. In our samples the prompt (persona,
rules, dilemma, history) is most of the sequence, so on CPU most of that LM-head work, a
49k-wide projection forward and twice backward plus the softmax passes, is thrown away.

:class:`CompletionLogProbMixin` runs TRL's own fused function on the completion positions
alone, on every device where TRL would not: the same kernel, the same numbers (tested
against TRL's path in ``tests/test_logprobs.py``), far fewer rows. Models whose LM head
scales or soft-caps its logits keep TRL's path.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

VOCAB_TILE = 16384  # vocabulary columns per projection tile
# config fields with which the LM head transforms its logits: such models keep TRL's path
_HEAD_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)


def completion_logprobs(
    causal_lm: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_width: int,
    temperature: float,
    fp32_head: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities and entropies ``[rows, completion_width]`` of the last
    ``completion_width`` tokens of each row (zero where the mask is 0), projecting through
    the LM head only the positions that predict them."""
    from trl.kernels import ChunkedLogProbFunction

    hidden = causal_lm.base_model(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state
    hidden = hidden[:, -completion_width - 1 : -1]  # position t predicts token t + 1
    targets = input_ids[:, -completion_width:]
    scored = attention_mask[:, -completion_width:].bool()
    head = causal_lm.get_output_embeddings()
    hidden = hidden[scored]
    context = nullcontext()
    if fp32_head:  # TRL's cast_lm_head_to_fp32: the projection in fp32, outside autocast
        hidden = hidden.float()
        context = torch.autocast(hidden.device.type, enabled=False)
    with context:
        logps, entropy, *_ = ChunkedLogProbFunction.apply(
            hidden,
            head.weight,
            head.bias,
            targets[scored],
            temperature,
            VOCAB_TILE,
            None,  # no soft-capping
            1.0,  # no logit scale
            ("log_probs", "entropy"),
        )
    # masked_scatter keeps an all-padding micro-batch connected to the graph (a zero gradient)
    zeros = torch.zeros(scored.shape, dtype=logps.dtype, device=logps.device)
    return zeros.masked_scatter(scored, logps), zeros.masked_scatter(scored, entropy)


def head_is_plain(causal_lm: Any) -> bool:
    """Whether the LM head is a plain projection (no logit scaling or soft-capping)."""
    config = causal_lm.config.get_text_config()
    return all(getattr(config, field, None) is None for field in _HEAD_TRANSFORMS)


class CompletionLogProbMixin:
    """Mixed into a TRL ``GRPOTrainer``: on devices where TRL's fused LM head would score
    every position (all but CUDA/XPU), the loss's log-probabilities come from
    :func:`completion_logprobs` instead. Multimodal inputs, MoE auxiliary losses and models
    with a transformed LM head keep TRL's path."""

    def _get_per_token_logps_and_entropies(
        self,
        model: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int,
        batch_size: int | None = None,
        compute_entropy: bool = False,
        compute_aux_loss: bool = False,
        **extra: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        causal_lm = _causal_lm(self.accelerator.unwrap_model(model))  # type: ignore[attr-defined]
        if (
            input_ids.device.type in ("cuda", "xpu")  # TRL already scores completions only
            or compute_aux_loss
            or any(value is not None for value in extra.values())
            or not head_is_plain(causal_lm)
        ):
            return super()._get_per_token_logps_and_entropies(  # type: ignore[misc]
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size=batch_size,
                compute_entropy=compute_entropy,
                compute_aux_loss=compute_aux_loss,
                **extra,
            )
        size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), size):
            with self.accelerator.autocast():  # type: ignore[attr-defined]
                rows = completion_logprobs(
                    causal_lm,
                    input_ids[start : start + size],
                    attention_mask[start : start + size],
                    logits_to_keep,
                    self.temperature,  # type: ignore[attr-defined]
                    fp32_head=self.args.cast_lm_head_to_fp32,  # type: ignore[attr-defined]
                )
            logps.append(rows[0])
            entropies.append(rows[1])
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None


def _causal_lm(model: Any) -> Any:
    """The transformers causal LM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model
