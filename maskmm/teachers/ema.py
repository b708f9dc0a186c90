"""Exponential-moving-average (momentum) teacher.

``teacher = m * teacher + (1 - m) * student`` after every optimizer step, with
``m`` from a decay schedule (:mod:`maskmm.teachers.schedules`). The teacher is a
deep copy of the student (or of chosen submodules), always in eval mode, and
never trained.

How the teacher stays out of optimizers: the copied module's parameters are
turned into **buffers** (same names, same values, ``requires_grad=False``), so
``parameters()`` of the teacher, and of any model that holds it as a submodule,
returns none of them; they are still saved in ``state_dict()``. If a parent
holding the teacher is wrapped by ``DistributedDataParallel``, pass
``broadcast_buffers=False`` or keep the teacher outside the wrapped model,
otherwise the (identical) teacher weights are re-broadcast every forward.

The student is held by reference, outside the module tree (it is not a
submodule of the teacher and is not in its ``state_dict``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .naming import check_names, get_slot, matches_any, named_slots, resolve_submodule, unwrap_module
from .schedules import DecaySchedule, as_schedule, check_step, evaluate_schedule

__all__ = ["EMATeacher", "ema_update_"]


class _TeacherParts(nn.Module):
    """Container mirroring the student's module tree for an ``include``-restricted teacher."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "this teacher holds only the submodules named in include; call teacher.run(name, ...) "
            "or teacher.module.<name>(...) instead"
        )


class _Shadow(nn.Module):
    """fp32 master copies of low-precision teacher weights, keyed by name with '.' -> '/'."""

    def forward(self) -> None:  # pragma: no cover - never called
        raise TypeError("the fp32 shadow is not callable")


def _params_to_buffers(module: nn.Module) -> None:
    """Re-register every parameter of ``module`` as a buffer of the same name (ties kept)."""
    memo: dict[int, torch.Tensor] = {}
    for owner in module.modules():
        for key, param in list(owner._parameters.items()):
            if param is None:
                continue
            tensor = memo.get(id(param))
            if tensor is None:
                tensor = param.detach()
                memo[id(param)] = tensor
            del owner._parameters[key]
            owner.register_buffer(key, tensor, persistent=True)


def _shadow_key(name: str) -> str:
    return name.replace(".", "/")


@dataclass
class _Plan:
    """Flat lists built once (and rebuilt only after a move/cast): what ``update`` touches."""

    targets: list[torch.Tensor] = field(default_factory=list)  # lerp destinations (teacher or shadow)
    students: list[torch.Tensor] = field(default_factory=list)  # lerp sources
    cast: list[int] = field(default_factory=list)  # indices whose student needs a dtype/device cast
    shadow_src: list[torch.Tensor] = field(default_factory=list)  # shadows, copied into ...
    shadow_dst: list[torch.Tensor] = field(default_factory=list)  # ... the teacher weights
    buf_dst: list[torch.Tensor] = field(default_factory=list)
    buf_src: list[torch.Tensor] = field(default_factory=list)
    buf_non_blocking: bool = True  # False when a buffer is copied into CPU memory
    # (owner, key, tensor, device, dtype) of every slot used: identity, device and dtype must still
    # hold for the plan to be valid (a replaced, moved or cast tensor triggers a rebuild)
    sentinels: list[tuple[nn.Module, str, torch.Tensor, torch.device, torch.dtype]] = field(
        default_factory=list
    )


def ema_update_(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], decay: float) -> None:
    """In place ``t = decay * t + (1 - decay) * s`` for paired lists of equal dtype/device tensors.

    One ``torch._foreach_lerp_`` call (which groups tensors by device and dtype);
    runs under ``no_grad``.
    """
    if len(teacher) != len(student):
        raise ValueError(f"teacher and student lists differ in length: {len(teacher)} vs {len(student)}")
    if teacher:
        with torch.no_grad():
            torch._foreach_lerp_(list(teacher), list(student), 1.0 - float(decay))


