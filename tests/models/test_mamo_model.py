from __future__ import annotations

import pytest
import torch
from maskmm.models.mamo.builder import build_model
from maskmm.models.mamo.config import load_config
from maskmm.models.mamo.model import MAMO

VOCAB = 40
TINY = [
    "model.fusion=merged",  # the merged fusion unless a test says otherwise (tiny ships cross)
    "model.image_size=16",
    "data.image_size=16",
    "model.patch_size=4",
    "model.vision_dim=32",
    "model.text_dim=32",
    "model.vision_depth=1",
    "model.text_depth=1",
    "model.fusion_depth=2",
    "model.vision_heads=2",
    "model.text_heads=2",
    "model.fusion_heads=2",
    "model.mlp_ratio=2.0",
    "model.embed_dim=16",
    "model.max_text_len=12",
    "data.max_text_len=12",
    "itc.queue_size=8",
    "losses.mim_decoder_depth=0",
]


def _model(*extra: str, seed: int = 0) -> MAMO:
    torch.manual_seed(seed)
    return build_model(load_config("tiny", [*TINY, *extra]), vocab_size=VOCAB)


def _batch(b: int = 5, length: int = 9, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, 16, 16, generator=g)
    ids = torch.randint(5, VOCAB, (b, length), generator=g)
    ids[:, 0] = 1
    lengths = torch.randint(4, length + 1, (b,), generator=g)
    lengths[0] = length
    valid = torch.arange(length)[None] < lengths[:, None]
    ids[~valid] = 0
    return images, ids, valid, torch.arange(b)


def test_forward_all_losses_finite_and_weighted_sum():
    m = _model("losses.itm_weight=0.5", "losses.mim_weight=2.0")
    out = m.compute(*_batch(), generator=torch.Generator().manual_seed(0))
    assert set(out.losses) == {"itc", "itm", "mlm", "mrm", "mim"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    w = {"itm": 0.5, "mim": 2.0}
    ref = sum(w.get(k, 1.0) * v.detach().double() for k, v in out.losses.items())
    assert torch.allclose(out.loss.detach().double(), ref, rtol=1e-6)
    assert out.loss.dtype == torch.float32
    assert all(not v.requires_grad for v in out.stats.values())
    # joint masking: 75 % of 16 patches = 12 per image, ~25 % of each caption's tokens
    assert out.stats["mask/image_masked"].item() == 12.0
    assert out.stats["mask/text_masked"].item() > 0


@pytest.mark.parametrize("loss", ["itc", "itm", "mlm", "mrm", "mim"])
def test_each_loss_alone_decreases_on_a_fixed_batch(loss):
    others = [f"losses.{n}=false" for n in ("itc", "itm", "mlm", "mrm", "mim") if n != loss]
    m = _model(*others, "itc.queue_size=0")
    batch = _batch(b=6)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    values = []
    for step in range(12):
        # the same masks every step
        out = m.compute(*batch, alpha=0.0, generator=torch.Generator().manual_seed(0))
        assert set(out.losses) == {loss}
        assert torch.isfinite(out.loss)
        values.append(out.loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        m.update_teacher(step)
    assert min(values[-3:]) < values[0] * 0.95, values


def test_teacher_never_gets_gradients_and_follows_ema():
    m = _model()
    opt_params = {id(p) for p in m.parameters()}
    teacher_tensors = list(m.teacher.module.state_dict().values())
    assert not any(id(t) in opt_params for t in teacher_tensors)
    assert not any(t.requires_grad for t in teacher_tensors)
    before = {k: v.clone() for k, v in m.teacher.module.state_dict().items()}
    out = m.compute(*_batch(), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert all(t.grad is None for t in teacher_tensors)
    assert all(
        torch.equal(before[k], v) for k, v in m.teacher.module.state_dict().items()
    )  # forward never updates
    with torch.no_grad():
        for p in m.student.parameters():
            p.add_(0.1)
    m.update_teacher(0)
    name = "vision.blocks.0.attn.qkv.weight"
    stud = dict(m.student.named_parameters())[name].detach()
    after = m.teacher.module.state_dict()[name]
    assert torch.allclose(after, 0.995 * before[name] + 0.005 * stud, atol=1e-7)


@pytest.mark.parametrize("momentum", [True, False])
def test_teacher_holds_only_what_targets_need(momentum):
    m = _model(f"itc.momentum_keys={str(momentum).lower()}", "itc.pool=cls")
    names = set(m.teacher.module.state_dict())
    assert not any(n.startswith(("itm_head", "mrm_head", "mim_decoder", "queue")) for n in names)
    assert any(n.startswith("fusion.") for n in names)
    assert any(n.startswith("vision_proj") for n in names) == momentum
    out = m.compute(*_batch(), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.losses["itc"])


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("losses.mrm=false",), {"itc", "itm", "mlm", "mim"}),
        (("losses.mim=false", "losses.mlm=false"), {"itc", "itm", "mrm"}),
        (("losses.itc=false",), {"itm", "mlm", "mrm", "mim"}),
        (("losses.itm=false", "losses.mlm=false", "losses.mrm=false", "losses.mim=false"), {"itc"}),
        (("model.fusion=cross",), {"itc", "itm", "mlm", "mrm", "mim"}),
        (("masking.mode=token",), {"itc", "itm", "mlm", "mrm", "mim"}),
        (("losses.mlm_distill=true", "losses.mrm_layer_norm=instance", "losses.mrm_kind=mse"), None),
    ],
)
def test_ablations_are_config_only(extra, expected):
    m = _model(*extra)
    out = m.compute(*_batch(), generator=torch.Generator().manual_seed(0))
    assert set(out.losses) == (expected or {"itc", "itm", "mlm", "mrm", "mim"})
    assert all(torch.isfinite(v) for v in out.losses.values())
    out.loss.backward()
    # every trainable parameter that exists is used (DDP-safe: no unused heads are built)
    unused = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == [], unused
    if "losses.mrm=false" in extra:
        assert m.student.mrm_head is None
    if "model.fusion=cross" in extra:
        assert m.cross_fusion


