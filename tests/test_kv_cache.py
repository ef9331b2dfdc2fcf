"""The prefix store on its own: longest-prefix lookup, replacement, eviction, shared prefixes.

Keys and values here are small random tensors standing in for a model's (one layer, one
head); the backend's use of the store on the real model is tested in
test_transformers_backend.py.
"""

import pytest
import torch
from transformers.cache_utils import DynamicCache

from llm.kv_cache import (
    PrefixStore,
    ReservedLayer,
    cache_from_blocks,
    common_prefix_length,
    plain_layers,
    reserve_room,
    shared_prefixes,
)


def kv(length: int, dim: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.randn(1, length, dim), torch.randn(1, length, dim))]


BYTES_PER_TOKEN = 2 * 4 * 4  # keys and values, 4 float32 each


def test_lookup_finds_the_entry_sharing_the_longest_prefix_within_the_limit():
    store = PrefixStore(budget_bytes=10_000)
    store.add([1, 2, 3, 4], kv(4))
    store.add([1, 2, 9, 9, 9], kv(5))
    entry, length = store.longest([1, 2, 9, 9, 7])
    assert entry.ids.tolist() == [1, 2, 9, 9, 9] and length == 4
    entry, length = store.longest([1, 2, 3, 4, 5], limit=3)
    assert entry.ids.tolist() == [1, 2, 3, 4] and length == 3
    assert store.longest([5, 1, 2]) == (None, 0)


def test_an_extension_replaces_its_prefix_and_a_held_prefix_is_not_stored_twice():
    store = PrefixStore(budget_bytes=10_000)
    store.add([1, 2, 3], kv(3))
    store.add([1, 2, 3, 4, 5], kv(5))
    assert [e.ids.tolist() for e in store.entries] == [[1, 2, 3, 4, 5]]
    store.add([1, 2], kv(2))
    assert len(store) == 1 and store.nbytes == 5 * BYTES_PER_TOKEN


def test_the_least_recently_used_entries_leave_when_the_budget_is_exceeded():
    store = PrefixStore(budget_bytes=10 * BYTES_PER_TOKEN)
    store.add([1] * 4, kv(4))
    store.add([2] * 4, kv(4))
    store.longest([1, 1])  # [1]*4 is now the more recently used
    store.add([3] * 4, kv(4))
    assert sorted(e.ids[0] for e in store.entries) == [1, 3]
    assert store.nbytes <= store.budget_bytes
    store.add([4] * 11, kv(11))  # larger than the whole budget: not stored, nothing evicted
    assert len(store) == 2
    with pytest.raises(ValueError, match="budget"):
        PrefixStore(budget_bytes=0)


def test_shared_prefixes_are_the_longest_ones_two_prompts_begin_with():
    system, dilemma = list(range(100, 140)), list(range(200, 240))
    opening = system + dilemma
    prompts = [
        opening,  # a group's identical openings
        opening,
        system + [7] * 40,  # same system text, another request
        [9] * 50,  # shares nothing
        system + dilemma + [1] * 5,  # the opening followed by a turn
    ]
    found = shared_prefixes(prompts, min_tokens=32)
    assert sorted(found) == sorted([opening])
    # the system text alone is a prefix of the opening: a store holding it serves both
    assert common_prefix_length(torch.tensor(found[0]).numpy(), torch.tensor(system).numpy()) == 40
    assert shared_prefixes([[1, 2, 3], [1, 2, 4]], min_tokens=32) == []
    assert shared_prefixes([system, system + [1], [5] + system], min_tokens=8) == [system]


def test_a_reserved_layer_holds_what_concatenation_would_through_growth_and_row_drops():
    def states(length, rows=3):
        return torch.randn(rows, 2, length, 4), torch.randn(rows, 2, length, 4)

    first = states(5)
    reference = cache_from_blocks([first])
    cache = reserve_room(cache_from_blocks([first]), tokens=2)
    assert isinstance(cache.layers[0], ReservedLayer)
    for step in range(5):  # the third write outgrows the reserved room
        new = states(1, rows=cache.layers[0].keys.shape[0])
        expected = reference.update(*new, layer_idx=0)
        got = cache.update(*new, layer_idx=0)
        assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
        if step == 1:  # a finished row leaves the batch
            rows = torch.tensor([0, 2])
            reference.batch_select_indices(rows)
            cache.batch_select_indices(rows)
    assert cache.get_seq_length() == reference.get_seq_length() == 10
    assert torch.equal(cache.layers[0].keys, reference.layers[0].keys)
    assert plain_layers(cache) is not None and plain_layers(object()) is None
    assert isinstance(reserve_room(DynamicCache(), tokens=4), DynamicCache)  # empty: unchanged
