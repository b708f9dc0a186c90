"""Merged and cross-attention fusion: float64 reference, padding invariance, backends, errors."""

from __future__ import annotations

import nn_reference as ref
import pytest
import torch

from maskmm.nn import CrossAttentionFusion, FusionConfig, FusionOutput, MergedFusion, build_fusion_encoder

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


@pytest.mark.parametrize("kind", ["merged", "cross"])
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
    if kind == "merged":
        torch.testing.assert_close(
            padded.image[:, :7][image_valid], base.image[image_valid], atol=1e-5, rtol=1e-5
        )
    all_valid = torch.ones(3, 7, dtype=torch.bool)
    torch.testing.assert_close(
        model(image, None, text, text_valid).text, model(image, all_valid, text, text_valid).text
    )


@pytest.mark.parametrize("kind", ["merged", "cross"])
def test_backends_agree_and_compile_fullgraph(kind: str) -> None:
    model = build_fusion_encoder(_cfg(kind)).eval()
    image, image_valid, text, text_valid = _inputs(dtype=torch.float32)
    model.set_attention_backend("reference")
    want = model(image, image_valid, text, text_valid).text
    model.set_attention_backend("sdpa")
    torch.testing.assert_close(model(image, image_valid, text, text_valid).text, want, atol=1e-5, rtol=1e-5)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(
        compiled(image, image_valid, text, text_valid).text, want, atol=1e-5, rtol=1e-5
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
        FusionConfig(kind="coattn")


def test_triton_backend_under_interpreter_with_padding() -> None:
    from maskmm.attention import available_backends

    if "triton" not in available_backends(torch.device("cpu")):
        pytest.skip("the triton attention backend is not available on this machine")
    model = build_fusion_encoder(_cfg("merged", depth=1, attn_backend="triton")).eval()
    image, image_valid, text, text_valid = _inputs(b=2, li=3, lt=4, dtype=torch.float32)
    got = model(image, image_valid, text, text_valid)
    model.set_attention_backend("reference")
    want = model(image, image_valid, text, text_valid)
    torch.testing.assert_close(got.text, want.text, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(got.image, want.image, atol=2e-5, rtol=2e-5)
