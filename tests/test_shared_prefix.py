"""Shared-prefix decode attention on its own: grouping, cache split, and the attention itself.

The attention is checked against torch's own attention over each row's whole sequence
(prefix and suffix concatenated), on small random tensors standing in for a model's keys and
values; the backend's use of it on the real model is tested in test_transformers_backend.py.
"""

import pytest
import torch
import torch.nn.functional as F

from llm.kv_cache import cache_from_blocks, plain_layers
from llm.shared_prefix import (
    SharedPrefixLayout,
    plan_groups,
    shared_prefix_attention,
    split_cache,
)


class Layer:
    """Stands in for an attention module: the function only reads its layer index."""

    layer_idx = 0


def test_identical_prompts_form_one_group_sharing_the_whole_prompt():
    prompt = list(range(100, 140))
    plan = plan_groups([prompt] * 3, min_tokens=8)
    assert sorted(plan.order) == [0, 1, 2]
    assert plan.sizes == [3] and plan.lengths == [40]


def test_groups_are_contiguous_and_prompts_sharing_nothing_come_last():
    first, second = list(range(100, 140)), list(range(500, 560))
    prompts = [first + [1], second + [2], [7, 8, 9], first + [3], second + [4], first + [5]]
    plan = plan_groups(prompts, min_tokens=8)
    groups, start = [], 0
    for size in plan.sizes:
        groups.append(sorted(plan.order[start : start + size]))
        start += size
    assert sorted(zip(plan.lengths, groups, strict=True)) == [
        (0, [2]),
        (40, [0, 3, 5]),
        (60, [1, 4]),
    ]
    assert plan.lengths[-1] == 0 and sorted(plan.order) == list(range(6))


def test_grouping_maximises_the_tokens_kept_once():
    # Two identical prompts and three that share only their first 40 tokens with them.
    base = list(range(1000, 1040))
    others = [base + [1], base + [2], base + [3]]
    # a 50-token pair: one group of five sharing 40 keeps 4 x 40 = 160 tokens once,
    # the pair and the three apart only 50 + 2 x 40 = 130
    pair = base + list(range(10))
    plan = plan_groups([pair, pair, *others], min_tokens=8)
    assert plan.sizes == [5] and plan.lengths == [40]
    # a 100-token pair: apart, 100 + 80 = 180 beats 160
    pair = base + list(range(60))
    plan = plan_groups([pair, pair, *others], min_tokens=8)
    assert sorted(zip(plan.sizes, plan.lengths, strict=True)) == [(2, 100), (3, 40)]


def test_no_plan_when_no_two_prompts_share_enough():
    assert plan_groups([[1, 2, 3, 4], [1, 2, 3, 5], [9]], min_tokens=8) is None
    assert plan_groups([[1, 2, 3]], min_tokens=1) is None


def reference_attention(queries, keys, values, mask):
    """torch's attention over each row's whole sequence (rows, heads, 1, dim)."""
    share = queries.shape[1] // keys.shape[1]
    keys, values = keys.repeat_interleave(share, 1), values.repeat_interleave(share, 1)
    output = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask[:, None, None])
    return output.transpose(1, 2)


