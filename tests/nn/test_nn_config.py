"""Configs, presets and builders."""

from __future__ import annotations

import pytest
import torch

from maskmm.masking import random_patch_masking
from maskmm.nn import (
    CoAttentionFusion,
    CrossAttentionFusion,
    FusionConfig,
    MergedFusion,
    VisionConfig,
    build_encoders,
    build_fusion_encoder,
    preset,
)


def test_presets_and_overrides() -> None:
    tiny = preset("tiny", attn_backend="reference", grad_checkpointing=True)
    assert tiny.vision.image_size == 64 and tiny.vision.patch_size == 16 and tiny.vision.num_patches == 16
    assert tiny == preset("tiny", attn_backend="reference", grad_checkpointing=True)  # one tiny preset
    from maskmm.nn.encoders_config import EncodersConfig

    assert preset("tiny") == EncodersConfig().to_presets(vocab_size=1024)
    assert {tiny.vision.attn_backend, tiny.text.attn_backend, tiny.fusion.attn_backend} == {"reference"}
    base = preset("base")
    assert (base.vision.dim, base.vision.depth, base.vision.patch_size, base.vision.image_size) == (
        768,
        12,
        16,
        224,
    )
    assert (base.text.depth, base.fusion.depth, base.text.vocab_size) == (6, 6, 30522)
    with pytest.raises(ValueError, match="preset name"):
        preset("huge")
    with pytest.raises(ValueError, match="unknown fields"):
        preset("tiny", colour="red")
    with pytest.raises(ValueError, match="attn_backend"):
        VisionConfig(attn_backend="cuda")


def test_tiny_models_build_and_run_end_to_end() -> None:
    vision, text, fusion = build_encoders("tiny")
    assert isinstance(fusion, MergedFusion)
    assert isinstance(
        build_fusion_encoder(FusionConfig(kind="cross", dim=32, num_heads=4)), CrossAttentionFusion
    )
    co = build_encoders("tiny", kind="coattention", depth=1)[2]
    assert isinstance(co, CoAttentionFusion) and co.depth == len(co.text_layers) == len(co.image_layers) == 1
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 64, generator=g)  # 4 x 4 patches of 16 px
    m = random_patch_masking(2, 16, 0.75, generator=g)
    v = vision(images, masking=m)
    full = vision.insert_mask_tokens(v.last_hidden, m, grid_size=(4, 4))
    ids = torch.randint(1, 1024, (2, 9), generator=g)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, 5:] = False
    t = text(ids, valid)
    out = fusion(full, None, t.last_hidden, valid, return_layers=range(2))
    assert out.image.shape == (2, 17, 128) and out.text.shape == (2, 9, 128) and len(out.hidden_states) == 2
    loss = out.text[valid].square().mean() + out.image.square().mean()
    loss.backward()
    assert vision.blocks[0].attn.qkv.weight.grad is not None and vision.mask_token.grad.abs().sum() > 0


def test_drop_path_scales_kept_samples_and_follows_the_generator() -> None:
    from maskmm.nn import drop_path

    x = torch.ones(64, 3, 2)
    a = drop_path(x, 0.25, True, generator=torch.Generator().manual_seed(3))
    b = drop_path(x, 0.25, True, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    per_sample = a[:, 0, 0]
    kept = torch.tensor(1.0) / 0.75
    assert ((per_sample == 0) | (per_sample == kept)).all()
    assert (a == a[:, :1, :1]).all()  # whole samples are dropped or kept
    assert 0 < int((per_sample == 0).sum()) < 64
    assert drop_path(x, 0.25, False) is x and drop_path(x, 0.0, True) is x
