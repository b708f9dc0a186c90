from __future__ import annotations

import math

import pytest
import torch
from maskmm.models.maskvlm import MaskVLM, MaskVLMConfig, build_maskvlm, tiny_config
from recipe_helpers import SMALL, gen, pair_batch, single_thread

from maskmm.masking import JointMasker


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _model(**changes) -> MaskVLM:
    torch.manual_seed(0)
    changes.setdefault("encoder_overrides", SMALL)
    changes.setdefault("block_size", 8)  # 32 px image -> 4 x 4 blocks of 8 px
    return build_maskvlm(tiny_config(**changes))


# --------------------------------------------------------------------------- config


def test_config_defaults_follow_the_paper():
    c = MaskVLMConfig()
    assert (c.image_mask_ratio, c.block_size, c.text_mask_ratio, c.pixel_loss) == (0.6, 32, 0.3, "l1")
    assert c.losses == ("itc", "itm", "mlm", "mim")
    assert all(c.weight(n) == 1.0 for n in c.losses)


@pytest.mark.parametrize(
    ("changes", "err", "field"),
    [
        ({"image_mask_ratio": 1.0}, ValueError, "image_mask_ratio"),
        ({"text_mask_ratio": -0.1}, ValueError, "text_mask_ratio"),
        ({"block_size": 0}, ValueError, "block_size"),
        ({"pixel_loss": "huber"}, ValueError, "pixel_loss"),
        ({"itc": False, "itm": False, "mlm": False, "mim": False}, ValueError, "every loss off"),
        ({"mim_weight": -1.0}, ValueError, "mim_weight"),
        ({"decoder_depth": 1.5}, TypeError, "decoder_depth"),
    ],
)
def test_config_rejects_bad_values(changes, err, field):
    with pytest.raises(err, match=field):
        MaskVLMConfig(**changes)


def test_builder_checks_block_and_patch_sizes_nest():
    with pytest.raises(ValueError, match="block_size"):
        _model(block_size=12)  # patch 8


# --------------------------------------------------------------------------- forward


def test_forward_outputs_shapes_and_counts():
    m = _model()
    images, ids, valid = pair_batch()
    out = m(images, ids, valid, generator=gen())
    b, length = ids.shape
    assert tuple(out.losses) == ("itc", "itm", "mlm", "mim")
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in out.losses.values())
    ref = sum(v.detach().double() for v in out.losses.values())
    assert torch.allclose(out.loss.detach().double(), ref, rtol=1e-6)
    assert all(not v.requires_grad for v in out.stats.values())
    assert out.image_mask.shape == (b, 16) and out.image_mask.dtype == torch.bool
    assert out.pixel_mask.shape == (b, 32, 32)
    assert out.text_mask.shape == (b, length)
    assert out.reconstruction.shape == images.shape and not out.reconstruction.requires_grad
    # pixel blocks: each 8x8 block all-or-nothing, round(0.6 * 16) = 10 hidden per image
    blocks = out.pixel_mask.view(b, 4, 8, 4, 8).permute(0, 1, 3, 2, 4).reshape(b, 16, 64)
    assert torch.equal(blocks.all(-1), blocks.any(-1))
    assert blocks.all(-1).sum(1).tolist() == [10] * b
    assert torch.equal(out.image_mask, blocks.all(-1))  # patch 8 == block 8
    # text: round(0.3 * n) (at least one) of the non-special valid tokens, never specials or padding
    maskable = valid & (ids >= 5)
    expected = [max(1, math.floor(0.3 * n + 0.5)) for n in maskable.sum(1).tolist()]
    assert out.text_mask.sum(1).tolist() == expected
    assert not (out.text_mask & ~maskable).any()


