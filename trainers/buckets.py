"""Length bucketing: micro-batches of samples of similar length, with their shared padding cut.

TRL pads every sample of a generation batch to the batch's longest prompt (on the left) and
longest completion (on the right), shuffles the samples and splits them into the
micro-batches of gradient accumulation; each micro-batch then runs at the full padded
width. In multi-turn self-play the samples are a dialogue's turns, whose prompts (the
history so far) range from the opening alone to the whole dialogue, so part of that width
is padding (9% of the token slots in the performance suite's 4-turn step; more in longer
dialogues). :func:`length_buckets` sorts the samples by real length before splitting and
cuts from each micro-batch the columns that are padding in all of its rows.

The gradient of an optimisation step is unchanged (up to float rounding) for every TRL
loss type whose normaliser does not depend on how samples are grouped into micro-batches:
all but ``bnpo``, which divides by each micro-batch's own token count. Positions shift by
the cut left padding; rotary attention depends on relative positions only, so the
log-probabilities are the same up to rounding (tested in ``tests/test_buckets.py``).
"""

from __future__ import annotations

from typing import Any

import torch

# loss types whose gradient depends on which samples share a micro-batch
GROUPING_DEPENDENT_LOSSES = frozenset({"bnpo"})


def length_buckets(batch: dict[str, Any], chunks: int) -> list[dict[str, Any]]:
    """Split a TRL generation batch into ``chunks`` micro-batches of similar-length samples.

    Samples are ordered by real length (prompt plus completion tokens), cut into ``chunks``
    equal runs, and each run loses the prompt columns on its left and the completion columns
    on its right that are padding in every one of its rows. Every per-sample value (a tensor
    or list with one entry per sample) follows its samples; completion-aligned tensors
    (``[samples, completion width]``) are cut with the completion; scalars are shared.
    """
    prompt_mask, completion_mask = batch["prompt_mask"], batch["completion_mask"]
    samples, completion_width = completion_mask.shape
    if samples % chunks:
        raise ValueError(f"{samples} samples do not split into {chunks} equal micro-batches")
    lengths = prompt_mask.sum(dim=1) + completion_mask.sum(dim=1)
    order = torch.argsort(lengths, stable=True)
    size = samples // chunks
    buckets = []
    for start in range(0, samples, size):
        rows = order[start : start + size]
        prompt_columns = prompt_mask[rows].any(dim=0).nonzero()
        # at least one prompt column: the first completion token is predicted from it
        first = int(prompt_columns[0]) if len(prompt_columns) else prompt_mask.shape[1] - 1
        completion_columns = completion_mask[rows].any(dim=0).nonzero()
        # at least one column: TRL computes logits for logits_to_keep = the completion width
        width = int(completion_columns[-1]) + 1 if len(completion_columns) else 1
        bucket = {}
        for key, value in batch.items():
            bucket[key] = _take(key, value, rows, samples, completion_width, first, width)
        buckets.append(bucket)
    return buckets


def _take(
    key: str,
    value: Any,
    rows: torch.Tensor,
    samples: int,
    completion_width: int,
    first: int,
    width: int,
) -> Any:
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 or value.shape[0] != samples:
            return value
        value = value[rows.to(value.device)]
        if key.startswith("prompt_") and value.dim() == 2:
            return value[:, first:]
        if value.dim() >= 2 and value.shape[1] == completion_width:
            return value[:, :width]
        return value
    if isinstance(value, list) and len(value) == samples:
        return [value[i] for i in rows.tolist()]
    return value


class LengthBucketMixin:
    """Mixed into a TRL ``GRPOTrainer``: training micro-batches come from
    :func:`length_buckets` instead of TRL's random split (``length_bucketing`` turns it off;
    it is off for loss types whose gradient depends on the grouping)."""

    length_bucketing: bool = True

    def _prepare_inputs(self, generation_batch: Any) -> Any:
        args = self.args  # type: ignore[attr-defined]
        if (
            not self.length_bucketing
            or args.loss_type in GROUPING_DEPENDENT_LOSSES
            or not self.model.training  # type: ignore[attr-defined]
        ):
            return super()._prepare_inputs(generation_batch)  # type: ignore[misc]
        # TRL's schedule: generate once per steps_per_generation x num_iterations steps and
        # hand out the buffered micro-batches in turn
        generate_every = args.steps_per_generation * self.num_iterations  # type: ignore[attr-defined]
        if self._step % generate_every == 0 or self._buffered_inputs is None:  # type: ignore[attr-defined]
            batch = self._generate_and_score_completions(generation_batch)  # type: ignore[attr-defined]
            self._buffered_inputs = length_buckets(batch, args.steps_per_generation)
        return self._buffered_inputs[self._step % args.steps_per_generation]  # type: ignore[attr-defined]