@pytest.mark.parametrize(
    ("dtype", "fused", "tolerance"),
    [(torch.float32, True, 1e-5), (torch.float32, False, 1e-5), (torch.bfloat16, True, 3e-2)],
)
def test_attention_equals_plain_attention_over_prefix_and_suffix(dtype, fused, tolerance):
    torch.manual_seed(0)
    rows, heads, kv_heads, dim, prefix, suffix = 5, 6, 2, 16, 12, 7
    queries = torch.randn(rows, heads, 1, dim, dtype=dtype)
    # group 0: rows 0-2 share a 12-token prefix; group 1: rows 3-4 share nothing
    shared_keys = torch.randn(kv_heads, prefix, dim, dtype=dtype)
    shared_values = torch.randn(kv_heads, prefix, dim, dtype=dtype)
    keys = torch.randn(rows, kv_heads, suffix, dim, dtype=dtype)
    values = torch.randn(rows, kv_heads, suffix, dim, dtype=dtype)
    mask = torch.ones(rows, suffix, dtype=torch.bool)
    mask[1, :3] = False  # left padding of shorter suffixes
    mask[4, :5] = False
    layout = SharedPrefixLayout([3, 2], [prefix, 0], [[(shared_keys, shared_values), None]])
    layout.fused = fused
    layout.set_mask(mask)
    output, _ = shared_prefix_attention(Layer(), queries, keys, values, None, shared_prefix=layout)

    whole_keys = torch.cat([shared_keys.expand(3, -1, -1, -1), keys[:3]], dim=2)
    whole_values = torch.cat([shared_values.expand(3, -1, -1, -1), values[:3]], dim=2)
    whole_mask = torch.cat([torch.ones(3, prefix, dtype=torch.bool), mask[:3]], dim=1)
    expected = torch.cat(
        [
            reference_attention(
                queries[:3].float(), whole_keys.float(), whole_values.float(), whole_mask
            ),
            reference_attention(
                queries[3:].float(), keys[3:].float(), values[3:].float(), mask[3:]
            ),
        ]
    )
    assert output.shape == (rows, 1, heads, dim) and output.dtype == dtype
    assert torch.allclose(output.float(), expected, atol=tolerance, rtol=tolerance)


def test_attention_refuses_what_it_cannot_do():
    queries, keys = torch.randn(2, 4, 1, 8), torch.randn(2, 2, 3, 8)
    with pytest.raises(RuntimeError, match="layout"):
        shared_prefix_attention(Layer(), queries, keys, keys, None)
    layout = SharedPrefixLayout([2], [0], [[None]])
    layout.set_mask(torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="one token per row"):
        shared_prefix_attention(
            Layer(), torch.randn(2, 4, 2, 8), keys, keys, None, shared_prefix=layout
        )


def test_split_cache_keeps_each_prefix_once_and_every_row_can_be_rebuilt():
    torch.manual_seed(0)
    # rows 0-1 share their first 3 real tokens; row 2 shares nothing; left padding differs
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
    keys, values = torch.randn(3, 2, 6, 4), torch.randn(3, 2, 6, 4)
    shared = keys[0, :, 1:4]
    keys[1, :, :3], values[1, :, :3] = shared, values[0, :, 1:4]
    plan = plan_groups([[1, 2, 3, 4, 5], [1, 2, 3, 6, 7, 8], [9, 9, 9]], min_tokens=3)
    assert plan.order == [0, 1, 2] and plan.sizes == [2, 1] and plan.lengths == [3, 0]
    layout, cache, suffix_mask = split_cache(cache_from_blocks([(keys, values)]), mask, plan, 4)
    assert torch.equal(layout.prefixes[0][0][0], shared) and layout.prefixes[0][1] is None
    assert suffix_mask.tolist() == [[0, 1, 1], [1, 1, 1], [1, 1, 1]]
    layers = plain_layers(cache)
    for row in range(3):
        real = mask[row].nonzero().squeeze(-1)
        rebuilt_keys, rebuilt_values = layout.row_layers(layers, suffix_mask, row, len(real))[0]
        assert torch.equal(rebuilt_keys, keys[row][:, real])
        assert torch.equal(rebuilt_values, values[row][:, real])


def test_selecting_rows_keeps_groups_contiguous_and_drops_emptied_groups():
    layout = SharedPrefixLayout([2, 3, 1], [5, 4, 0], [["a", "b", None]])
    layout.select(torch.tensor([1, 3, 4]))
    assert layout.sizes == [1, 2] and layout.lengths == [5, 4]
    assert layout.prefixes == [["a", "b"]]
    assert layout.group_of(0) == 0 and layout.group_of(2) == 1
    with pytest.raises(IndexError, match="row 3"):
        layout.group_of(3)
