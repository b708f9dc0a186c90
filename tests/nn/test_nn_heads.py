"""Heads and the prediction decoder against plain references; tying; masking invariance; errors."""

from __future__ import annotations

import nn_reference as ref
import pytest
import torch
import torch.nn.functional as F

from maskmm.nn import (
    MaskedTokenHead,
    MatchingHead,
    PredictionDecoder,
    ProjectionHead,
    RegressionHead,
    TextConfig,
    TextEncoder,
    build_mlm_head,
)


def test_projection_head_is_unit_norm_linear() -> None:
    head = ProjectionHead(13, 7).double()
    x = torch.randn(5, 13, dtype=torch.float64, requires_grad=True)
    y = head(x)
    z = x @ head.proj.weight.T + head.proj.bias
    want = z / z.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(y, want)
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(5, dtype=torch.float64))
    g = torch.randn_like(y)
    torch.testing.assert_close(
        torch.autograd.grad((y * g).sum(), x)[0], torch.autograd.grad((want * g).sum(), x)[0]
    )
    raw = ProjectionHead(13, 7, normalize=False)
    assert not torch.allclose(raw(x.float()).norm(dim=-1), torch.ones(5))
    assert MatchingHead(13)(x.float()).shape == (5, 2)


def test_masked_token_head_reference_tying_and_fused_parts() -> None:
    enc = TextEncoder(TextConfig(vocab_size=31, dim=12, depth=1, num_heads=3, intermediate_size=20)).double()
    head = build_mlm_head(enc).double()
    assert head.weight is enc.word_embeddings.weight
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    t = ref.ln(head.norm, ref.gelu(x @ head.dense.weight.T + head.dense.bias))
    want = t @ enc.word_embeddings.weight.T + head.bias
    got = head(x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(F.linear(head.transform(x), head.weight, head.bias), got)
    got.sum().backward()
    assert enc.word_embeddings.weight.grad is not None and enc.word_embeddings.weight.grad.abs().sum() > 0
    untied = build_mlm_head(enc, tie=False)
    assert untied.weight is not enc.word_embeddings.weight
    with pytest.raises(ValueError, match="tie_to weight must have shape"):
        MaskedTokenHead(12, 30, tie_to=enc.word_embeddings)


def test_regression_head_variants() -> None:
    x = torch.randn(3, 4, 10, dtype=torch.float64)
    lin = RegressionHead(10, 6).double()
    torch.testing.assert_close(lin(x), x @ lin.net.weight.T + lin.net.bias)
    mlp = RegressionHead(10, 6, hidden_dim=8, norm=True).double()
    h = ref.ln(mlp.norm, x)
    want = ref.gelu(h @ mlp.net[0].weight.T + mlp.net[0].bias) @ mlp.net[2].weight.T + mlp.net[2].bias
    torch.testing.assert_close(mlp(x), want)


def test_decoder_depth0_is_per_token_mlp() -> None:
    dec = PredictionDecoder(10, 6, dim=14).double()
    x = torch.randn(2, 5, 10, dtype=torch.float64)
    torch.testing.assert_close(dec(x), ref.mlp(dec.mlp, x))


def test_decoder_with_cross_attention_matches_reference() -> None:
    dec = PredictionDecoder(10, 6, dim=12, depth=2, num_heads=3, cross_attend=True, context_dim=9).double()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 10, dtype=torch.float64, generator=g, requires_grad=True)
    ctx = torch.randn(3, 4, 9, dtype=torch.float64, generator=g)
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    ctx_valid = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)  # row 3: nothing
    got = dec(x, valid, context=ctx, context_valid=ctx_valid)
    h = x @ dec.embed.weight.T + dec.embed.bias
    for blk in dec.blocks:
        h = ref.pre_norm_block(blk, h, valid, ctx, ctx_valid)
    want = ref.ln(dec.norm, h) @ dec.head.weight.T + dec.head.bias
    torch.testing.assert_close(got, want)
    gx = torch.autograd.grad(got[valid].sum(), x)[0]
    torch.testing.assert_close(gx, torch.autograd.grad(want[valid].sum(), x)[0])
    # invalid context keys never matter
    ctx2 = ctx.masked_fill(~ctx_valid[..., None], 50.0)
    torch.testing.assert_close(dec(x, valid, context=ctx2, context_valid=ctx_valid)[valid], got[valid])


def test_decoder_empty_inputs_are_defined() -> None:
    dec = PredictionDecoder(10, 6, dim=12, depth=1, num_heads=3, cross_attend=True, context_dim=9).double()
    x = torch.randn(2, 4, 10, dtype=torch.float64)
    assert dec(x[:, :0], context=torch.randn(2, 3, 9, dtype=torch.float64)).shape == (2, 0, 6)
    assert dec(x[:0], context=torch.randn(0, 3, 9, dtype=torch.float64)).shape == (0, 4, 6)
    # no context token: the cross-attention adds nothing (same as a context nobody may attend)
    got = dec(x, context=torch.randn(2, 0, 9, dtype=torch.float64))
    ctx = torch.randn(2, 1, 9, dtype=torch.float64)
    torch.testing.assert_close(got, dec(x, context=ctx, context_valid=torch.zeros(2, 1, dtype=torch.bool)))
    assert PredictionDecoder(10, 6).double()(x[:, :0]).shape == (2, 0, 6)


def test_heads_name_the_argument_on_bad_input() -> None:
    x = torch.randn(4, 9)
    for head in (ProjectionHead(8, 3), MatchingHead(8), MaskedTokenHead(8, 11), RegressionHead(8, 2)):
        with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 8\], got \[4, 9\]"):
            head(x)
        with pytest.raises(TypeError, match="x must be a floating-point tensor"):
            head(torch.ones(4, 8, dtype=torch.long))


def test_decoder_errors() -> None:
    with pytest.raises(ValueError, match="cross_attend needs depth > 0"):
        PredictionDecoder(8, 8, cross_attend=True)
    dec = PredictionDecoder(8, 4, depth=1, num_heads=2, cross_attend=True)
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="context is required"):
        dec(x)
    with pytest.raises(ValueError, match="context must have shape"):
        dec(x, context=torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="valid must have shape"):
        dec(x, torch.ones(2, 4, dtype=torch.bool), context=torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="x must have shape"):
        PredictionDecoder(8, 4)(torch.randn(2, 3, 7))
