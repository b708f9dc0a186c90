"""AttentionMask: constructors, validation, caching, and conversions from xformers/Flex descriptions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from maskmm.attention import (
    AttentionMask,
    cu_seqlens_from_seqlens,
    masked_attention,
    varlen_from_xformers_bias,
)


def test_from_key_lengths_matches_boolean_and_is_prefix():
    lengths = torch.tensor([3, 0, 5, 9])  # 9 > max_len: all valid
    mask = AttentionMask.from_key_lengths(lengths, 5)
    want = torch.tensor(
        [[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(mask.key_valid, want)
    assert torch.equal(mask.key_lengths, torch.tensor([3, 0, 5, 5]))
    assert mask.is_key_prefix() and mask.batch_size == 4 and mask.key_len == 5 and mask.query_len is None


def test_prefix_detection_on_boolean_masks():
    prefix = AttentionMask.from_key_valid(torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool))
    assert prefix.key_lengths is None  # unknown until asked (no sync at construction)
    assert prefix.is_key_prefix()
    assert torch.equal(prefix.key_lengths, torch.tensor([2, 0]))
    holes = AttentionMask.from_key_valid(torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=torch.bool))
    assert not holes.is_key_prefix() and holes.key_lengths is None


def test_from_lengths_with_queries_and_from_cu_seqlens():
    mask = AttentionMask.from_lengths(torch.tensor([2, 3]), 4, torch.tensor([1, 0]), 2)
    assert torch.equal(mask.query_valid, torch.tensor([[1, 0], [0, 0]], dtype=torch.bool))
    cu = AttentionMask.from_cu_seqlens(
        torch.tensor([0, 2, 5], dtype=torch.int32), 4, torch.tensor([0, 1, 1], dtype=torch.int32), 2
    )
    assert torch.equal(cu.key_valid, mask.key_valid) and torch.equal(cu.query_valid, mask.query_valid)
    with pytest.raises(ValueError, match="max_query_len"):
        AttentionMask.from_lengths(torch.tensor([2]), 4, torch.tensor([1]))


def test_caches_are_built_once_and_shared():
    mask = AttentionMask.from_key_valid(torch.tensor([[1, 0, 1], [0, 0, 0]], dtype=torch.bool))
    first = mask.sdpa_mask()
    assert mask.sdpa_mask() is first and first.shape == (2, 1, 1, 3)
    # a sample without valid keys may attend key 0 in SDPA (zeroed afterwards)
    assert torch.equal(first[:, 0, 0], torch.tensor([[1, 0, 1], [1, 0, 0]], dtype=torch.bool))
    bias = mask.sdpa_bias(torch.float16)
    assert bias.dtype == torch.float16 and mask.sdpa_bias(torch.float16) is bias
    assert torch.equal(torch.isinf(bias), ~first)
    assert mask.row_valid(4) is mask.row_valid(4)
    assert mask.flex_block_mask(4) is mask.flex_block_mask(4)


def test_mask_validation_names_arguments():
    with pytest.raises(TypeError, match=r"key_valid must have dtype torch\.bool"):
        AttentionMask.from_key_valid(torch.ones(2, 3))
    with pytest.raises(ValueError, match="key_valid must have shape"):
        AttentionMask.from_key_valid(torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="query_valid must have shape"):
        AttentionMask.from_key_valid(torch.ones(2, 3, dtype=torch.bool), torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_lengths must have dtype"):
        AttentionMask.from_key_lengths(torch.tensor([1.0, 2.0]), 3)
    with pytest.raises(TypeError, match="max_len must be an int"):
        AttentionMask.from_key_lengths(torch.tensor([1, 2]), 3.0)
    with pytest.raises(TypeError, match="cu_seqlens_k must have dtype"):
        AttentionMask.from_cu_seqlens(torch.tensor([0.0, 1.0]), 1)


def test_from_seqlens_xformers_style():
    cu, max_len = cu_seqlens_from_seqlens([3, 0, 2])
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 3, 5] and max_len == 3
    mask = AttentionMask.from_seqlens([2, 3], q_seqlen=[1, 2], kv_padding=4)
    assert mask.key_valid.tolist() == [[True, True, False, False], [True, True, True, False]]
    assert mask.query_valid.tolist() == [[True, False], [True, True]]
    with pytest.raises(ValueError, match="kv_padding"):
        AttentionMask.from_seqlens([5], kv_padding=4)
    with pytest.raises(ValueError, match="q_seqlen has 1 entries"):
        AttentionMask.from_seqlens([2, 3], q_seqlen=[1])
    with pytest.raises(TypeError, match=r"kv_seqlen\[1\] must be an int"):
        AttentionMask.from_seqlens([2, 1.5])


def _fake_block_diagonal(q_lens, k_lens, cls_name="BlockDiagonalMask"):
    def info(lens):
        starts = [0]
        for n in lens:
            starts.append(starts[-1] + n)
        return SimpleNamespace(seqstart_py=starts, max_seqlen=max(lens))

    return type(cls_name, (), {"q_seqinfo": info(q_lens), "k_seqinfo": info(k_lens)})()


def test_from_xformers_bias_objects():
    bias = _fake_block_diagonal([2, 1], [3, 4])
    spec = varlen_from_xformers_bias(bias)
    assert spec.cu_seqlens_q.tolist() == [0, 2, 3] and spec.cu_seqlens_k.tolist() == [0, 3, 7]
    assert (spec.max_seqlen_q, spec.max_seqlen_k) == (2, 4)
    mask = AttentionMask.from_xformers_bias(bias)
    assert mask.key_valid.sum(-1).tolist() == [3, 4] and mask.query_valid.sum(-1).tolist() == [2, 1]
    padded_keys = type(
        "BlockDiagonalPaddedKeysMask",
        (),
        {
            "q_seqinfo": SimpleNamespace(seqstart_py=[0, 1, 3]),
            "k_seqinfo": SimpleNamespace(seqlen_py=[2, 5], padding=6),
        },
    )()
    mask = AttentionMask.from_xformers_bias(padded_keys)
    assert mask.key_len == 6 and mask.key_valid.sum(-1).tolist() == [2, 5]
    with pytest.raises(ValueError, match="non-causal"):
        AttentionMask.from_xformers_bias(_fake_block_diagonal([1], [1], "BlockDiagonalCausalMask"))
    with pytest.raises(TypeError, match="bias must be an xformers"):
        AttentionMask.from_xformers_bias(object())


def test_from_mask_mod_and_block_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    lengths = torch.tensor([3, 0, 6])
    q_lengths = torch.tensor([2, 4, 1])

    def padding(b, h, q_idx, kv_idx):
        return (kv_idx < lengths[b]) & (q_idx < q_lengths[b])

    mask = AttentionMask.from_mask_mod(padding, 3, 4, 6)
    assert mask.key_valid.sum(-1).tolist() == [3, 0, 6]
    # queries of a sample without keys attend nothing: the same as invalid (zero rows either way)
    assert mask.query_valid.sum(-1).tolist() == [2, 0, 1]
    block = create_block_mask(padding, 3, None, 4, 6, device="cpu")
    from_block = AttentionMask.from_block_mask(block)
    assert torch.equal(from_block.key_valid, mask.key_valid)
    assert from_block.flex_block_mask(4) is block  # the user's block mask is reused

    def causal(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx

    with pytest.raises(ValueError, match="not a padding mask"):
        AttentionMask.from_mask_mod(causal, 2, 4, 4)


def test_converted_masks_give_same_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 4, 8, generator=g) for _ in range(3))
    a = AttentionMask.from_seqlens([3, 1], q_seqlen=[4, 2], kv_padding=4)
    b = AttentionMask.from_mask_mod(
        lambda b_, h, qi, ki: (ki < torch.tensor([3, 1])[b_]) & (qi < torch.tensor([4, 2])[b_]), 2, 4, 4
    )
    torch.testing.assert_close(masked_attention(q, k, v, a), masked_attention(q, k, v, b))
