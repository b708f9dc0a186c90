"""Image-text contrastive loss against a plain float64 reference (single process)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maskmm.losses import ImageTextContrastive, image_text_contrastive_loss


def _feats(b, e, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        F.normalize(torch.randn(b, e, generator=g, dtype=torch.float64), dim=-1).to(dtype) for _ in range(4)
    ]


def _reference(
    img,
    txt,
    temp,
    *,
    img_m=None,
    txt_m=None,
    ids=None,
    q_img=None,
    q_txt=None,
    q_ids=None,
    q_valid=None,
    alpha=0.0,
):
    """Explicit ALBEF formulas; invalid queue entries are *removed* (not masked)."""
    img, txt = img.double(), txt.double()
    k_img = (img_m if img_m is not None else img).double()
    k_txt = (txt_m if txt_m is not None else txt).double()
    b = img.shape[0]
    key_ids = ids if ids is not None else torch.arange(b)
    if q_img is not None:
        keep = q_valid if q_valid is not None else torch.ones(q_img.shape[0], dtype=torch.bool)
        k_img = torch.cat([k_img, q_img[keep].double()])
        k_txt = torch.cat([k_txt, q_txt[keep].double()])
        q_key_ids = q_ids[keep] if (ids is not None) else torch.full((int(keep.sum()),), -7)
        key_ids = torch.cat([key_ids, q_key_ids])
    own = ids if ids is not None else torch.arange(b)
    pos = (own[:, None] == key_ids[None, :]).double()
    targets = pos / pos.sum(1, keepdim=True)
    sim_i2t = img @ k_txt.t() / temp
    sim_t2i = txt @ k_img.t() / temp
    t_i2t = t_t2i = targets
    if alpha > 0:
        with torch.no_grad():
            t_i2t = alpha * torch.softmax(img_m.double() @ k_txt.t() / temp, 1) + (1 - alpha) * targets
            t_t2i = alpha * torch.softmax(txt_m.double() @ k_img.t() / temp, 1) + (1 - alpha) * targets
    li2t = -(t_i2t * torch.log_softmax(sim_i2t, 1)).sum(1).mean()
    lt2i = -(t_t2i * torch.log_softmax(sim_t2i, 1)).sum(1).mean()
    return (li2t + lt2i) / 2


def test_in_batch_loss_equals_symmetric_cross_entropy_with_grads() -> None:
    img, txt, _, _ = _feats(7, 5)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    temp = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
    out = image_text_contrastive_loss(img, txt, temp)
    grads = torch.autograd.grad(out.loss, (img, txt, temp))
    logits = img @ txt.t() / temp
    y = torch.arange(7)
    ref = (F.cross_entropy(logits, y) + F.cross_entropy(logits.t(), y)) / 2
    ref_grads = torch.autograd.grad(ref, (img, txt, temp))
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-5, atol=1e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.4])
@pytest.mark.parametrize("with_ids", [False, True])
def test_momentum_queue_ids_distillation_match_reference(alpha, with_ids) -> None:
    b, e, qn = 5, 6, 9
    img, txt, img_m, txt_m = _feats(b, e)
    g = torch.Generator().manual_seed(3)
    q_img = F.normalize(torch.randn(qn, e, generator=g, dtype=torch.float64), dim=-1)
    q_txt = F.normalize(torch.randn(qn, e, generator=g, dtype=torch.float64), dim=-1)
    ids = torch.tensor([0, 1, 1, 2, 3])  # pairs 1 and 2 share an image: multi-positive
    q_ids = torch.tensor([1, 9, 1, 0, 4, 2, 3, 7, 8])  # shared ids are positives (unless invalid)
    q_valid = torch.tensor([True, True, False, True, True, False, True, True, True])
    img.requires_grad_(True)
    txt.requires_grad_(True)
    temp = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    kw = dict(
        image_feat_m=img_m,
        text_feat_m=txt_m,
        alpha=alpha,
        image_queue=q_img,
        text_queue=q_txt,
        queue_valid=q_valid,
    )
    if with_ids:
        kw.update(image_ids=ids, id_queue=q_ids)
    out = image_text_contrastive_loss(img, txt, temp, **kw)
    grads = torch.autograd.grad(out.loss, (img, txt, temp))
    ref = _reference(
        img,
        txt,
        temp,
        img_m=img_m,
        txt_m=txt_m,
        ids=ids if with_ids else None,
        q_img=q_img,
        q_txt=q_txt,
        q_ids=q_ids,
        q_valid=q_valid,
        alpha=alpha,
    )
    ref_grads = torch.autograd.grad(ref, (img, txt, temp))
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-5, atol=1e-6)
    for gr, r in zip(grads, ref_grads):
        torch.testing.assert_close(gr.double(), r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 4e-2)]
)
def test_low_precision_forward(dtype, tol) -> None:
    img, txt, img_m, txt_m = _feats(9, 16)
    out = image_text_contrastive_loss(
        img.to(dtype),
        txt.to(dtype),
        0.1,
        image_feat_m=img_m.to(dtype),
        text_feat_m=txt_m.to(dtype),
        alpha=0.4,
    )
    ref = _reference(
        img.to(dtype), txt.to(dtype), 0.1, img_m=img_m.to(dtype), txt_m=txt_m.to(dtype), alpha=0.4
    )
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss.double(), ref, rtol=tol, atol=tol)


def test_accuracy_and_temperature_stats() -> None:
    img, _, _, _ = _feats(6, 8)
    out = image_text_contrastive_loss(img, img.clone(), 0.07)
    assert out.stats["i2t_acc"] == 1.0 and out.stats["t2i_acc"] == 1.0
    torch.testing.assert_close(out.stats["temperature"], torch.tensor(0.07))
    shuffled = image_text_contrastive_loss(img, img.roll(1, 0), 0.07)
    assert shuffled.stats["i2t_acc"] == 0.0
    assert all(not v.requires_grad and v.dtype == torch.float32 for v in out.stats.values())


def test_module_clamps_temperature_and_fills_queue() -> None:
    itc = ImageTextContrastive(8, queue_size=10)
    assert itc.temp.requires_grad and abs(itc.temp.item() - 0.07) < 1e-7
    keys = set(itc.state_dict())
    assert {"queue.image", "queue.text", "queue.ids", "queue.valid", "queue.ptr"} <= keys
    with torch.no_grad():
        itc.temp.fill_(2.0)
    img, txt, img_m, txt_m = (x.float() for x in _feats(4, 8))
    out = itc(img * 3, txt, image_feat_m=img_m, text_feat_m=txt_m, image_ids=torch.arange(4), alpha=0.4)
    assert itc.temp.item() == pytest.approx(0.5)
    assert out.stats["temperature"] == pytest.approx(0.5)
    # first call: the queue was empty, so it equals the in-batch loss on normalised features
    ref = _reference(img, txt, 0.5, img_m=img_m, txt_m=txt_m, alpha=0.4)
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-5, atol=1e-6)
    assert int(itc.queue.valid.sum()) == 4 and int(itc.queue.ptr) == 4
    torch.testing.assert_close(itc.queue.image[:4], img_m)
    itc.eval()
    itc(img, txt, image_feat_m=img_m, text_feat_m=txt_m, image_ids=torch.arange(4))
    assert int(itc.queue.ptr) == 4  # eval mode does not enqueue by default


def test_module_gradient_reaches_temperature_and_is_deterministic() -> None:
    img, txt, _, _ = (x.float() for x in _feats(5, 8))
    losses = []
    for _ in range(2):
        itc = ImageTextContrastive(8, queue_size=3)
        out = itc(img, txt, image_ids=torch.tensor([0, 1, 2, 3, 4]))
        out.loss.backward()
        assert itc.temp.grad is not None and itc.temp.grad.abs() > 0
        losses.append(out.loss.detach())
    assert torch.equal(losses[0], losses[1])


def test_empty_batch_gives_zero_loss() -> None:
    img = torch.zeros(0, 4, requires_grad=True)
    out = image_text_contrastive_loss(img, torch.zeros(0, 4), 0.07)
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert img.grad.shape == (0, 4)


def test_bad_inputs_raise() -> None:
    img, txt, img_m, _ = _feats(4, 8)
    with pytest.raises(ValueError, match="text_feat"):
        image_text_contrastive_loss(img, txt[:3], 0.07)
    with pytest.raises(ValueError, match="text_feat_m"):
        image_text_contrastive_loss(img, txt, 0.07, image_feat_m=img_m)
    with pytest.raises(ValueError, match="alpha"):
        image_text_contrastive_loss(img, txt, 0.07, alpha=0.4)
    with pytest.raises(ValueError, match="temperature"):
        image_text_contrastive_loss(img, txt, -1.0)
    with pytest.raises(ValueError, match="id_queue"):
        image_text_contrastive_loss(
            img, txt, 0.07, image_ids=torch.arange(4), image_queue=img, text_queue=txt
        )
    with pytest.raises(TypeError, match="image_ids"):
        image_text_contrastive_loss(img, txt, 0.07, image_ids=torch.arange(4).float())


def test_own_pair_is_always_a_positive() -> None:
    # a query whose id matches nothing (id -1) still has its own pair as positive
    img, txt, _, _ = _feats(4, 6)
    ids = torch.tensor([-1, 0, 0, 1])
    out = image_text_contrastive_loss(img, txt, 0.1, image_ids=ids)
    pos = (ids[:, None] == ids[None, :]) & (ids[None, :] >= 0) | torch.eye(4, dtype=torch.bool)
    t = pos.double() / pos.double().sum(1, keepdim=True)
    logits = img @ txt.t() / 0.1
    ref = (-(t * logits.log_softmax(1)).sum(1).mean() - (t * logits.t().log_softmax(1)).sum(1).mean()) / 2
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-10, atol=1e-12)


def test_float_temperature_keeps_float64_precision() -> None:
    img, txt, _, _ = _feats(5, 6)
    a = image_text_contrastive_loss(img, txt, 0.07).loss
    b = image_text_contrastive_loss(img, txt, torch.tensor(0.07, dtype=torch.float64)).loss
    torch.testing.assert_close(a, b, rtol=1e-13, atol=0)


def test_mismatched_devices_dtypes_and_bad_config_raise() -> None:
    img, txt, img_m, txt_m = _feats(4, 8)
    meta = torch.empty(4, 8, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match="text_feat_m"):
        image_text_contrastive_loss(img, txt, 0.07, image_feat_m=img_m, text_feat_m=meta)
    with pytest.raises(ValueError, match="text_queue"):
        image_text_contrastive_loss(img, txt, 0.07, image_queue=img_m, text_queue=meta)
    with pytest.raises(TypeError, match="text_feat"):
        image_text_contrastive_loss(img, txt.float(), 0.07)
    with pytest.raises(TypeError, match="text_feat_m"):
        image_text_contrastive_loss(img, txt, 0.07, image_feat_m=img_m, text_feat_m=txt_m.float())
    with pytest.raises(TypeError, match="alpha"):
        image_text_contrastive_loss(img, txt, 0.07, image_feat_m=img_m, text_feat_m=txt_m, alpha="0.4")
    with pytest.raises(ValueError, match="alpha"):
        image_text_contrastive_loss(img, txt, 0.07, image_feat_m=img_m, text_feat_m=txt_m, alpha=1.5)
    with pytest.raises(ValueError, match="embed_dim"):
        ImageTextContrastive(0)
    with pytest.raises(TypeError, match="temperature"):
        ImageTextContrastive(8, temperature="0.07")
    with pytest.raises(ValueError, match="temperature_bounds"):
        ImageTextContrastive(8, temperature_bounds=(0.5, 0.1))
    with pytest.raises(ValueError, match="queue_size"):
        ImageTextContrastive(8, queue_size=-1)
