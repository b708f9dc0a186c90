"""maskmm.distributed gathers and the contrastive loss under a real two-process gloo group.

Each rank holds one slice of a batch that every rank can rebuild from a shared seed.
The single-process reference (plain float64 formulas, written here) runs on the
concatenated batch. DDP averages gradients over ranks, so the checks are:
mean over ranks of the loss == reference loss; (rank's feature grad) / world ==
reference grad of its slice; mean over ranks of the temperature grad == reference.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from spawn_helpers import free_port, run_ranks

from maskmm.data.facts import encode_facts
from maskmm.distributed import all_gather_no_grad, all_gather_with_grad, world_info
from maskmm.losses import (
    ImageTextContrastive,
    batch_positives,
    image_text_contrastive_loss,
    pair_positives,
)

WORLD = 2
B_LOCAL = 3
E = 5


def _mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / WORLD


def _global_batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return [
        F.normalize(torch.randn(WORLD * B_LOCAL, E, generator=g, dtype=torch.float64), dim=-1)
        for _ in range(4)
    ]


def _ref_loss(img, txt, temp, k_img, k_txt, key_ids, ids, alpha=0.0, img_m=None, txt_m=None):
    pos = (ids[:, None] == key_ids[None, :]).double()
    hard = pos / pos.sum(1, keepdim=True)
    t_i2t = t_t2i = hard
    if alpha > 0:
        t_i2t = alpha * torch.softmax(img_m @ k_txt.t() / temp.detach(), 1) + (1 - alpha) * hard
        t_t2i = alpha * torch.softmax(txt_m @ k_img.t() / temp.detach(), 1) + (1 - alpha) * hard
    li = -(t_i2t * torch.log_softmax(img @ k_txt.t() / temp, 1)).sum(1).mean()
    lt = -(t_t2i * torch.log_softmax(txt @ k_img.t() / temp, 1)).sum(1).mean()
    return (li + lt) / 2


def _check(name, got, want, rtol=1e-6, atol=1e-8):
    try:
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    except AssertionError as err:
        raise AssertionError(f"{name}: {err}") from None


def _worker(rank: int, port: int) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=30),
    )
    try:
        assert world_info() == (rank, WORLD)
        sl = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)

        # 1. gather semantics: forward concatenates in rank order, backward sums over ranks.
        x = (torch.arange(B_LOCAL * 2, dtype=torch.float64).reshape(B_LOCAL, 2) + 100 * rank).requires_grad_(
            True
        )
        y = all_gather_with_grad(x)
        expect = torch.cat(
            [
                torch.arange(B_LOCAL * 2, dtype=torch.float64).reshape(B_LOCAL, 2) + 100 * r
                for r in range(WORLD)
            ]
        )
        _check("gather forward", y.detach(), expect)
        w = torch.arange(WORLD * B_LOCAL * 2, dtype=torch.float64).reshape(-1, 2)
        ((y * w).sum() * (rank + 1)).backward()
        _check("gather backward (sum over ranks)", x.grad, w[sl] * sum(r + 1 for r in range(WORLD)))
        z = all_gather_no_grad(x)
        assert not z.requires_grad and torch.equal(z, expect)

        # 2. online keys (gathered with grad): loss, feature grads and temperature grad.
        img_all, txt_all, _, _ = _global_batch(0)
        img = img_all[sl].clone().requires_grad_(True)
        txt = txt_all[sl].clone().requires_grad_(True)
        temp = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
        out = image_text_contrastive_loss(img, txt, temp)
        out.loss.backward()
        r_img = img_all.clone().requires_grad_(True)
        r_txt = txt_all.clone().requires_grad_(True)
        r_temp = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
        ids = torch.arange(WORLD * B_LOCAL)
        ref = _ref_loss(r_img, r_txt, r_temp, r_img, r_txt, ids, ids)
        ref.backward()
        _check("online loss", _mean_over_ranks(out.loss.double()), ref.detach())
        _check("online grad image", img.grad / WORLD, r_img.grad[sl])
        _check("online grad text", txt.grad / WORLD, r_txt.grad[sl])
        _check("online grad temperature", _mean_over_ranks(temp.grad), r_temp.grad)
        _check(
            "i2t_acc",
            _mean_over_ranks(out.stats["i2t_acc"].double()),
            ((r_img @ r_txt.t()).argmax(1) == ids).double().mean(),
            atol=1e-6,
        )

        # 3. module: momentum keys, shared ids, soft targets and a queue filled on a first step.
        img_all, txt_all, img_m_all, txt_m_all = _global_batch(1)
        ids_all = torch.tensor([0, 1, 1, 2, 0, 3])
        itc = ImageTextContrastive(E, queue_size=4).double()
        for step in range(2):
            itc.zero_grad()
            img = img_all[sl].clone().requires_grad_(True)
            out = itc(
                img,
                txt_all[sl],
                image_feat_m=img_m_all[sl],
                text_feat_m=txt_m_all[sl],
                image_ids=ids_all[sl],
                alpha=0.4,
            )
            out.loss.backward()
            r_img = img_all.clone().requires_grad_(True)
            r_temp = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
            k_img, k_txt, k_ids = img_m_all, txt_m_all, ids_all
            if step == 1:  # queue holds the newest 4 rows of the previous global batch
                k_img = torch.cat([k_img, img_m_all[2:]])
                k_txt = torch.cat([k_txt, txt_m_all[2:]])
                k_ids = torch.cat([k_ids, ids_all[2:]])
            # the module L2-normalises its inputs: the reference does too (it matters for the grads)
            r_in = F.normalize(r_img, dim=-1)
            ref = _ref_loss(r_in, txt_all, r_temp, k_img, k_txt, k_ids, ids_all, 0.4, img_m_all, txt_m_all)
            ref.backward()
            _check(f"module loss step {step}", _mean_over_ranks(out.loss.double()), ref.detach())
            _check(f"module grad image step {step}", img.grad / WORLD, r_img.grad[sl])
            _check(f"module grad temperature step {step}", _mean_over_ranks(itc.temp.grad), r_temp.grad)
        q = itc.queue.image.clone()
        _check("queue identical across ranks", _mean_over_ranks(q), q)

        # 4. positives: fact ids padded to different widths per rank give the single-process mask,
        #    and ITC with that mask matches the reference on the concatenated batch.
        facts_img = [{1, 2}, {3}, {1, 4, 5}, {2}, {3, 6}, {1, 2, 7, 8}]
        facts_cap = [{1}, {3}, {4, 5}, {2}, {6}, {9}]
        pos = batch_positives(encode_facts(facts_img[sl]), encode_facts(facts_cap[sl]))
        want = pair_positives(encode_facts(facts_img), encode_facts(facts_cap)) | torch.eye(
            6, dtype=torch.bool
        )
        assert (
            encode_facts(facts_img[sl]).shape[1]
            != encode_facts(facts_img[(rank ^ 1) * B_LOCAL :][:B_LOCAL]).shape[1]
        )
        assert torch.equal(pos, want) and (want & ~torch.eye(6, dtype=torch.bool)).any()
        img_all, txt_all, _, _ = _global_batch(2)
        img = img_all[sl].clone().requires_grad_(True)
        out = image_text_contrastive_loss(img, txt_all[sl], 0.1, positives=pos)
        out.loss.backward()
        r_img = img_all.clone().requires_grad_(True)
        p = want.double()
        li = -(p / p.sum(1, keepdim=True) * torch.log_softmax(r_img @ txt_all.t() / 0.1, 1)).sum(1).mean()
        pt = p.t()
        lt = -(pt / pt.sum(1, keepdim=True) * torch.log_softmax(txt_all @ r_img.t() / 0.1, 1)).sum(1).mean()
        ref = (li + lt) / 2
        ref.backward()
        _check("positives loss", _mean_over_ranks(out.loss.double()), ref.detach())
        _check("positives grad image", img.grad / WORLD, r_img.grad[sl])
    finally:
        dist.destroy_process_group()


def test_identity_when_not_initialised() -> None:
    assert not dist.is_initialized()
    x = torch.randn(3, 2, requires_grad=True)
    assert world_info() == (0, 1)
    assert all_gather_with_grad(x) is x
    y = all_gather_no_grad(x)
    assert torch.equal(y, x) and not y.requires_grad
    with pytest.raises(ValueError, match="x"):
        all_gather_with_grad(torch.tensor(1.0))


@pytest.mark.distributed
@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="gloo backend not available"
)
def test_two_process_gather_and_contrastive_match_single_process() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    run_ranks(_worker, (free_port(),), nprocs=WORLD, timeout=90)