class EMATeacher(nn.Module):
    """Momentum teacher that follows a student by EMA of its parameters.

    Args:
        student: the trained module (may be wrapped by DDP or ``torch.compile``).
        decay: a float in ``[0, 1]`` (constant) or a schedule ``step -> float``.
        include: canonical names of student submodules to copy (e.g.
            ``["vision", "fusion"]``); ``None`` copies the whole student. With
            ``include``, ``teacher.module`` mirrors the student's tree holding only
            those submodules; run one with :meth:`run`.
        skip: name patterns (see :func:`maskmm.teachers.naming.matches_any`) of
            parameters/buffers kept frozen at their initial values, not averaged.
        fp32_shadow: keep fp32 master copies of low-precision (fp16/bf16) teacher
            weights; the EMA accumulates in fp32 and ``teacher.module`` exposes
            the weights cast back to their dtype. Recommended for bf16 students,
            whose small EMA increments would otherwise round away.
        copy_buffers: copy the student's buffers (e.g. BatchNorm statistics) at
            every update.
        module: an already-built teacher module with the student's parameter
            names (e.g. a separately built momentum model); default deep-copies.
            Its parameters are turned into buffers too.

    Names are paired by canonical name (``module.`` / ``_orig_mod.`` prefixes
    ignored on either side). A name on one side with no match on the other
    (after ``include`` and ``skip``) raises ``ValueError`` here, at construction.

    The update is called by the training loop after the optimizer step:
    ``teacher.update(step)``. Calling the teacher never updates it.
    """

    def __init__(
        self,
        student: nn.Module,
        *,
        decay: float | DecaySchedule | Callable[[int], float] = 0.995,
        include: Sequence[str] | None = None,
        skip: Sequence[str] = (),
        fp32_shadow: bool = False,
        copy_buffers: bool = True,
        module: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(student, nn.Module):
            raise TypeError(f"student must be an nn.Module, got {type(student).__name__}")
        if module is not None and not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module or None, got {type(module).__name__}")
        for flag_name, flag in (("fp32_shadow", fp32_shadow), ("copy_buffers", copy_buffers)):
            if not isinstance(flag, bool):
                raise TypeError(f"{flag_name} must be a bool, got {type(flag).__name__}")
        schedule = as_schedule(decay)
        include_names = check_names("include", include)
        skip_names = check_names("skip", skip) or ()
        if include_names is not None:
            if len(include_names) == 0:
                raise ValueError("include must name at least one submodule, got an empty sequence")
            _check_disjoint(include_names)

        base = unwrap_module(student)
        if module is None:
            teacher = _copy_student(base, include_names)
        else:
            teacher = unwrap_module(module)
            student_ids = {id(p) for p in base.parameters()}
            if teacher is base or any(id(p) in student_ids for p in teacher.parameters()):
                raise ValueError("module must not share parameters with the student")

        def in_scope(name: str) -> bool:
            return include_names is None or matches_any(name, include_names)

        t_params = [s for s in named_slots(teacher, "param") if in_scope(s[0])]
        t_bufs = [s for s in named_slots(teacher, "buffer") if in_scope(s[0])]
        s_params = [s for s in named_slots(student, "param") if in_scope(s[0])]
        s_bufs = [s for s in named_slots(student, "buffer") if in_scope(s[0])]

        if skip_names:
            every = [n for n, _, _ in t_params + t_bufs + s_params + s_bufs]
            unused = [p for p in skip_names if not any(matches_any(n, (p,)) for n in every)]
            if unused:
                raise ValueError(f"skip patterns match no parameter or buffer: {unused}")

        param_pairs = _pair("parameter", t_params, s_params, skip_names)
        buffer_pairs = _pair("buffer", t_bufs, s_bufs, skip_names) if copy_buffers else []
        for name, t_owner, t_key, s_owner, s_key in param_pairs:
            t, s = get_slot(t_owner, t_key), get_slot(s_owner, s_key)
            if not t.is_floating_point():
                raise TypeError(f"parameter {name!r} is {t.dtype}; EMA needs floating point")
            if t.shape != s.shape:
                raise ValueError(
                    f"parameter {name!r}: teacher shape {list(t.shape)} != student {list(s.shape)}"
                )
        for name, t_owner, t_key, s_owner, s_key in buffer_pairs:
            t, s = get_slot(t_owner, t_key), get_slot(s_owner, s_key)
            if t.shape != s.shape:
                raise ValueError(f"buffer {name!r}: teacher shape {list(t.shape)} != student {list(s.shape)}")

        _params_to_buffers(teacher)  # only after every check passed: a given module is changed in place
        teacher.eval()
        self.module = teacher
        self._student = (student,)  # a tuple keeps the student out of the module tree
        self._schedule = schedule
        self._fp32_shadow = fp32_shadow
        self._copy_buffers = copy_buffers
        self._last_step = -1
        self._param_pairs = param_pairs
        self._buffer_pairs = buffer_pairs

        self.shadow = _Shadow()
        if fp32_shadow:
            for name, t_owner, t_key, _, _ in self._param_pairs:
                tensor = get_slot(t_owner, t_key)
                if tensor.dtype != torch.float32 and _shadow_key(name) not in self.shadow._buffers:
                    self.shadow.register_buffer(_shadow_key(name), tensor.detach().float().clone())
        self._plan: _Plan | None = self._build_plan()

    # ------------------------------------------------------------------ properties
    @property
    def student(self) -> nn.Module:
        """The module this teacher follows."""
        return self._student[0]

    @property
    def last_step(self) -> int:
        """Step of the last :meth:`update` (``-1`` before the first)."""
        return self._last_step

    @property
    def averaged_names(self) -> list[str]:
        """Canonical names of the tensors averaged at each update."""
        return [p[0] for p in self._param_pairs]

    @property
    def copied_buffer_names(self) -> list[str]:
        """Canonical names of the buffers copied at each update."""
        return [p[0] for p in self._buffer_pairs]

    def decay_at(self, step: int) -> float:
        """The decay the schedule gives at ``step`` (checked to lie in ``[0, 1]``)."""
        return evaluate_schedule(self._schedule, check_step("step", step))

    # ------------------------------------------------------------------ running
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the teacher module under ``torch.no_grad()``."""
        with torch.no_grad():
            return self.module(*args, **kwargs)

    def run(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run the teacher's submodule ``name`` (canonical dotted name) under ``torch.no_grad()``."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        sub = resolve_submodule(self.module, check_names("name", [name])[0])
        with torch.no_grad():
            return sub(*args, **kwargs)

    def train(self, mode: bool = True) -> EMATeacher:
        """Record ``mode`` but keep the teacher module in eval mode."""
        if not isinstance(mode, bool):
            raise TypeError(f"mode must be a bool, got {type(mode).__name__}")
        self.training = mode
        self.shadow.train(mode)
        self.module.eval()
        return self

    # ------------------------------------------------------------------ updating
    @torch.no_grad()
    def update(self, step: int) -> None:
        """EMA step: ``teacher = m * teacher + (1 - m) * student`` with ``m = decay_at(step)``.

        ``step`` is the 0-based index of the optimizer step just taken (pass 0 after the
        first one). Also copies the paired buffers. Call after the optimizer step; no host
        sync.
        """
        decay = self.decay_at(step)
        plan = self._get_plan()
        if plan.targets:
            students = plan.students
            if plan.cast:
                students = list(students)
                for i in plan.cast:
                    ref = plan.targets[i]
                    # non_blocking only towards an accelerator: a non-blocking copy to the CPU may be
                    # read by the CPU lerp before it has landed.
                    students[i] = students[i].to(
                        device=ref.device, dtype=ref.dtype, non_blocking=ref.device.type != "cpu"
                    )
            torch._foreach_lerp_(plan.targets, students, 1.0 - decay)
        if plan.shadow_dst:
            torch._foreach_copy_(plan.shadow_dst, plan.shadow_src)
        if plan.buf_dst:
            torch._foreach_copy_(plan.buf_dst, plan.buf_src, non_blocking=plan.buf_non_blocking)
        self._last_step = check_step("step", step)

    def refresh(self) -> None:
        """Rebuild the cached tensor lists (done automatically after ``.to()`` / loading)."""
        self._plan = None

    def _get_plan(self) -> _Plan:
        plan = self._plan
        if plan is not None and all(
            get_slot(owner, key) is t and t.device == dev and t.dtype == dt
            for owner, key, t, dev, dt in plan.sentinels
        ):
            return plan
        plan = self._build_plan()
        self._plan = plan
        return plan

    def _build_plan(self) -> _Plan:
        plan = _Plan()
        seen: set[int] = set()

        def sentinel(owner: nn.Module, key: str) -> None:
            t = get_slot(owner, key)
            plan.sentinels.append((owner, key, t, t.device, t.dtype))

        for name, t_owner, t_key, s_owner, s_key in self._param_pairs:
            teacher = get_slot(t_owner, t_key)
            if id(teacher) in seen:  # tied teacher weights are averaged once
                continue
            seen.add(id(teacher))
            student = get_slot(s_owner, s_key)
            shadow = self.shadow._buffers.get(_shadow_key(name))
            target = teacher if shadow is None else shadow
            if target.shape != student.shape:
                raise ValueError(
                    f"parameter {name!r}: teacher shape {list(target.shape)} != student {list(student.shape)}"
                )
            if shadow is not None:
                plan.shadow_src.append(shadow)
                plan.shadow_dst.append(teacher)
            if (student.dtype, student.device) != (target.dtype, target.device):
                plan.cast.append(len(plan.targets))
            plan.targets.append(target)
            plan.students.append(student)
            sentinel(t_owner, t_key)
            sentinel(s_owner, s_key)
        if self._fp32_shadow:
            for key in self.shadow._buffers:
                sentinel(self.shadow, key)
        seen.clear()
        for name, t_owner, t_key, s_owner, s_key in self._buffer_pairs:
            teacher = get_slot(t_owner, t_key)
            if id(teacher) in seen:
                continue
            seen.add(id(teacher))
            student = get_slot(s_owner, s_key)
            if teacher.shape != student.shape:
                raise ValueError(
                    f"buffer {name!r}: teacher shape {list(teacher.shape)} != student {list(student.shape)}"
                )
            plan.buf_dst.append(teacher)
            plan.buf_src.append(student)
            plan.buf_non_blocking = plan.buf_non_blocking and teacher.device.type != "cpu"
            sentinel(t_owner, t_key)
            sentinel(s_owner, s_key)
        return plan

    # ------------------------------------------------------------------ module plumbing
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> EMATeacher:
        old_shadow = dict(self.shadow._buffers)
        super()._apply(fn, recurse)
        for key, old in old_shadow.items():  # the shadow follows device moves but stays fp32
            new = self.shadow._buffers[key]
            if new is not None and new.dtype != torch.float32:
                self.shadow._buffers[key] = old.to(device=new.device)
        self._plan = None
        return self

    def get_extra_state(self) -> dict[str, Any]:
        return {"last_step": self._last_step}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or "last_step" not in state:
            raise ValueError(f"EMATeacher extra state must be a dict with 'last_step', got {state!r}")
        self._last_step = int(state["last_step"])

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._plan = None
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"schedule={self._schedule!r}, averaged={len(self._param_pairs)}, "
            f"buffers={len(self._buffer_pairs)}, fp32_shadow={self._fp32_shadow}"
        )


def _check_disjoint(names: Sequence[str]) -> None:
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if a == b or a.startswith(b + ".") or b.startswith(a + "."):
                raise ValueError(f"include entries overlap: {a!r} and {b!r}")


def _copy_student(base: nn.Module, include: Sequence[str] | None) -> nn.Module:
    if include is None:
        return copy.deepcopy(base)
    memo: dict[int, Any] = {}  # one memo keeps weights tied across the copied submodules
    root = _TeacherParts()
    for name in include:
        sub = copy.deepcopy(resolve_submodule(base, name), memo)
        parent = root
        *path, last = name.split(".")
        for part in path:
            child = parent._modules.get(part)
            if child is None:
                child = _TeacherParts()
                parent.add_module(part, child)
            parent = child
        parent.add_module(last, sub)
    return root


def _pair(
    kind: str,
    teacher_slots: list[tuple[str, nn.Module, str]],
    student_slots: list[tuple[str, nn.Module, str]],
    skip: Sequence[str],
) -> list[tuple[str, nn.Module, str, nn.Module, str]]:
    """Pair slots by canonical name; raise on unmatched names or ambiguous duplicates."""

    def by_name(side: str, slots: list[tuple[str, nn.Module, str]]) -> dict[str, tuple[nn.Module, str]]:
        out: dict[str, tuple[nn.Module, str]] = {}
        for name, owner, key in slots:
            if skip and matches_any(name, skip):
                continue
            prev = out.get(name)
            if prev is not None and get_slot(*prev) is not get_slot(owner, key):
                raise ValueError(
                    f"two different {side} {kind}s share the canonical name {name!r} "
                    "(after removing 'module.' / '_orig_mod.' prefixes)"
                )
            out.setdefault(name, (owner, key))
        return out

    teacher = by_name("teacher", teacher_slots)
    student = by_name("student", student_slots)
    only_t = sorted(set(teacher) - set(student))
    only_s = sorted(set(student) - set(teacher))
    if only_t or only_s:
        raise ValueError(
            f"cannot pair teacher and student {kind}s by name: "
            f"{len(only_s)} student {kind}(s) without a teacher match {only_s[:5]}, "
            f"{len(only_t)} teacher {kind}(s) without a student match {only_t[:5]}; "
            "use include/skip to restrict what is averaged"
        )
    return [(name, *teacher[name], *student[name]) for name in teacher]
