"""Attention key/value caches for the decode loop: room reserved ahead, and reuse of prefixes.

**Reserved room.** transformers' dynamic cache appends each step's keys and values with a
concatenation, which copies the whole cache at every decoding step; for a batch of long
negotiation prompts that copy is a large share of the step. :func:`reserve_room` moves a
freshly filled cache into buffers with room for the tokens to come, which later steps write
in place (:class:`ReservedLayer`).

**Prefix reuse.** In a negotiation rollout most of every prompt was seen before: a seat's
persona, the rules and the dilemma open all of its turns, and the G dialogues of a group
open with the same text (their first prompts are identical). A :class:`PrefixStore` keeps the attention keys
and values of recently processed sequences; a new prompt looks up the stored sequence that
shares the longest prefix with it and only the rest is run through the model. The reused
keys and values are those the model computed for exactly the same tokens at the same
positions, so the result is the same computation (up to float rounding of batched matmuls).

The store knows nothing about weights: it must be emptied whenever the model changes
(the backend's ``prefix_caching()`` scope does that), or it would serve stale keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

# One layer's (keys, values), each [kv_heads, tokens, head_dim].
LayerKV = tuple[torch.Tensor, torch.Tensor]


class ReservedLayer(DynamicLayer):
    """A dynamic cache layer that writes new keys and values into room reserved ahead.

    ``keys`` and ``values`` are views of the first ``length`` positions of larger buffers;
    an update copies only the new positions (the buffers grow by ``reserve`` positions when
    full). Everything else behaves as :class:`DynamicLayer`.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, reserve: int):
        super().__init__()
        self.is_initialized = True
        self.device = keys.device
        self.reserve = max(reserve, 1)
        self.length = 0
        self._keys = self._values = None
        self._write(keys, values)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._write(key_states, value_states)
        return self.keys, self.values

    def _write(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        end = self.length + keys.shape[-2]
        if self._keys is None or end > self._keys.shape[-2]:
            self._grow(keys, values, end + self.reserve)
        self._keys[:, :, self.length : end] = keys
        self._values[:, :, self.length : end] = values
        self.length = end
        self._view()

    def _grow(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        batch, heads, _, dim = keys.shape
        new_keys = keys.new_zeros((batch, heads, capacity, dim))
        new_values = values.new_zeros((batch, heads, capacity, values.shape[-1]))
        if self.length:
            new_keys[:, :, : self.length] = self.keys
            new_values[:, :, : self.length] = self.values
        self._keys, self._values = new_keys, new_values

    def _view(self) -> None:
        self.keys = self._keys[:, :, : self.length]
        self.values = self._values[:, :, : self.length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._view()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop: give a negative number of tokens, got {tokens_to_remove}")
        self.length = max(self.length + tokens_to_remove, 0)
        self._view()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._keys = self._keys.repeat_interleave(repeats, dim=0)
        self._values = self._values.repeat_interleave(repeats, dim=0)
        self._view()


def plain_layers(cache: Any) -> list[DynamicLayer] | None:
    """The layers of a cache that simply holds every position's keys and values, else None
    (sliding-window or quantised caches can be neither given room nor cut into prefixes)."""
    if not isinstance(cache, DynamicCache):
        return None
    if any(type(layer) not in (DynamicLayer, ReservedLayer) for layer in cache.layers):
        return None
    return cache.layers


def reserve_room(cache: Any, tokens: int) -> Any:
    """Give every layer of a plain dynamic ``cache`` room for ``tokens`` more positions, so
    decoding writes in place instead of concatenating; other caches are returned as they are."""
    layers = plain_layers(cache)
    # layer by layer, so each old layer is freed as soon as its copy exists
    for index, layer in enumerate(layers or []):
        if not isinstance(layer, ReservedLayer):
            layers[index] = ReservedLayer(layer.keys, layer.values, tokens)
    return cache


def cache_from_blocks(blocks: list[LayerKV]) -> DynamicCache:
    """A dynamic cache holding ``blocks`` (one (keys, values) per layer, batch first)."""
    return DynamicCache(ddp_cache_data=blocks)


@dataclass(eq=False)  # entries are told apart by identity
class Prefix:
    """A stored sequence: its token ids and every layer's keys and values for them."""

    ids: np.ndarray
    layers: list[LayerKV]
    last_used: int = 0

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)


def common_prefix_length(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    different = np.flatnonzero(a[:n] != b[:n])
    return int(different[0]) if len(different) else n


class PrefixStore:
    """Stored prefixes within a memory budget, least recently used evicted first."""

    def __init__(self, budget_bytes: int):
        if budget_bytes <= 0:
            raise ValueError(f"prefix cache budget: must be positive, got {budget_bytes} bytes")
        self.budget_bytes = budget_bytes
        self.entries: list[Prefix] = []
        self.nbytes = 0
        self._clock = 0
        # for throughput reports: prompt tokens asked for, and tokens the model had to
        # process for them (shared prefixes computed once included)
        self.prompt_tokens = 0
        self.computed_tokens = 0

    def longest(self, ids: Sequence[int], limit: int | None = None) -> tuple[Prefix | None, int]:
        """The stored sequence sharing the longest prefix with ``ids`` (at most ``limit`` tokens)."""
        query = np.asarray(ids, dtype=np.int64)
        best, best_length = None, 0
        for entry in self.entries:
            length = common_prefix_length(entry.ids, query)
            if length > best_length:
                best, best_length = entry, length
        if limit is not None:
            best_length = min(best_length, limit)
        if best is not None and best_length > 0:
            self._clock += 1
            best.last_used = self._clock
            return best, best_length
        return None, 0

    def add(self, ids: Sequence[int], layers: list[LayerKV]) -> None:
        """Store ``layers`` (the keys and values of ``ids``); a stored prefix of it is replaced."""
        entry = Prefix(np.asarray(ids, dtype=np.int64), layers)
        if not len(entry.ids) or entry.nbytes > self.budget_bytes:
            return
        for old in list(self.entries):
            shared = common_prefix_length(old.ids, entry.ids)
            if shared == len(entry.ids):  # already held by a longer (or equal) entry
                return
            if shared == len(old.ids):  # the new entry extends it
                self._remove(old)
        self._clock += 1
        entry.last_used = self._clock
        self.entries.append(entry)
        self.nbytes += entry.nbytes
        while self.nbytes > self.budget_bytes:
            self._remove(min(self.entries, key=lambda e: e.last_used))

    def _remove(self, entry: Prefix) -> None:
        self.entries.remove(entry)
        self.nbytes -= entry.nbytes

    def __len__(self) -> int:
        return len(self.entries)


def shared_prefixes(prompts: Sequence[Sequence[int]], min_tokens: int) -> list[list[int]]:
    """Prefixes of at least ``min_tokens`` that two or more of ``prompts`` begin with.

    Sorted, prompts with a common beginning are neighbours, and every prefix two prompts
    share is a prefix of some neighbours' common prefix. Only the longest ones are returned
    (a neighbour pair whose common prefix is not shorter than the pairs beside it): each
    shorter shared prefix is a prefix of one of them, so a store holding them serves it too.
    Identical prompts yield the whole prompt.
    """
    order, shared = sorted_neighbours(prompts)
    found = []
    for index, length in enumerate(shared):
        before = shared[index - 1] if index > 0 else -1
        after = shared[index + 1] if index + 1 < len(shared) else -1
        if length >= min_tokens and length > before and length >= after:
            found.append(list(prompts[order[index]][:length]))
    return found


def sorted_neighbours(prompts: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """The prompts' indices in sorted order, and the common prefix length of each pair of
    neighbours in that order (sorted, prompts with a common beginning are neighbours)."""
    arrays = [np.asarray(p, dtype=np.int64) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: arrays[i].tolist())
    shared = [
        common_prefix_length(arrays[a], arrays[b]) for a, b in zip(order, order[1:], strict=False)
    ]
    return order, shared