def test_cross_fusion_mrm_scores_text_positions_only():
    m = _model("model.fusion=cross")
    out = m.compute(*_batch(), generator=torch.Generator().manual_seed(0))
    assert out.stats["mrm/num_masked"].item() == pytest.approx(out.stats["mask/text_masked"].item() * 5)


def test_merged_fusion_mrm_scores_both_modalities():
    m = _model()
    out = m.compute(*_batch(), generator=torch.Generator().manual_seed(0))
    expected = 5 * (out.stats["mask/image_masked"] + out.stats["mask/text_masked"])
    assert out.stats["mrm/num_masked"].item() == pytest.approx(expected.item())


def test_seeded_determinism():
    batch = _batch()
    a = _model().compute(*batch, generator=torch.Generator().manual_seed(3)).loss
    b = _model().compute(*batch, generator=torch.Generator().manual_seed(3)).loss
    c = _model().compute(*batch, generator=torch.Generator().manual_seed(4)).loss
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_nothing_masked_is_defined():
    m = _model("masking.image_ratio=0.0", "masking.text_ratio=0.0")
    out = m.compute(*_batch(), generator=torch.Generator().manual_seed(0))
    for k in ("mlm", "mrm", "mim"):
        assert out.losses[k].item() == 0.0
    out.loss.backward()


def test_active_losses_compute_a_subset():
    m = _model()
    images, ids, valid, image_ids = _batch()
    out = m.compute(
        images, ids, valid, image_ids, active_losses=("itc",), generator=torch.Generator().manual_seed(0)
    )
    assert set(out.losses) == {"itc"} and not any(k.startswith(("mlm/", "mask/", "itm/")) for k in out.stats)
    out.loss.backward()
    assert m.student.fusion.layers[0].attn.qkv.weight.grad is None  # no loss used the fusion
    assert m.student.vision.blocks[0].attn.qkv.weight.grad is not None
    both = m.compute(images, ids, valid, image_ids, active_losses=["itc", "mlm"], generator=torch.Generator())
    assert set(both.losses) == {"itc", "mlm"}
    with pytest.raises(ValueError, match="active_losses"):
        m.compute(images, ids, valid, image_ids, active_losses=("itc", "bogus"))
    with pytest.raises(ValueError, match="active_losses"):
        m.compute(images, ids, valid, image_ids, active_losses=())


