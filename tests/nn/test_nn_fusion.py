"""Merged, cross-attention and co-attention fusion: float64 reference, padding invariance,
empty inputs, backends, errors."""

from __future__ import annotations

import nn_reference as ref
import pytest
import torch

from maskmm.nn import (
    CoAttentionFusion,
    CrossAttentionFusion,
    FusionConfig,
    FusionOutput,
    MergedFusion,
    build_fusion_encoder,
)

KINDS = ["merged", "cross", "coattention"]

D = 20


def _cfg(kind: str, **kw) -> FusionConfig:
    base = dict(kind=kind, dim=D, depth=2, num_heads=4, intermediate_size=28, dropout=0.0, attn_dropout=0.0)
    return FusionConfig(**{**base, **kw})


def _inputs(b=3, li=7, lt=5, image_dim=D, dtype=torch.float64):
    g = torch.Generator().manual_seed(5)
    image = torch.randn(b, li, image_dim, generator=g, dtype=dtype)
    text = torch.randn(b, lt, D, generator=g, dtype=dtype)
    image_valid = torch.rand(b, li, generator=g) > 0.3
    image_valid[:, 0] = True
    text_valid = torch.arange(lt)[None] < torch.tensor([lt, 2, 1][:b])[:, None]
    return image, image_valid, text, text_valid


