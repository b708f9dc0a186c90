from __future__ import annotations

import pytest
import torch
from torch import nn

from maskmm.training import (
    autocast,
    clip_grad_norm,
    init_distributed,
    reduce_mean,
    resolve_amp_dtype,
    seed_everything,
    select_device,
    split_microbatches,
    unwrap,
)


def test_clip_grad_norm_matches_reference():
    torch.manual_seed(0)
    ps = [
        nn.Parameter(torch.randn(3, 4, dtype=torch.float64)),
        nn.Parameter(torch.randn(5, dtype=torch.float64)),
    ]
    grads = [torch.randn_like(p) * 3 for p in ps]
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    ref = torch.sqrt(sum((g**2).sum() for g in grads))
    n = clip_grad_norm(ps, 0.0)
    assert torch.allclose(n.double(), ref)
    assert all(torch.equal(p.grad, g) for p, g in zip(ps, grads))
    n2 = clip_grad_norm(ps, 1.0)
    assert torch.allclose(n2.double(), ref)
    clipped = torch.sqrt(sum((p.grad**2).sum() for p in ps))
    assert clipped == pytest.approx(1.0, rel=1e-5)
    assert clip_grad_norm([nn.Parameter(torch.ones(2))], 1.0).item() == 0.0


def test_accumulation_equals_full_batch():
    torch.manual_seed(1)
    lin = nn.Linear(6, 3).double()
    x, y = torch.randn(12, 6, dtype=torch.float64), torch.randn(12, 3, dtype=torch.float64)
    ((lin(x) - y) ** 2).mean().backward()
    full = lin.weight.grad.clone()
    lin.zero_grad()
    parts = split_microbatches({"x": x, "y": y, "tag": "same"}, 3)
    assert len(parts) == 3 and all(p["tag"] == "same" for p in parts)
    for p in parts:
        (((lin(p["x"]) - p["y"]) ** 2).mean() / 3).backward()
    assert torch.allclose(lin.weight.grad, full)


def test_split_microbatches_errors():
    with pytest.raises(ValueError, match="divisible"):
        split_microbatches({"x": torch.zeros(5)}, 2)
    with pytest.raises(ValueError, match="disagree"):
        split_microbatches({"x": torch.zeros(4), "y": torch.zeros(6)}, 2)


def test_amp_and_device_resolution():
    cpu = torch.device("cpu")
    assert resolve_amp_dtype("auto", cpu) is None
    assert resolve_amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="amp"):
        resolve_amp_dtype("int8", cpu)
    with autocast(cpu, torch.bfloat16):
        out = nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    assert select_device("cpu") == cpu


def test_single_process_helpers(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.local_rank) == (0, 1, 0)
    x = torch.tensor([2.0, 4.0])
    assert torch.equal(reduce_mean(x), x)
    seed_everything(5, rank=1)
    a = torch.rand(3)
    seed_everything(6)
    assert torch.equal(a, torch.rand(3))
    m = nn.Linear(2, 2)

    class Compiled(nn.Module):
        def __init__(self):
            super().__init__()
            self._orig_mod = m

    assert unwrap(Compiled()) is m


def test_resumable_sampler_shards_and_resumes():
    from maskmm.training import ResumableSampler

    full = [list(ResumableSampler(23, seed=4, rank=r, world_size=3)) for r in range(3)]
    assert all(len(f) == 7 for f in full)
    flat = sorted(i for f in full for i in f)
    assert len(set(flat)) == 21 and all(0 <= i < 23 for i in flat)
    s = ResumableSampler(23, seed=4, rank=1, world_size=3)
    s.set_epoch(0, start=4)
    assert list(s) == full[1][4:] and len(s) == 3
    s.set_epoch(1)
    assert list(s) != full[1]  # a new epoch reshuffles
    assert list(ResumableSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="start"):
        s.set_epoch(0, start=8)


def test_resumable_sampler_blocks_rebuild_the_single_process_batches():
    from maskmm.training import ResumableSampler

    b, world = 4, 3  # per-rank batch, ranks: each step's global batch is 12 samples
    single = ResumableSampler(50, seed=2, block=b * world).indices().view(-1, b * world)
    ranks = [ResumableSampler(50, seed=2, rank=r, world_size=world, block=b).indices() for r in range(world)]
    assert all(len(r) == 16 for r in ranks)  # 50 // 12 = 4 whole global batches of 4 per rank
    per_step = torch.cat([r.view(-1, b) for r in ranks], dim=1)  # rank order within each step
    assert torch.equal(per_step, single)
    s = ResumableSampler(50, seed=2, rank=2, world_size=world, block=b)
    s.set_epoch(0, start=8)
    assert torch.equal(s.indices(), ranks[2][8:])
    with pytest.raises(ValueError, match="block"):
        ResumableSampler(50, block=0)