def test_bad_inputs_raise_naming_the_argument():
    m = _model()
    images, ids, valid, iid = _batch()
    with pytest.raises(ValueError, match="images"):
        m.compute(images[0], ids, valid)
    with pytest.raises(TypeError, match="text_valid"):
        m.compute(images, ids, valid.long())
    with pytest.raises(ValueError, match="input_ids"):
        m.compute(images, ids[:3], valid)
    with pytest.raises(ValueError, match="image_ids"):
        m.compute(images, ids, valid, iid[:2])
    with pytest.raises(ValueError, match="alpha"):
        m.compute(images, ids, valid, alpha=1.5)
    with pytest.raises(ValueError, match="batch of at least 2"):
        m.compute(images[:1], ids[:1], valid[:1])


def _smooth_l1(d: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    a = d.abs()
    return torch.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


def _layer_norm64(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + 1e-5)


def test_mrm_and_mim_match_a_plain_reference():
    """Recompute the masked view, the teacher targets and both regression losses by hand."""
    m = _model("losses.itc=false", "losses.itm=false", "losses.mlm=false", "losses.mrm_top_k=2")
    images, ids, valid, iid = _batch()
    out = m.compute(images, ids, valid, iid, generator=torch.Generator().manual_seed(5))
    pm, tm = m.mask_batch(ids, valid, 16, generator=torch.Generator().manual_seed(5))
    st, te = m.student, m.teacher.module
    with torch.no_grad():
        t_img = te.vision(images).last_hidden
        t_txt = te.text(ids, valid).last_hidden
        layers = te.fusion(t_img, None, t_txt, valid, return_layers=[0, 1]).hidden_states
        target = sum(_layer_norm64(torch.cat([h.image[:, 1:], h.text], 1)) for h in layers) / 2
        v = st.vision.insert_mask_tokens(st.vision(images, masking=pm, mask_mode="drop").last_hidden, pm)
        fused = st.fusion(v, None, st.text(tm.input_ids, valid).last_hidden, valid)
        pred = st.mrm_head(torch.cat([fused.image[:, 1:], fused.text], 1)).double()
        mask = torch.cat([pm.mask, tm.mask], 1)
        d = pred.shape[-1]
        ref_mrm = (_smooth_l1(pred - target).sum(-1) / d**0.5)[mask].mean()
        mim_pred = st.mim_decoder(fused.image[:, 1:]).double()
        mim_t = _layer_norm64(t_img[:, 1:])
        ref_mim = (_smooth_l1(mim_pred - mim_t).sum(-1) / mim_pred.shape[-1] ** 0.5)[pm.mask].mean()
    assert out.losses["mrm"].item() == pytest.approx(ref_mrm.item(), rel=1e-6)
    assert out.losses["mim"].item() == pytest.approx(ref_mim.item(), rel=1e-6)
    # gradient reaches the student's encoders through the masked view
    out.loss.backward()
    assert st.vision.mask_token.grad is not None and st.vision.mask_token.grad.abs().sum() > 0


def test_bf16_autocast_runs_with_fp32_losses():
    m = _model("losses.mlm_distill=true")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.compute(*_batch(), generator=torch.Generator().manual_seed(0))
    assert out.loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in out.losses.values())
    assert all(torch.isfinite(v) for v in out.losses.values())
    out.loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("init", ["bert", "xavier"])
def test_init_option_sets_the_encoder_linear_scale(init):
    m = _model(f"model.init={init}", "model.vision_dim=64", "model.text_dim=64", "model.vision_heads=2")
    st = m.student
    linears = [
        mod
        for part in (st.vision, st.text, st.fusion)
        for mod in part.modules()
        if isinstance(mod, torch.nn.Linear)
    ]
    assert linears
    for lin in linears:
        fan_out, fan_in = lin.weight.shape
        want = 0.02 if init == "bert" else (2.0 / (fan_in + fan_out)) ** 0.5
        # truncated normal at 2 std has std 0.88 * 0.02; uniform is exact in expectation
        lo, hi = (0.8 * want, 0.95 * want) if init == "bert" else (0.9 * want, 1.1 * want)
        assert lo < lin.weight.std().item() < hi, (lin, lin.weight.std().item(), want)
    # the heads keep the BERT init either way
    assert st.itm_head.classifier.weight.std().item() < 0.02


def test_masked_view_needs_a_text_masker():
    m = _model()
    with pytest.raises(TypeError, match="text_masker"):
        MAMO(m.student, m.settings, itc=m.itc, text_masker=None)
    assert m.text_masker.ratio == 0.25  # the config's masking.text_ratio reaches the masker
