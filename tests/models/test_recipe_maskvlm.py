from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from maskmm.models.maskvlm.builder import build_model
from maskmm.models.maskvlm.config import PRESET_DIR, MaskVLMConfig, load_config
from maskmm.models.maskvlm.model import MaskVLM
from recipe_helpers import (
    RUN,
    SMALL,
    VOCAB,
    check_cli_train_resume_eval,
    gen,
    pair_batch,
    single_thread,
)

from maskmm.masking import RandomPatchMasker
from maskmm.training.recipe import get_recipe


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _cfg(*overrides: str) -> MaskVLMConfig:
    # 32 px images in 4 x 4 blocks of 8 px (= the patches)
    return load_config("tiny", [*SMALL, "image_masking.block_size=8", *overrides])


def _model(*overrides: str) -> MaskVLM:
    torch.manual_seed(0)
    return build_model(_cfg(*overrides), vocab_size=VOCAB)


# --------------------------------------------------------------------------- config


def test_config_defaults_and_base_preset_follow_the_paper():
    c = MaskVLMConfig()
    assert (c.image_masking.ratio, c.image_masking.block_size) == (0.6, 32)
    assert (c.text_masking.ratio, c.decoder.loss) == (0.3, "l1")
    assert c.losses.enabled() == ("itc", "itm", "mlm", "mim")
    assert all(c.losses.weight(n) == 1.0 for n in c.losses.enabled())
    assert not c.itc.momentum_keys and c.itc.queue_size == 0  # no EMA model: in-batch keys
    base = load_config("base")
    assert (base.model.image_size, base.model.patch_size, base.image_masking.block_size) == (224, 16, 32)
    assert (base.image_masking.ratio, base.text_masking.ratio, base.decoder.loss) == (0.6, 0.3, "l1")
    assert base.losses == c.losses and base.itm.hardness_at(0) == 1.0  # hard negatives from step 0
    assert not hasattr(base, "ema")


