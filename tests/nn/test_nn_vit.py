"""ViT image encoder: values and gradients against a float64 reference, masking modes,
resolution changes, empty inputs, checkpointing with dropout, autocast and input errors
(backends, checkpointing and torch.compile of every encoder: test_nn_backends.py)."""

from __future__ import annotations

import nn_reference as ref
import pytest
import torch

from maskmm.masking import PatchMasking, random_patch_masking
from maskmm.nn import VisionConfig, VisionTransformer

CFG = VisionConfig(image_size=(24, 40), patch_size=8, dim=24, depth=3, num_heads=3, mlp_ratio=2.0)  # 3x5 grid


def _model(dtype=torch.float64, **kw) -> VisionTransformer:
    cfg = VisionConfig(**{**CFG.__dict__, **kw})
    return VisionTransformer(cfg).to(dtype)


def _masking(b: int, n: int, ratio: float, seed: int = 1):
    return random_patch_masking(b, n, ratio, generator=torch.Generator().manual_seed(seed))


def test_forward_and_grads_match_reference_float64() -> None:
    model = _model(attn_backend="sdpa")
    images = torch.randn(3, 3, 24, 40, dtype=torch.float64, requires_grad=True)
    out = model(images, return_layers=[0, -1])
    want, layers = ref.vit(model, images)
    torch.testing.assert_close(out.last_hidden, want, atol=1e-10, rtol=1e-10)
    assert out.valid is None and out.last_hidden.shape == (3, 16, 24)
    torch.testing.assert_close(out.hidden_states[0], layers[0])
    torch.testing.assert_close(out.hidden_states[1], layers[2])
    g = torch.randn_like(want)
    params = [
        images,
        model.pos_embed,
        model.cls_token,
        model.blocks[1].attn.qkv.weight,
        model.patch_embed.proj.weight,
    ]
    got = torch.autograd.grad((out.last_hidden * g).sum(), params)
    exp = torch.autograd.grad((want * g).sum(), params)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_drop_mode_equals_encoding_kept_tokens_alone() -> None:
    model = _model()
    images = torch.randn(4, 3, 24, 40, dtype=torch.float64)
    m = _masking(4, 15, 0.6)
    out = model(images, masking=m, mask_mode="drop")
    assert out.last_hidden.shape == (4, 1 + 6, 24)
    want, _ = ref.vit(model, images, keep=m.ids_keep)
    torch.testing.assert_close(out.last_hidden, want, atol=1e-10, rtol=1e-10)


def test_token_mode_replaces_masked_patches_by_mask_token() -> None:
    model = _model()
    images = torch.randn(2, 3, 24, 40, dtype=torch.float64)
    m = _masking(2, 15, 0.4)
    out = model(images, masking=m, mask_mode="token")
    want, _ = ref.vit(model, images, token_mask=m.mask)
    torch.testing.assert_close(out.last_hidden, want, atol=1e-10, rtol=1e-10)
    # masked patches' content no longer matters
    images2 = images.clone()
    images2[:, :, :8, :8] += 5.0  # patch 0
    out2 = model(images2, masking=m, mask_mode="token")
    same = torch.allclose(out.last_hidden, out2.last_hidden)
    assert same == bool(m.mask[:, 0].all())


@pytest.mark.parametrize("ratio", [0.0, 0.5, 14 / 15])
def test_insert_mask_tokens_restores_raster_order(ratio: float) -> None:
    model = _model()
    images = torch.randn(3, 3, 24, 40, dtype=torch.float64)
    m = _masking(3, 15, ratio, seed=4)
    x = model(images, masking=m).last_hidden
    full = model.insert_mask_tokens(x, m)
    assert full.shape == (3, 16, 24)
    torch.testing.assert_close(full[:, 0], x[:, 0])
    pos = model.pos_embed[0, 1:]
    for b in range(3):
        kept = m.ids_keep[b].tolist()
        for j in range(15):
            if j in kept:
                torch.testing.assert_close(full[b, 1 + j], x[b, 1 + kept.index(j)])
            else:
                torch.testing.assert_close(full[b, 1 + j], model.mask_token[0, 0] + pos[j])
    # gradient reaches the mask token only when something is masked
    full.sum().backward()
    assert (model.mask_token.grad.abs().sum() > 0) == bool(m.mask.any())


