from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from maskmm.training import build_adamw, linear_ramp, param_groups, warmup_cosine, warmup_cosine_scheduler


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 5)
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 5))
        self.lin = nn.Linear(5, 3)
        self.norm = nn.LayerNorm(3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


def test_param_groups_split_and_frozen_excluded():
    net = _Net()
    decay, skip = param_groups(net, 0.05)
    assert decay["weight_decay"] == 0.05 and skip["weight_decay"] == 0.0
    assert sorted(decay["names"]) == ["embed.weight", "lin.weight"]
    assert sorted(skip["names"]) == ["lin.bias", "norm.bias", "norm.weight", "pos_embed"]
    n_params = len(decay["params"]) + len(skip["params"])
    assert n_params == sum(1 for p in net.parameters() if p.requires_grad)


def test_param_groups_shared_parameter_once():
    a = nn.Linear(4, 4)
    net = nn.ModuleDict({"a": a, "b": a})
    groups = param_groups(net, 0.1)
    assert sum(len(g["params"]) for g in groups) == 2


def test_param_groups_bad_decay():
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(_Net(), -1.0)


def test_build_adamw_decay_only_on_weights():
    torch.manual_seed(0)
    net = _Net()
    opt = build_adamw(net, lr=0.1, weight_decay=0.5)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)  # zero gradient: only decay can move a parameter
    opt.step()
    for n, p in net.named_parameters():
        moved = not torch.equal(before[n], p.detach())
        should = n in ("embed.weight", "lin.weight")
        assert moved == should, n
    with pytest.raises(ValueError, match="lr"):
        build_adamw(net, lr=0.0)


def _ref_lr(step, total, warm, mn):
    if step < warm:
        return (step + 1) / warm
    p = min((step - warm) / max(total - warm, 1), 1.0)
    return mn + (1 - mn) * (1 + math.cos(math.pi * p)) / 2


@pytest.mark.parametrize(("total", "warm", "mn"), [(37, 5, 0.1), (11, 0, 0.0), (9, 9, 0.3)])
def test_warmup_cosine_values(total, warm, mn):
    for s in range(total + 3):
        assert warmup_cosine(s, total, warm, mn) == pytest.approx(_ref_lr(s, total, warm, mn))
    assert warmup_cosine(total + 5, total, warm, mn) == pytest.approx(mn)


def test_warmup_cosine_scheduler_drives_lr():
    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=2.0)
    sch = warmup_cosine_scheduler(opt, 13, 3, 0.05)
    seen = []
    for _ in range(13):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    assert seen == pytest.approx([2.0 * _ref_lr(s, 13, 3, 0.05) for s in range(13)])
    with pytest.raises(ValueError, match="min_ratio"):
        warmup_cosine_scheduler(opt, 10, 1, 1.5)


def test_linear_ramp():
    assert linear_ramp(0, 10, 0.4) == 0.0
    assert linear_ramp(5, 10, 0.4) == pytest.approx(0.2)
    assert linear_ramp(50, 10, 0.4) == pytest.approx(0.4)
    assert linear_ramp(0, 0, 0.4) == pytest.approx(0.4)