@pytest.mark.parametrize("image_dim", [D, 12])
def test_merged_matches_reference_values_and_grads(image_dim: int) -> None:
    model = MergedFusion(_cfg("merged", image_dim=image_dim)).double()
    with torch.no_grad():
        model.modality_embed.normal_()
    image, image_valid, text, text_valid = _inputs(image_dim=image_dim)
    image.requires_grad_(True)
    out = model(image, image_valid, text, text_valid, return_layers=[0])
    assert isinstance(out, FusionOutput)
    want_t, want_i, layers = ref.merged_fusion(model, image, image_valid, text, text_valid)
    torch.testing.assert_close(out.text, want_t, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out.image, want_i, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out.hidden_states[0].image, layers[0][:, :7])
    torch.testing.assert_close(out.hidden_states[0].text, layers[0][:, 7:])
    loss_g = out.text[text_valid].sum() + out.image[image_valid].square().sum()
    loss_w = want_t[text_valid].sum() + want_i[image_valid].square().sum()
    params = [image, model.layers[0].attn.qkv.weight, model.modality_embed]
    for a, b in zip(torch.autograd.grad(loss_g, params), torch.autograd.grad(loss_w, params)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_cross_matches_reference_values_and_grads() -> None:
    model = CrossAttentionFusion(_cfg("cross", image_dim=12)).double()
    image, image_valid, text, text_valid = _inputs(image_dim=12)
    text.requires_grad_(True)
    out = model(image, image_valid, text, text_valid, return_layers=[-1])
    want, layers = ref.cross_fusion(model, image, image_valid, text, text_valid)
    assert out.image is None and out.hidden_states[0].image is None
    torch.testing.assert_close(out.text, want, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out.hidden_states[0].text, layers[-1])
    params = [text, model.layers[1].cross_attn.kv.weight]
    got = torch.autograd.grad(out.text[text_valid].sum(), params)
    exp = torch.autograd.grad(want[text_valid].sum(), params)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("image_dim", [D, 12])
def test_co_attention_matches_reference_values_and_grads(image_dim: int) -> None:
    model = CoAttentionFusion(_cfg("coattention", depth=3, image_dim=image_dim)).double()
    assert (model.image_proj is None) == (image_dim == D)
    image, image_valid, text, text_valid = _inputs(image_dim=image_dim)
    image.requires_grad_(True)
    text.requires_grad_(True)
    out = model(image, image_valid, text, text_valid, return_layers=[-1, 0])
    want_t, want_i, layers = ref.co_fusion(model, image, image_valid, text, text_valid)
    assert out.text.shape == (3, 5, D) and out.image.shape == (3, 7, D)
    torch.testing.assert_close(out.text, want_t, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out.image, want_i, atol=1e-10, rtol=1e-10)
    for state, (lt, li) in zip(out.hidden_states, (layers[2], layers[0])):
        torch.testing.assert_close(state.text, lt)
        torch.testing.assert_close(state.image, li)
    params = [
        image,
        text,
        model.text_layers[0].cross_attn.kv.weight,
        model.image_layers[1].cross_attn.q.weight,
        model.image_layers[2].attn.qkv.weight,
    ]
    loss_g = out.text[text_valid].sin().sum() + out.image[image_valid].square().sum()
    loss_w = want_t[text_valid].sin().sum() + want_i[image_valid].square().sum()
    for a, b in zip(torch.autograd.grad(loss_g, params), torch.autograd.grad(loss_w, params)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_co_attention_streams_see_each_other_in_parallel() -> None:
    model = CoAttentionFusion(_cfg("coattention", depth=1)).double()
    image, image_valid, text, text_valid = _inputs()
    out = model(image, image_valid, text, text_valid)
    # layer 0 of each stream reads the other stream's *input*, not its updated states
    blk_t, blk_i = model.text_layers[0], model.image_layers[0]
    torch.testing.assert_close(out.text, ref.post_norm_block(blk_t, text, text_valid, image, image_valid))
    torch.testing.assert_close(out.image, ref.post_norm_block(blk_i, image, image_valid, text, text_valid))
    # changing the text changes the image states (and vice versa)
    other = model(image, image_valid, text + 1.0, text_valid)
    assert not torch.allclose(other.image, out.image)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_never_changes_valid_states(kind: str) -> None:
    model = build_fusion_encoder(_cfg(kind)).eval()
    image, image_valid, text, text_valid = _inputs(dtype=torch.float32)
    base = model(image, image_valid, text, text_valid)
    image2 = torch.cat([image, torch.randn(3, 4, D)], 1)
    text2 = torch.cat([text, torch.randn(3, 3, D)], 1)
    iv2 = torch.cat([image_valid, torch.zeros(3, 4, dtype=torch.bool)], 1)
    tv2 = torch.cat([text_valid, torch.zeros(3, 3, dtype=torch.bool)], 1)
    # garbage at already-invalid positions too
    text2[:, :5][~text_valid] = 100.0
    image2[:, :7][~image_valid] = -100.0
    padded = model(image2, iv2, text2, tv2)
    torch.testing.assert_close(padded.text[:, :5][text_valid], base.text[text_valid], atol=1e-5, rtol=1e-5)
    if kind != "cross":
        torch.testing.assert_close(
            padded.image[:, :7][image_valid], base.image[image_valid], atol=1e-5, rtol=1e-5
        )
    all_valid = torch.ones(3, 7, dtype=torch.bool)
    torch.testing.assert_close(
        model(image, None, text, text_valid).text, model(image, all_valid, text, text_valid).text
    )


def test_bad_inputs_name_the_argument() -> None:
    model = MergedFusion(_cfg("merged"))
    image, image_valid, text, text_valid = _inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match="image_valid must have shape"):
        model(image, image_valid[:, :-1], text, text_valid)
    with pytest.raises(ValueError, match="text_valid must have shape"):
        model(image, image_valid, text, text_valid[:, :-1])
    with pytest.raises(ValueError, match="text must have shape"):
        model(image, image_valid, text[..., :-1], text_valid)
    with pytest.raises(ValueError, match="image must have shape"):
        model(image[:2], image_valid, text, text_valid)
    with pytest.raises(ValueError, match=r"FusionConfig.kind"):
        FusionConfig(kind="two-stream")
    with pytest.raises(TypeError, match="config must be a FusionConfig"):
        CoAttentionFusion(_cfg("merged").__dict__)
    co = CoAttentionFusion(_cfg("coattention"))
    with pytest.raises(ValueError, match="image_valid must have shape"):
        co(image, image_valid[:, :-1], text, text_valid)
    with pytest.raises(TypeError, match="text_valid"):
        co(image, image_valid, text, text_valid.long())
    with pytest.raises(ValueError, match="return_layers"):
        co(image, image_valid, text, text_valid, return_layers=[2])


@pytest.mark.parametrize("kind", KINDS)
def test_empty_inputs_are_defined(kind: str) -> None:
    """No image token: cross-attention contributes zero; no text token or no sample: empty
    outputs of the right shape."""
    model = build_fusion_encoder(_cfg(kind)).double().eval()
    assert model.image_states == (kind != "cross")
    image, _, text, text_valid = _inputs()
    no_image = model(image[:, :0], None, text, text_valid)
    assert no_image.text.shape == (3, 5, D) and torch.isfinite(no_image.text).all()
    if kind != "merged":  # same as one image token that may not be attended
        masked = model(image[:, :1], torch.zeros(3, 1, dtype=torch.bool), text, text_valid)
        torch.testing.assert_close(no_image.text, masked.text)
    else:
        torch.testing.assert_close(
            no_image.text, ref.merged_fusion(model, image[:, :0], None, text, text_valid)[0]
        )
    no_text = model(image, None, text[:, :0], text_valid[:, :0])
    assert no_text.text.shape == (3, 0, D)
    if model.image_states:
        assert no_text.image.shape == (3, 7, D) and torch.isfinite(no_text.image).all()
    empty = model(image[:0], None, text[:0], text_valid[:0], return_layers=[0])
    assert empty.text.shape == (0, 5, D) and empty.hidden_states[0].text.shape == (0, 5, D)
