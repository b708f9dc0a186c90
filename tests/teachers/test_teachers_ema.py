"""EMATeacher: EMA math against a float64 loop reference, pairing, buffers, shadow, state."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from maskmm.teachers import (
    ConstantDecay,
    CosineDecay,
    CountWarmupDecay,
    EMATeacher,
    LinearDecay,
    PowerWarmupDecay,
    WarmupDecay,
    canonical_name,
)


class Net(nn.Module):
    """Small model with a tied embedding/head, BatchNorm buffers and a nested block."""

    def __init__(self, vocab: int = 11, dim: int = 7) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.enc = nn.Sequential(nn.Linear(dim, 5), nn.BatchNorm1d(5), nn.GELU(), nn.Linear(5, dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        x = self.norm(x + self.enc(x))
        return self.head(x)


class Wrapper(nn.Module):  # stands in for DistributedDataParallel: adds "module."
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.module = m

    def forward(self, *a, **k):
        return self.module(*a, **k)


class Compiled(nn.Module):  # stands in for torch.compile's OptimizedModule: adds "_orig_mod."
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self._orig_mod = m

    def forward(self, *a, **k):
        return self._orig_mod(*a, **k)


def _state64(module: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for n, p in module.named_parameters(remove_duplicate=False):
        out[canonical_name(n)] = p.detach().double().clone()
    return out


def _teacher_tensors(teacher: EMATeacher) -> dict[str, torch.Tensor]:
    return {canonical_name(n): b for n, b in teacher.module.named_buffers(remove_duplicate=False)}


def _train_step(student: nn.Module, gen: torch.Generator, scale: float = 0.1) -> None:
    """Pretend optimizer step (random parameter change) and a train-mode forward (BN stats move)."""
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    student.train()
    ids = torch.randint(0, 11, (6,), generator=gen)
    bare = student
    while isinstance(bare, (Wrapper, Compiled)):
        bare = next(iter(bare.children()))
    bare(ids)


SCHEDULES = [
    (0.9, lambda t: 0.9),
    (ConstantDecay(0.5), lambda t: 0.5),
    (LinearDecay(0.3, 0.9, 3), lambda t: 0.3 + 0.6 * min(t, 3) / 3),
    (CosineDecay(0.6, 1.0, 4), lambda t: 1.0 - 0.4 * (math.cos(math.pi * min(t, 4) / 4) + 1) / 2),
    (WarmupDecay(ConstantDecay(0.8), 2), lambda t: 0.0 if t < 2 else 0.8),
    (CountWarmupDecay(0.95, 10), lambda t: min(0.95, (1 + t) / (10 + t))),
    (PowerWarmupDecay(0.99, gamma=1.0, power=0.75), lambda t: min(0.99, 1 - (1 + t) ** -0.75)),
    (lambda t: 0.25 * (t % 3), lambda t: 0.25 * (t % 3)),
]


@pytest.mark.parametrize("decay,closed_form", SCHEDULES)
def test_ema_matches_float64_loop_reference(decay, closed_form) -> None:
    gen = torch.Generator().manual_seed(1)
    student = Net()
    teacher = EMATeacher(student, decay=decay)
    ref = _state64(student)
    for step in range(6):
        _train_step(student, gen)
        teacher.update(step)
        d = closed_form(step)
        assert teacher.decay_at(step) == pytest.approx(d, abs=1e-12)
        for name, p in _state64(student).items():
            ref[name] = d * ref[name] + (1 - d) * p
    got = _teacher_tensors(teacher)
    for name, want in ref.items():
        torch.testing.assert_close(got[name].double(), want, rtol=1e-6, atol=1e-6, msg=name)
    # buffers are copied, not averaged
    torch.testing.assert_close(
        teacher.module.enc[1].running_mean, student.enc[1].running_mean, rtol=0, atol=0
    )
    assert int(teacher.module.enc[1].num_batches_tracked) == 6
    assert teacher.last_step == 5


def test_tied_weights_stay_tied_and_are_averaged_once() -> None:
    student = Net()
    teacher = EMATeacher(student, decay=0.5)
    t = teacher.module
    assert t.head.weight is t.emb.weight
    before = t.emb.weight.double().clone()
    with torch.no_grad():
        student.emb.weight.add_(1.0)
    teacher.update(0)
    torch.testing.assert_close(t.emb.weight.double(), 0.5 * before + 0.5 * student.emb.weight.double())


def test_teacher_is_not_a_parameter_of_a_parent_and_gets_no_grad() -> None:
    student = Net()
    parent = nn.Module()
    parent.student = student
    parent.teacher = EMATeacher(student)
    student_ids = {id(p) for p in student.parameters()}
    assert {id(p) for p in parent.parameters()} == student_ids
    assert list(parent.teacher.parameters()) == []
    assert all(not b.requires_grad for b in parent.teacher.buffers())
    # the parent's state_dict still holds the teacher weights
    assert "teacher.module.emb.weight" in parent.state_dict()
    parent.train()
    assert parent.teacher.training and not parent.teacher.module.training
    assert not any(m.training for m in parent.teacher.module.modules())
    ids = torch.randint(0, 11, (5,))
    t_out = parent.teacher(ids)
    assert not t_out.requires_grad
    loss = (student(ids) - t_out).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(b.grad is None for b in parent.teacher.buffers())


def test_prefixes_on_either_side_are_tolerated() -> None:
    gen = torch.Generator().manual_seed(2)
    bare = Net()
    student = Wrapper(Compiled(bare))  # names "module._orig_mod.emb.weight", ...
    teacher = EMATeacher(student, decay=0.7)
    assert type(teacher.module) is Net  # wrappers are not copied
    assert set(teacher.averaged_names) == set(_state64(bare))
    ref = _state64(bare)
    for step in range(3):
        _train_step(student, gen)
        teacher.update(step)
        ref = {k: 0.7 * v + 0.3 * _state64(bare)[k] for k, v in ref.items()}
    for name, v in _teacher_tensors(teacher).items():
        if name in ref:
            torch.testing.assert_close(v.double(), ref[name], rtol=1e-6, atol=1e-6)

    # prefixes on the teacher side (an explicitly given, wrapped teacher module), bare student
    other = Net()
    given = Compiled(Wrapper(copy.deepcopy(other)))
    t2 = EMATeacher(other, decay=0.0, module=given)
    with torch.no_grad():
        other.norm.weight.fill_(3.0)
    t2.update(0)
    assert torch.equal(t2.module.norm.weight, other.norm.weight)

    # a submodule compiled in the middle of the tree
    mid = Net()
    mid.enc = Compiled(mid.enc)
    t3 = EMATeacher(mid, decay=0.0)
    assert "enc.0.weight" in t3.averaged_names
    assert canonical_name("module._orig_mod.enc._orig_mod.0.weight") == "enc.0.weight"


def test_unmatched_names_raise_at_construction() -> None:
    student = Net()
    wrong = Net()
    wrong.extra = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"extra\.weight"):
        EMATeacher(student, module=wrong)
    with pytest.raises(ValueError, match="share parameters"):
        EMATeacher(student, module=student)
    with pytest.raises(TypeError, match="student"):
        EMATeacher("net")  # type: ignore[arg-type]


def test_skip_keeps_parameters_frozen() -> None:
    student = Net()
    teacher = EMATeacher(student, decay=0.0, skip=("norm", "enc.*.bias"))
    init_norm = teacher.module.norm.weight.clone()
    init_bias = teacher.module.enc[0].bias.clone()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(0)
    assert torch.equal(teacher.module.norm.weight, init_norm)
    assert torch.equal(teacher.module.enc[0].bias, init_bias)
    assert torch.equal(teacher.module.enc[0].weight, student.enc[0].weight)
    assert "norm.weight" not in teacher.averaged_names and "enc.3.bias" not in teacher.averaged_names
    with pytest.raises(ValueError, match="skip patterns match no"):
        EMATeacher(student, skip=("nothing_here",))


def test_include_copies_only_chosen_submodules() -> None:
    student = Net()
    teacher = EMATeacher(student, decay=0.0, include=["enc", "norm"])
    names = set(teacher.averaged_names)
    assert names == {n for n in _state64(student) if n.startswith(("enc.", "norm."))}
    assert not hasattr(teacher.module, "emb")
    x = torch.randn(4, 7)
    student.eval()
    torch.testing.assert_close(teacher.run("enc", x), student.enc(x))
    with pytest.raises(TypeError, match="run"):
        teacher(x)
    with pytest.raises(ValueError, match="overlap"):
        EMATeacher(student, include=["enc", "enc.0"])
    with pytest.raises(ValueError, match="missing"):
        EMATeacher(student, include=["missing"])
    # nested include on a wrapped student, names as the student prints them
    t2 = EMATeacher(Wrapper(student), include=["module.enc.0"])
    assert set(t2.averaged_names) == {"enc.0.weight", "enc.0.bias"}


def test_fp32_shadow_with_bf16_student() -> None:
    gen = torch.Generator().manual_seed(3)
    student = nn.Linear(33, 17).to(torch.bfloat16)
    shadowed = EMATeacher(student, decay=0.999, fp32_shadow=True)
    plain = EMATeacher(student, decay=0.999)
    assert shadowed.shadow.get_buffer("weight").dtype == torch.float32
    ref = student.weight.detach().double().clone()
    for step in range(40):
        with torch.no_grad():
            student.weight.add_((torch.randn(student.weight.shape, generator=gen) * 0.05).bfloat16())
        shadowed.update(step)
        plain.update(step)
        ref = 0.999 * ref + 0.001 * student.weight.double()
    sh = shadowed.shadow.get_buffer("weight").double()
    torch.testing.assert_close(sh, ref, rtol=1e-5, atol=1e-6)
    w = shadowed.module.weight
    assert w.dtype == torch.bfloat16
    assert torch.equal(w, shadowed.shadow.get_buffer("weight").bfloat16())
    err_shadow = (w.double() - ref).abs().max()
    err_plain = (plain.module.weight.double() - ref).abs().max()
    assert err_shadow < err_plain  # bf16-only accumulation loses the small increments
    assert err_shadow <= 2**-8 * ref.abs().max()  # within bf16 rounding of the exact EMA


def test_shadow_survives_casts_and_cast_student_path() -> None:
    student = nn.Linear(5, 3).to(torch.bfloat16)
    teacher = EMATeacher(student, decay=0.5, fp32_shadow=True)
    teacher.half()
    assert teacher.shadow.get_buffer("bias").dtype == torch.float32
    assert teacher.module.bias.dtype == torch.float16
    # teacher and student now differ in dtype: the update casts the student
    ref = teacher.shadow.get_buffer("weight").double().clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update(0)
    ref = 0.5 * ref + 0.5 * student.weight.double()
    torch.testing.assert_close(teacher.shadow.get_buffer("weight").double(), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(teacher.module.weight, ref.half())

    fp32_student = nn.Linear(5, 3)
    t64 = EMATeacher(fp32_student, decay=0.25).double()
    before = t64.module.weight.clone()
    with torch.no_grad():
        fp32_student.weight.mul_(-2.0)
    t64.update(0)
    assert t64.module.weight.dtype == torch.float64
    torch.testing.assert_close(t64.module.weight, 0.25 * before + 0.75 * fp32_student.weight.double())


def test_state_dict_round_trip() -> None:
    gen = torch.Generator().manual_seed(4)
    student = Net().to(torch.bfloat16)
    teacher = EMATeacher(student, decay=0.9, fp32_shadow=True)
    for step in range(3):
        _train_step(student, gen)
        teacher.update(step)
    buf = io.BytesIO()
    torch.save(teacher.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    assert any(k.startswith("shadow.") for k in state)

    fresh = EMATeacher(copy.deepcopy(student), decay=0.9, fp32_shadow=True)
    assert fresh.last_step == -1
    fresh.load_state_dict(state)
    assert fresh.last_step == 2
    for (k, a), (k2, b) in zip(teacher.state_dict().items(), fresh.state_dict().items()):
        assert k == k2
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), k
    # both continue identically
    _train_step(student, gen)
    teacher.update(3)
    fresh_student = fresh.student
    with torch.no_grad():
        for p, q in zip(fresh_student.parameters(), student.parameters()):
            p.copy_(q)
    fresh.update(3)
    assert torch.equal(fresh.shadow.get_buffer("enc/0/weight"), teacher.shadow.get_buffer("enc/0/weight"))


def test_bad_update_inputs() -> None:
    teacher = EMATeacher(nn.Linear(2, 2), decay=lambda t: 2.0)
    with pytest.raises(ValueError, match=r"schedule returned 2\.0"):
        teacher.update(0)
    with pytest.raises(ValueError, match="decay"):
        EMATeacher(nn.Linear(2, 2), decay=1.5)
    with pytest.raises(ValueError, match="step"):
        EMATeacher(nn.Linear(2, 2)).update(-1)
    with pytest.raises(TypeError, match="include"):
        EMATeacher(nn.Linear(2, 2), include="weight")


def test_student_cast_after_construction_is_detected() -> None:
    student = nn.Linear(4, 3)
    teacher = EMATeacher(student, decay=0.5)
    teacher.update(0)  # builds the cached lists
    before = teacher.module.weight.double().clone()
    student.double()  # same Parameter objects, new dtype
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update(1)
    assert teacher.module.weight.dtype == torch.float32
    torch.testing.assert_close(
        teacher.module.weight.double(), 0.5 * before + 0.5 * student.weight, rtol=1e-6, atol=1e-6
    )


def test_shape_mismatch_raises_at_construction_and_leaves_module_untouched() -> None:
    student = nn.Sequential(nn.Linear(4, 3))
    given = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"0\.weight.*shape"):
        EMATeacher(student, module=given)
    assert len(list(given.parameters())) == 2  # not converted to buffers on failure


def test_ema_update_function() -> None:
    from maskmm.teachers import ema_update_

    gen = torch.Generator().manual_seed(5)
    t = [torch.randn(3, 5, generator=gen), torch.randn(7, generator=gen).half()]
    s = [torch.randn(3, 5, generator=gen), torch.randn(7, generator=gen).half()]
    want = [0.8 * a.double() + 0.2 * b.double() for a, b in zip(t, s)]
    ema_update_(t, s, 0.8)
    torch.testing.assert_close(t[0].double(), want[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(t[1].double(), want[1], rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="length"):
        ema_update_(t, s[:1], 0.5)


def test_replaced_student_parameter_is_followed() -> None:
    """A student tensor replaced after the first update (e.g. ``load_state_dict(assign=True)``)."""
    student = Net()
    teacher = EMATeacher(student, decay=0.5)
    teacher.update(0)  # builds the cached lists
    before = teacher.module.enc[3].weight.double().clone()
    student.enc[3].weight = nn.Parameter(torch.randn(student.enc[3].weight.shape, dtype=torch.float32))
    teacher.update(1)
    want = 0.5 * before + 0.5 * student.enc[3].weight.detach().double()
    torch.testing.assert_close(teacher.module.enc[3].weight.double(), want, rtol=1e-6, atol=1e-6)


def test_warmup_schedule_copies_the_student_then_averages() -> None:
    student = nn.Linear(3, 2)
    teacher = EMATeacher(student, decay=WarmupDecay(ConstantDecay(0.9), 2))
    for step in range(2):  # steps 0 and 1: decay 0, the teacher is a copy
        with torch.no_grad():
            student.weight.add_(1.0)
        teacher.update(step)
        assert torch.equal(teacher.module.weight, student.weight)
    before = teacher.module.weight.double().clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update(2)  # the wrapped schedule's step 0
    torch.testing.assert_close(
        teacher.module.weight.double(), 0.9 * before + 0.1 * student.weight.double(), rtol=1e-6, atol=1e-6
    )