def test_vit_sees_the_whole_pixel_masked_image():
    m = _model()
    images, ids, valid = pair_batch()
    calls = []

    def hook(module, args, kwargs, output):
        calls.append((args[0].detach().clone(), dict(kwargs), output.last_hidden.shape))

    handle = m.vision.register_forward_hook(hook, with_kwargs=True)
    out = m(images, ids, valid, generator=gen())
    handle.remove()
    assert len(calls) == 2  # clean view, then the pixel-masked view
    (clean, kw0, shape0), (masked, kw1, shape1) = calls
    assert torch.equal(clean, images)
    assert masked.shape == images.shape
    assert "masking" not in kw1 and "masking" not in kw0  # no patch dropped or replaced
    assert shape1 == shape0 == (images.shape[0], 1 + 16, 64)
    hidden = out.pixel_mask.unsqueeze(1).expand_as(images)
    assert torch.equal(masked[~hidden], images[~hidden])
    assert torch.all(masked[hidden] == 0.0)  # default fill
    assert hidden.any()


def test_mim_is_l1_on_hidden_pixels_and_decoder_reads_clean_text():
    m = _model()
    images, ids, valid = pair_batch()
    text_calls, dec_calls = [], []
    h1 = m.text.register_forward_hook(lambda mod, a, o: text_calls.append((a[0].clone(), o.last_hidden)))
    h2 = m.pixel_decoder.register_forward_hook(
        lambda mod, a, kw, o: dec_calls.append(kw["context"]), with_kwargs=True
    )
    out = m(images, ids, valid, generator=gen())
    h1.remove()
    h2.remove()
    # independent L1 over every element of the hidden pixels, in float64
    hid = out.pixel_mask.unsqueeze(1).expand_as(images)
    ref = (out.reconstruction.double() - images.double()).abs()[hid].mean()
    assert torch.allclose(out.losses["mim"].double(), ref, rtol=1e-5, atol=1e-6)
    # the decoder's context is the text encoder's states of the *clean* caption
    (ctx,) = dec_calls
    clean = [o for i, o in text_calls if torch.equal(i, ids)]
    assert len(clean) == 1 and torch.equal(ctx, clean[0])
    assert any(not torch.equal(i, ids) for i, _ in text_calls)  # the MLM view saw masked text


def test_mim_gradient_only_through_hidden_pixels():
    m = _model(itc=False, itm=False, mlm=False)
    images, ids, valid = pair_batch()
    recon = []

    def keep(module, args, output):
        output.retain_grad()
        recon.append(output)

    h = m.pixel_decoder.register_forward_hook(keep)
    out = m(images, ids, valid, generator=gen())
    h.remove()
    out.loss.backward()
    g = recon[0].grad  # [B, N, p*p*C]
    assert torch.all(g[~out.image_mask] == 0)
    assert torch.all(g[out.image_mask] != 0)


def test_itm_scores_each_pair_and_its_only_negative():
    m = _model(itc=False, mlm=False, mim=False)
    images, ids, valid = pair_batch(b=2)  # two pairs: each one's negative is the other
    out = m(images, ids, valid, generator=gen())
    with torch.no_grad():
        img, txt = m.vision(images).last_hidden, m.text(ids, valid).last_hidden
        pairs = [(0, 0, 1), (1, 1, 1), (0, 1, 0), (1, 0, 0), (1, 0, 0), (0, 1, 0)]  # (image, text, label)
        terms = [
            -torch.log_softmax(m.itm_logits(img[[a]], txt[[t]], valid[[t]]).double(), -1)[0, label]
            for a, t, label in pairs
        ]
    torch.testing.assert_close(out.losses["itm"].double(), torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)


def test_mlm_fuses_masked_text_with_the_clean_image():
    m = _model(itc=False, itm=False, mim=False)
    images, ids, valid = pair_batch()
    seen = []
    h = m.fusion.register_forward_hook(lambda mod, a, o: seen.append(a[0].detach().clone()))
    out = m(images, ids, valid, generator=gen())
    h.remove()
    with torch.no_grad():
        clean_states = m.vision(images).last_hidden
    (img_ctx,) = seen
    assert torch.allclose(img_ctx, clean_states)
    assert out.pixel_mask is not None and out.reconstruction is None
    assert tuple(out.losses) == ("mlm",)


# --------------------------------------------------------------------------- training


