"""Decode-step attention that reads a shared prompt prefix once for all the rows holding it.

In a GRPO rollout the G dialogues of a group are played on one scenario, so at every turn
their prompts open with the same few hundred tokens (persona, rules, dilemma, and often the
whole first prompt). A plain batched decode keeps a copy of those keys and values in every
row of the cache and reads all of them at every step: at 32 rows of ~450 tokens the cache
(32 x 30 layers x 450 x 2 x 192 floats, 0.66 GB in fp32) is larger than the model's weights
(0.54 GB). Here the rows of a micro-batch are grouped by the prefix they share; each
group's prefix keys and values are kept once, and each row keeps only the rest of its
sequence (its suffix). A decode step attends from every query to its group's prefix as one
batch per group, and to its own suffix as before, and merges the two by their log-sum-exps,
which is exactly one softmax over both: the same attention, reading the prefix once per
group instead of once per row.

The computation is the one plain attention does, on the same keys and values (those the
prefill computed for the group's first row), up to float rounding; the backend's tests check
that greedy decoding gives the same tokens with and without it. The technique is known as
shared-prefix, bifurcated or cascade attention (Hydragen; FlashInfer's cascade kernels).

Only the decode steps (one new token per row) use it; the prefill runs the model's own
attention. It applies to models whose cache holds every position (no sliding windows) and
whose attention is plain softmax attention (no logit soft-capping).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import AttentionInterface

from llm.kv_cache import LayerKV, ReservedLayer, plain_layers, sorted_neighbours

ATTENTION_NAME = "negotiation_shared_prefix"


@dataclass
class GroupPlan:
    """Rows of a micro-batch in the order to decode them, and how they group.

    ``order`` lists prompt indices, grouped rows first; ``sizes[g]`` rows in a row form
    group g and share their first ``lengths[g]`` tokens. The last group may have length 0:
    the rows that share nothing worth keeping once.
    """

    order: list[int]
    sizes: list[int]
    lengths: list[int]


def plan_groups(prompts: Sequence[Sequence[int]], min_tokens: int) -> GroupPlan | None:
    """Group prompts by shared prefix so as to save the most cached tokens; None if no two
    prompts share ``min_tokens`` tokens.

    Sorted, prompts with a common beginning are neighbours and a run of neighbours shares
    the smallest of their pairwise common prefixes. A group of n rows sharing P tokens keeps
    (n - 1) x P fewer tokens; the runs maximising the total are found by dynamic programming
    over the sorted order (n is a micro-batch, at most a few dozen rows).
    """
    order, adjacent = sorted_neighbours(prompts)
    # saving[j]: the best total saving over the first j sorted rows; start[j]: where the
    # group ending at row j - 1 starts in that best split
    saving, start = [0] * (len(order) + 1), list(range(len(order) + 1))
    for end in range(1, len(order) + 1):
        saving[end], start[end] = saving[end - 1], end - 1
        shared = None
        for first in range(end - 2, -1, -1):
            shared = adjacent[first] if shared is None else min(shared, adjacent[first])
            if shared < min_tokens:
                break
            candidate = saving[first] + (end - first - 1) * shared
            if candidate > saving[end]:
                saving[end], start[end] = candidate, first
    if saving[-1] == 0:
        return None
    runs, end = [], len(order)
    while end > 0:
        runs.append((start[end], end))
        end = start[end]
    grouped, alone = [], []
    for first, end in reversed(runs):
        if end - first > 1:
            grouped.append((order[first:end], min(adjacent[first : end - 1])))
        else:
            alone.append(order[first])
    plan = GroupPlan(
        order=[i for rows, _ in grouped for i in rows] + alone,
        sizes=[len(rows) for rows, _ in grouped],
        lengths=[length for _, length in grouped],
    )
    if alone:
        plan.sizes.append(len(alone))
        plan.lengths.append(0)
    return plan


@dataclass(eq=False)
class SharedPrefixLayout:
    """What the attention needs beside the cache: the groups and their prefixes.

    ``prefixes[layer][g]`` holds group g's prefix (keys, values), each [kv_heads, tokens,
    head_dim], or None for a group without one. The cache itself holds each row's suffix;
    ``mask`` ([rows, suffix columns], True = a real token) is set before every forward.
    """

    sizes: list[int]
    lengths: list[int]
    prefixes: list[list[LayerKV | None]]
    mask: torch.Tensor | None = field(default=None, repr=False)
    fused: bool = True  # False: the hand-written attention everywhere (see _attend)
    _bias: torch.Tensor | None = field(default=None, repr=False)

    def set_mask(self, mask: torch.Tensor) -> None:
        self.mask, self._bias = mask.bool(), None

    def bias(self, dtype: torch.dtype) -> torch.Tensor:
        """The suffix mask as an additive bias, [rows, 1, 1, suffix], made once per step."""
        if self._bias is None or self._bias.dtype != dtype:
            bias = torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device)
            self._bias = bias.masked_fill(~self.mask, float("-inf"))[:, None, None, :]
        return self._bias

    def group_of(self, row: int) -> int:
        for group, end in enumerate(np.cumsum(self.sizes)):
            if row < end:
                return group
        raise IndexError(f"row {row} is outside the {sum(self.sizes)} rows of the layout")

    def select(self, kept: torch.Tensor) -> None:
        """Keep rows ``kept`` (ascending, as the cache's ``batch_select_indices`` gets them):
        groups stay contiguous; groups left empty are dropped with their prefixes."""
        groups = torch.repeat_interleave(torch.arange(len(self.sizes)), torch.tensor(self.sizes))[
            kept.cpu()
        ]
        counts = torch.bincount(groups, minlength=len(self.sizes)).tolist()
        live = [g for g, count in enumerate(counts) if count]
        self.sizes = [counts[g] for g in live]
        self.lengths = [self.lengths[g] for g in live]
        self.prefixes = [[layer[g] for g in live] for layer in self.prefixes]

    def row_layers(
        self, layers: Sequence[Any], mask: torch.Tensor, row: int, tokens: int
    ) -> list[LayerKV]:
        """The keys and values of the first ``tokens`` of row ``row``'s sequence, per layer:
        its group's prefix, then the first real columns (``mask``, the suffixes' mask) of its
        suffix in the cache ``layers``."""
        group = self.group_of(row)
        columns = mask[row].nonzero().squeeze(-1)[: tokens - self.lengths[group]]
        result = []
        for layer, prefix in zip(layers, (p[group] for p in self.prefixes), strict=True):
            keys, values = layer.keys[row][:, columns], layer.values[row][:, columns]
            if prefix is not None:
                keys = torch.cat([prefix[0], keys], dim=1)
                values = torch.cat([prefix[1], values], dim=1)
            result.append((keys, values))
        return result


def split_cache(
    cache: Any, mask: torch.Tensor, plan: GroupPlan, reserve: int
) -> tuple[SharedPrefixLayout, Any, torch.Tensor] | None:
    """Move a prefilled cache (rows in ``plan.order``) to the shared-prefix layout, in place.

    Each group's prefix is taken once, from its first row; every row keeps the rest of its
    real tokens, left-padded, with room for ``reserve`` more positions. Returns the layout,
    the cache (now holding the suffixes) and the suffixes' mask; None, with the cache
    untouched, for a cache that cannot be split (not one that simply holds every position).
    """
    layers = plain_layers(cache)
    if layers is None:
        return None
    real = mask.bool()
    row_prefix = torch.repeat_interleave(torch.tensor(plan.lengths), torch.tensor(plan.sizes))
    columns = [real[row].nonzero().squeeze(-1) for row in range(real.shape[0])]
    suffixes = [cols[int(skip) :] for cols, skip in zip(columns, row_prefix, strict=True)]
    width = max(len(s) for s in suffixes)
    index = torch.zeros((len(suffixes), width), dtype=torch.long, device=mask.device)
    suffix_mask = torch.zeros_like(index)
    for row, cols in enumerate(suffixes):
        if len(cols):
            index[row, width - len(cols) :] = cols
            suffix_mask[row, width - len(cols) :] = 1
    firsts = np.cumsum([0, *plan.sizes[:-1]])
    prefixes = []
    # converted in place, layer by layer: each layer's per-row copy is freed as soon as its
    # suffixes are made, so the split needs no room for a second whole cache
    for number, layer in enumerate(layers):
        heads, dim = layer.keys.shape[1], layer.keys.shape[3]
        gather = index[:, None, :, None].expand(-1, heads, -1, dim)
        layers[number] = ReservedLayer(
            layer.keys.gather(2, gather), layer.values.gather(2, gather), reserve
        )
        prefixes.append(
            [
                (
                    layer.keys[first][:, columns[first][:length]].contiguous(),
                    layer.values[first][:, columns[first][:length]].contiguous(),
                )
                if length
                else None
                for first, length in zip(firsts, plan.lengths, strict=True)
            ]
        )
    layout = SharedPrefixLayout(list(plan.sizes), list(plan.lengths), prefixes)
    return layout, cache, suffix_mask


# torch's CPU flash-attention kernel; unlike the public scaled_dot_product_attention it also
# returns the log-sum-exp the merge needs
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _attend(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    fused: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention and its log-sum-exp (float32), over the last two dimensions.

    On CPU, torch's flash-attention kernel returns both at once and reads strided keys
    without copying them; elsewhere (or with ``fused=False``) the same is computed by hand.
    """
    if fused and queries.device.type == "cpu" and _CPU_FLASH is not None:
        output, log_sum_exp = _CPU_FLASH(queries, keys, values, attn_mask=bias, scale=scale)[:2]
        return output, log_sum_exp
    scores = (queries @ keys.transpose(-1, -2)).float() * scale
    if bias is not None:
        scores = scores + bias
    log_sum_exp = scores.logsumexp(dim=-1)
    weights = (scores - log_sum_exp.unsqueeze(-1)).exp().to(values.dtype)
    return weights @ values, log_sum_exp


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    shared_prefix: SharedPrefixLayout | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """One decode step's attention (a transformers attention function).

    ``query`` is [rows, heads, 1, head_dim]; ``key`` and ``value`` the rows' suffixes
    [rows, kv_heads, suffix, head_dim] (the new token included). Query heads sharing a
    key/value head attend together, as grouped-query attention does. Each row attends to
    its suffix, its group attends to the group's prefix as one batch of queries, and the
    two results are merged by their softmax masses (log-sum-exps), which is exactly one
    softmax over prefix and suffix together.
    """
    layout = shared_prefix
    if layout is None or layout.mask is None:
        raise RuntimeError(
            f"{ATTENTION_NAME} attention needs the shared_prefix layout; it is only switched "
            "on for the decode steps of TransformersBackend"
        )
    if kwargs.get("softcap") is not None or dropout:
        raise ValueError(f"{ATTENTION_NAME} attention supports neither soft-capping nor dropout")
    rows, heads, steps, dim = query.shape
    if steps != 1:
        raise ValueError(f"{ATTENTION_NAME} attention decodes one token per row, got {steps}")
    kv_heads = key.shape[1]
    share = heads // kv_heads  # query heads per key/value head
    scale = scaling if scaling is not None else dim**-0.5
    queries = query.reshape(rows, kv_heads, share, dim)
    output, suffix_mass = _attend(
        queries, key, value, layout.bias(query.dtype), scale, layout.fused
    )
    output = output.reshape(rows, kv_heads, share, dim)
    first = 0
    for size, prefix in zip(layout.sizes, layout.prefixes[module.layer_idx], strict=True):
        group = slice(first, first + size)
        first += size
        if prefix is None:
            continue
        # the group's queries as one batch per key/value head: the prefix is read once
        grouped = queries[group].transpose(0, 1).reshape(1, kv_heads, size * share, dim)
        from_prefix, prefix_mass = _attend(
            grouped, prefix[0][None], prefix[1][None], None, scale, layout.fused
        )
        from_prefix = from_prefix.reshape(kv_heads, size, share, dim).transpose(0, 1)
        prefix_mass = prefix_mass.reshape(kv_heads, size, share).transpose(0, 1)
        # the prefix's share of the joint softmax: e^a / (e^a + e^b) = sigmoid(a - b)
        weight = torch.sigmoid(prefix_mass - suffix_mass[group].reshape(size, kv_heads, share))
        suffix_part = output[group].float()
        merged = suffix_part + (from_prefix.float() - suffix_part) * weight.unsqueeze(-1)
        output[group] = merged.to(output.dtype)
    return output.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)


def supports_shared_prefix(model: torch.nn.Module) -> bool:
    """Whether ``model``'s attention is plain softmax attention this module can stand in for."""
    config = getattr(model, "config", None)
    return (
        config is not None
        and getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
        and getattr(config, "attn_logit_softcapping", None) is None
    )


@contextmanager
def shared_prefix_attention_on(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model``'s attention through :func:`shared_prefix_attention` inside the scope.

    Under this name transformers builds no attention mask (the layout carries the rows'
    suffix mask) and dispatches every attention layer to the function above.
    """
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