def test_nothing_kept_and_empty_batch_are_defined() -> None:
    model = _model()
    images = torch.randn(2, 3, 24, 40, dtype=torch.float64)
    all_masked = PatchMasking(
        torch.ones(2, 15, dtype=torch.bool),
        torch.zeros(2, 0, dtype=torch.long),
        torch.arange(15).expand(2, 15).contiguous(),
    )
    x = model(images, masking=all_masked).last_hidden  # the CLS token alone
    want, _ = ref.vit(model, images, keep=all_masked.ids_keep)
    torch.testing.assert_close(x, want, atol=1e-10, rtol=1e-10)
    assert x.shape == (2, 1, 24)
    full = model.insert_mask_tokens(x, all_masked)
    torch.testing.assert_close(full[:, 1:], (model.mask_token + model.pos_embed[:, 1:]).expand(2, -1, -1))
    empty = model(images[:0], masking=_masking(0, 15, 0.5), return_layers=[0])
    assert empty.last_hidden.shape == (0, 1 + 7, 24) and empty.hidden_states[0].shape == (0, 8, 24)
    assert model(images[:0], masking=_masking(0, 15, 0.5), mask_mode="token").last_hidden.shape == (0, 16, 24)


def test_other_resolution_uses_bicubic_resampled_positions() -> None:
    model = _model()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)  # 4x4 grid instead of 3x5
    out = model(images)
    want, _ = ref.vit(model, images)
    torch.testing.assert_close(out.last_hidden, want, atol=1e-10, rtol=1e-10)
    m = _masking(2, 16, 0.5)
    full = model.insert_mask_tokens(model(images, masking=m).last_hidden, m, grid_size=(4, 4))
    assert full.shape == (2, 17, 24)


def test_checkpointing_dropout_and_drop_path_are_deterministic_under_seed() -> None:
    model = _model(
        torch.float32, dropout=0.1, attn_dropout=0.1, drop_path=0.2, attn_backend="reference"
    ).train()
    images = torch.randn(4, 3, 24, 40)

    def run(ckpt: bool):
        model.grad_checkpointing = ckpt
        model.zero_grad()
        torch.manual_seed(7)
        y = model(images).last_hidden
        y.square().sum().backward()
        return y.detach(), model.blocks[0].attn.qkv.weight.grad.clone()

    y1, g1 = run(False)
    y2, g2 = run(True)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(g1, g2)
    model.eval()
    assert not torch.allclose(model(images).last_hidden, y1)


def test_autocast_bf16_close_to_fp32() -> None:
    model = _model(torch.float32).eval()
    images = torch.randn(2, 3, 24, 40)
    want = model(images).last_hidden
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(images).last_hidden
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), want, atol=0.15, rtol=0.05)
    low = model.to(torch.bfloat16)(images.bfloat16()).last_hidden
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), want, atol=0.15, rtol=0.05)


def test_bad_inputs_name_the_argument() -> None:
    model = _model(torch.float32)
    with pytest.raises(ValueError, match=r"images.*divisible by patch_size 8"):
        model(torch.randn(1, 3, 25, 40))
    with pytest.raises(ValueError, match="images"):
        model(torch.randn(1, 4, 24, 40))
    with pytest.raises(TypeError, match="images"):
        model(torch.zeros(1, 3, 24, 40, dtype=torch.long))
    m = _masking(2, 16, 0.5)  # 16 patches, the model has 15
    with pytest.raises(ValueError, match=r"masking\.mask"):
        model(torch.randn(2, 3, 24, 40), masking=m, mask_mode="token")
    with pytest.raises(ValueError, match=r"masking\.ids_keep"):
        model(torch.randn(2, 3, 24, 40), masking=m._replace(ids_keep=torch.zeros(2, 16, dtype=torch.long)))
    with pytest.raises(ValueError, match="return_layers"):
        model(torch.randn(1, 3, 24, 40), return_layers=[3])
    with pytest.raises(ValueError, match="mask_mode"):
        model(torch.randn(1, 3, 24, 40), mask_mode="zero")
    good = _masking(2, 15, 0.5)
    x = model(torch.randn(2, 3, 24, 40), masking=good).last_hidden
    with pytest.raises(ValueError, match="x must have shape"):
        model.insert_mask_tokens(x[:, :-1], good)
    with pytest.raises(ValueError, match="image_size"):
        VisionConfig(image_size=30, patch_size=8)


def test_encode_masked_full_in_both_modes() -> None:
    model = _model()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)  # 4x4 grid, not the configured 3x5
    m = _masking(2, 16, 0.5, seed=2)
    drop = model.encode_masked_full(images, m, "drop")
    want = model.insert_mask_tokens(model(images, masking=m).last_hidden, m, grid_size=(4, 4))
    torch.testing.assert_close(drop, want, atol=0, rtol=0)
    token = model.encode_masked_full(images, m, "token")
    torch.testing.assert_close(token, model(images, masking=m, mask_mode="token").last_hidden, atol=0, rtol=0)
    assert drop.shape == token.shape == (2, 17, 24)