@pytest.mark.parametrize("name", ["tiny", "base"])
def test_presets_spell_out_every_field(name):
    import yaml

    cfg = load_config(name)
    assert cfg.name == name and get_recipe("maskvlm").presets() == ["base", "tiny"]
    raw = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    full = MaskVLMConfig()
    for f in dataclasses.fields(full):
        section = getattr(full, f.name)
        if dataclasses.is_dataclass(section):  # the recipe's own sections in full, shared ones in part
            fields = {g.name for g in dataclasses.fields(section)}
            assert set(raw[f.name]) <= fields, f.name
            if type(section).__module__ == MaskVLMConfig.__module__:
                assert set(raw[f.name]) == fields, f.name


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("image_masking.ratio=1.0", "image_masking.ratio"),
        ("text_masking.ratio=-0.1", "text_masking.ratio"),
        ("image_masking.block_size=0", "image_masking.block_size"),
        ("image_masking.block_size=12", "image_masking.block_size"),  # patch 8: blocks must nest
        ("image_masking.block_size=64", "image_masking.block_size"),  # larger than the 32 px image
        ("decoder.loss=huber", "decoder.loss"),
        ("decoder.depth=1.5", "decoder.depth"),
        ("decoder.depth=0", "decoder.depth"),
        ("decoder.heads=3", "decoder.heads"),
        ("losses.mim_weight=-1.0", "losses.mim_weight"),
        ("losses.itm_start_step=-1", "losses.itm_start_step"),
        ("itc.momentum_keys=true", "itc.momentum_keys"),
        ("model.image_size=64", "data.image_size"),
        ("train.batch_size=1", "train.batch_size"),
    ],
)
def test_config_errors_name_the_field(override, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        _cfg(override)


def test_every_loss_off_or_none_at_step_0_is_an_error():
    with pytest.raises(ValueError, match="every loss off"):
        _cfg(*(f"losses.{n}=false" for n in ("itc", "itm", "mlm", "mim")))
    with pytest.raises(ValueError, match="no loss at step 0"):
        _cfg("losses.itc=false", "losses.itm_start_step=2", "losses.masked_start_step=2")


# --------------------------------------------------------------------------- forward


def test_forward_outputs_shapes_and_counts():
    m = _model()
    images, ids, valid = pair_batch()
    out = m.compute(images, ids, valid, generator=gen())
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
    out = m.compute(images, ids, valid, generator=gen())
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
    out = m.compute(images, ids, valid, generator=gen())
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
    m = _model("losses.itc=false", "losses.itm=false", "losses.mlm=false")
    images, ids, valid = pair_batch()
    recon = []

    def keep(module, args, output):
        output.retain_grad()
        recon.append(output)

    h = m.pixel_decoder.register_forward_hook(keep)
    out = m.compute(images, ids, valid, generator=gen())
    h.remove()
    out.loss.backward()
    g = recon[0].grad  # [B, N, p*p*C]
    assert torch.all(g[~out.image_mask] == 0)
    assert torch.all(g[out.image_mask] != 0)


def test_itm_scores_each_pair_and_its_only_negative():
    m = _model("losses.itc=false", "losses.mlm=false", "losses.mim=false")
    images, ids, valid = pair_batch(b=2)  # two pairs: each one's negative is the other
    out = m.compute(images, ids, valid, generator=gen())
    with torch.no_grad():
        img, txt = m.vision(images).last_hidden, m.text(ids, valid).last_hidden
        pairs = [(0, 0, 1), (1, 1, 1), (0, 1, 0), (1, 0, 0), (1, 0, 0), (0, 1, 0)]  # (image, text, label)
        terms = [
            -torch.log_softmax(m.itm_logits(img[[a]], txt[[t]], valid[[t]]).double(), -1)[0, label]
            for a, t, label in pairs
        ]
    assert torch.allclose(out.losses["itm"].double(), torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)


def test_itc_matches_an_independent_reference_with_either_pooling():
    images, ids, valid = pair_batch()
    for pool in ("cls", "mean"):
        m = _model("losses.itm=false", "losses.mlm=false", "losses.mim=false", f"itc.pool={pool}")
        out = m.compute(images, ids, valid, generator=gen())
        with torch.no_grad():
            img, txt = m.vision(images).last_hidden.double(), m.text(ids, valid).last_hidden.double()
            if pool == "cls":
                fi, ft = img[:, 0], txt[:, 0]
            else:
                w = valid[:, 1:, None].double()
                fi, ft = img[:, 1:].mean(1), (txt[:, 1:] * w).sum(1) / w.sum(1)
            zi, zt = (
                F.normalize(F.linear(f, p.proj.weight.double(), p.proj.bias.double()), dim=-1)
                for f, p in ((fi, m.vision_proj), (ft, m.text_proj))
            )
            sim = zi @ zt.t() / 0.07  # the tiny preset's fixed temperature
            target = torch.arange(5)
            ref = (F.cross_entropy(sim, target) + F.cross_entropy(sim.t(), target)) / 2
        assert torch.allclose(out.losses["itc"].double(), ref, rtol=1e-5, atol=1e-6)


def test_mlm_fuses_masked_text_with_the_clean_image():
    m = _model("losses.itc=false", "losses.itm=false", "losses.mim=false")
    images, ids, valid = pair_batch()
    seen = []
    h = m.fusion.register_forward_hook(lambda mod, a, o: seen.append(a[0].detach().clone()))
    out = m.compute(images, ids, valid, generator=gen())
    h.remove()
    with torch.no_grad():
        clean_states = m.vision(images).last_hidden
    (img_ctx,) = seen
    assert torch.allclose(img_ctx, clean_states)
    assert out.pixel_mask is not None and out.reconstruction is None
    assert tuple(out.losses) == ("mlm",)


# --------------------------------------------------------------------------- schedule (recipe protocol)


def test_forward_follows_the_step_schedule():
    m = _model(
        "itm.easy_steps=2", "itm.ramp_steps=2", "losses.itm_start_step=1", "losses.masked_start_step=3"
    )
    images, ids, valid = pair_batch()
    batch = {"images": images, "input_ids": ids, "text_valid": valid, "image_ids": torch.arange(5)}
    seen = {s: m(batch, step=s, generator=gen()) for s in (0, 1, 3, 4, 5)}
    assert {s: tuple(o.losses) for s, o in seen.items()} == {
        0: ("itc",),
        1: ("itc", "itm"),
        3: ("itc", "itm", "mlm", "mim"),
        4: ("itc", "itm", "mlm", "mim"),
        5: ("itc", "itm", "mlm", "mim"),
    }
    assert "itm/hardness" not in seen[0].stats
    # hardness counts from ITM's start: random for 2 steps, then a ramp of 2 steps to 1.0
    assert [seen[s].stats["itm/hardness"].item() for s in (1, 3, 4, 5)] == [0.0, 0.0, 0.5, 1.0]
    assert m.find_unused_parameters and m.has_itc and m.has_itm
    assert not _model().find_unused_parameters
    m.after_optimizer_step(0)  # no momentum model: nothing to update


# --------------------------------------------------------------------------- training


def test_a_few_steps_decrease_the_total_loss():
    m = _model()
    images, ids, valid = pair_batch(b=6)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    totals = []
    for _ in range(8):
        out = m.compute(images, ids, valid, generator=gen())  # same masks and negatives every step
        assert all(torch.isfinite(v) for v in out.losses.values())
        totals.append(out.loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert min(totals[-2:]) < 0.9 * totals[0], totals


@pytest.mark.parametrize(
    ("overrides", "expected", "absent"),
    [
        (["losses.mim=false"], ("itc", "itm", "mlm"), ("pixel_decoder",)),
        (
            ["losses.itc=false", "losses.itm=false", "losses.mlm=false"],
            ("mim",),
            ("fusion", "vision_proj", "itm_head", "mlm_head"),
        ),
        (["losses.mlm=false", "losses.mim=false"], ("itc", "itm"), ("pixel_decoder", "mlm_head")),
    ],
)
def test_switching_losses_off_is_a_config_change(overrides, expected, absent):
    m = _model(*overrides)
    images, ids, valid = pair_batch()
    out = m.compute(images, ids, valid, generator=gen())
    assert tuple(out.losses) == expected
    assert all(getattr(m, part) is None for part in absent)
    out.loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing  # every trainable parameter is used (DDP without find_unused_parameters)


def test_weights_scale_the_total():
    m = _model("losses.mim_weight=2.0", "losses.itm_weight=0.0")
    out = m.compute(*pair_batch(), generator=gen())
    L = {k: v.detach().double() for k, v in out.losses.items()}
    assert torch.allclose(out.loss.double(), L["itc"] + L["mlm"] + 2.0 * L["mim"], rtol=1e-6)


def test_no_hidden_block_gives_zero_mim_loss():
    m = _model("image_masking.ratio=0.0", "losses.itc=false", "losses.itm=false", "losses.mlm=false")
    images, ids, valid = pair_batch()
    out = m.compute(images, ids, valid, generator=gen())
    assert not out.pixel_mask.any()
    assert out.losses["mim"].item() == 0.0
    out.loss.backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in m.pixel_decoder.parameters())


def test_same_seed_same_result_other_seed_other_masks():
    m = _model()
    batch = pair_batch()
    a = m.compute(*batch, generator=gen(3))
    b = m.compute(*batch, generator=gen(3))
    c = m.compute(*batch, generator=gen(4))
    assert torch.equal(a.loss, b.loss)
    assert torch.equal(a.pixel_mask, b.pixel_mask) and torch.equal(a.text_mask, b.text_mask)
    assert not torch.equal(a.pixel_mask, c.pixel_mask)


def test_bad_inputs_raise_naming_the_argument():
    m = _model()
    images, ids, valid = pair_batch()
    with pytest.raises(TypeError, match="input_ids"):
        m.compute(images, ids.int(), valid)
    with pytest.raises(ValueError, match="text_valid"):
        m.compute(images, ids, valid[:, :-1])
    with pytest.raises(ValueError, match="at least 2"):
        m.compute(images[:1], ids[:1], valid[:1])
    with pytest.raises(ValueError, match="hardness"):
        m.compute(images, ids, valid, itm_hardness=1.5)
    with pytest.raises(ValueError, match="active_losses"):
        m.compute(images, ids, valid, active_losses=("mrm",))
    assert torch.isfinite(m.compute(images, ids, valid, itm_hardness=0.0, generator=gen(1)).loss)


def test_tiny_preset_builds_and_runs():
    torch.manual_seed(0)
    m = build_model(load_config("tiny"), vocab_size=VOCAB)
    assert m.vision.config.image_size == 64 and m.vision.config.patch_size == 16
    assert m.vision.mask_token is None  # MaskVLM never replaces patches
    images, ids, valid = pair_batch(b=2, size=64)
    out = m.compute(images, ids, valid, generator=gen())
    assert out.image_mask.shape == (2, 16)
    assert out.pixel_mask.view(2, 4, 16, 4, 16).all(4).all(2).sum((1, 2)).tolist() == [10, 10]
    assert torch.isfinite(out.loss)


def test_bf16_autocast_keeps_fp32_losses():
    m = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.compute(*pair_batch(), generator=gen())
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.losses.values())
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_model_needs_a_pixel_block_masker_of_the_vit_patch_size():
    m = _model()
    parts = dict(vision=m.vision, text=m.text, text_masker=m.text_masker, settings=m.settings)
    parts.update(pixel_decoder=m.pixel_decoder, fusion=m.fusion, mlm_head=m.mlm_head, itm_head=m.itm_head)
    parts.update(vision_proj=m.vision_proj, text_proj=m.text_proj, itc_loss=m.itc_loss)
    with pytest.raises(TypeError, match="PixelBlockMasker"):
        MaskVLM(image_masker=RandomPatchMasker(0.6), **parts)
    other = type(m.image_masker)(0.6, block_size=16, patch_size=16)
    with pytest.raises(ValueError, match="patch size"):
        MaskVLM(image_masker=other, **parts)


# --------------------------------------------------------------------------- the trainer, CLI and evaluation


def test_cli_train_resume_exactly_and_eval(tmp_path):
    res = check_cli_train_resume_eval("maskvlm", tmp_path, RUN)["heldout"]
    r = res["retrieval"]
    assert all(0.0 <= r[k] <= 100.0 for k in ("itc_tr_r1", "itc_ir_r1", "itm_tr_r1", "itm_ir_r10"))
    assert set(res["finegrained"]) >= {"colour", "shape", "mean"}
    assert set(res["finegrained_itc"]) == set(res["finegrained"])
    assert {"pointing", "energy", "box_fraction"} <= set(res["grounding"])