def test_a_few_steps_decrease_the_total_loss():
    m = _model()
    images, ids, valid = pair_batch(b=6)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    totals = []
    for _ in range(8):
        out = m(images, ids, valid, generator=gen())  # same masks and negatives every step
        assert all(torch.isfinite(v) for v in out.losses.values())
        totals.append(out.loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert min(totals[-2:]) < 0.9 * totals[0], totals


@pytest.mark.parametrize(
    ("changes", "expected", "absent"),
    [
        ({"mim": False}, ("itc", "itm", "mlm"), ("pixel_decoder",)),
        (
            {"itc": False, "itm": False, "mlm": False},
            ("mim",),
            ("fusion", "vision_proj", "itm_head", "mlm_head"),
        ),
        ({"mlm": False, "mim": False}, ("itc", "itm"), ("pixel_decoder", "mlm_head")),
    ],
)
def test_switching_losses_off_is_a_config_change(changes, expected, absent):
    m = _model(**changes)
    images, ids, valid = pair_batch()
    out = m(images, ids, valid, generator=gen())
    assert tuple(out.losses) == expected
    assert all(getattr(m, part) is None for part in absent)
    out.loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing  # every trainable parameter is used (DDP without find_unused_parameters)


def test_weights_scale_the_total():
    m = _model(mim_weight=2.0, itm_weight=0.0)
    out = m(*pair_batch(), generator=gen())
    L = {k: v.detach().double() for k, v in out.losses.items()}
    assert torch.allclose(out.loss.double(), L["itc"] + L["mlm"] + 2.0 * L["mim"], rtol=1e-6)


def test_no_hidden_block_gives_zero_mim_loss():
    m = _model(image_mask_ratio=0.0, itc=False, itm=False, mlm=False)
    images, ids, valid = pair_batch()
    out = m(images, ids, valid, generator=gen())
    assert not out.pixel_mask.any()
    assert out.losses["mim"].item() == 0.0
    out.loss.backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in m.pixel_decoder.parameters())


def test_same_seed_same_result_other_seed_other_masks():
    m = _model()
    batch = pair_batch()
    a = m(*batch, generator=gen(3))
    b = m(*batch, generator=gen(3))
    c = m(*batch, generator=gen(4))
    assert torch.equal(a.loss, b.loss)
    assert torch.equal(a.pixel_mask, b.pixel_mask) and torch.equal(a.text_mask, b.text_mask)
    assert not torch.equal(a.pixel_mask, c.pixel_mask)


def test_bad_inputs_raise_naming_the_argument():
    m = _model()
    images, ids, valid = pair_batch()
    with pytest.raises(TypeError, match="input_ids"):
        m(images, ids.int(), valid)
    with pytest.raises(ValueError, match="text_valid"):
        m(images, ids, valid[:, :-1])
    with pytest.raises(ValueError, match="at least 2"):
        m(images[:1], ids[:1], valid[:1])
    with pytest.raises(ValueError, match="hardness"):
        m(images, ids, valid, itm_hardness=1.5)
    assert torch.isfinite(m(images, ids, valid, itm_hardness=0.0, generator=gen(1)).loss)


def test_tiny_preset_builds_and_runs():
    torch.manual_seed(0)
    m = build_maskvlm(tiny_config())
    assert m.vision.config.image_size == 64 and m.vision.config.patch_size == 8
    assert m.vision.mask_token is None  # MaskVLM never replaces patches
    images, ids, valid = pair_batch(b=2, size=64)
    out = m(images, ids, valid, generator=gen())
    assert out.image_mask.shape == (2, 64)
    assert out.pixel_mask.view(2, 4, 16, 4, 16).all(4).all(2).sum((1, 2)).tolist() == [10, 10]
    assert torch.isfinite(out.loss)


def test_bf16_autocast_keeps_fp32_losses():
    m = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(*pair_batch(), generator=gen())
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.losses.values())
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_model_needs_a_separate_mode_pixel_masker():
    m = _model()
    joint = JointMasker(m.masker.image_masker, m.masker.text_masker, mode="joint")
    with pytest.raises(ValueError, match="separate"):
        MaskVLM(vision=m.vision, text=m.text, masker=joint, config=m.config, pixel_decoder=m.pixel_decoder)
