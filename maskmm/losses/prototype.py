"""Prototype (code) agreement: cross-entropy between teacher and student code distributions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskmm._checks import check_floating, check_positive_float, check_same_device, check_tensor
from maskmm.losses.types import LossOutput, _acc_dtype, _masked_mean, _stat

__all__ = ["PrototypeLoss", "prototype_loss"]


def prototype_loss(
    student_logits: Tensor,
    teacher_probs: Tensor,
    mask: Tensor | None = None,
    *,
    student_temperature: float = 0.1,
    teacher_temperature: float | None = None,
) -> LossOutput:
    """``-sum_k q_k log softmax(s / tau_s)_k`` averaged over the scored positions (SemMIM / iBOT).

    Shapes:
        - local: ``student_logits`` ``[B, N, K]``, ``teacher_probs`` ``[B, N, K]``,
          ``mask bool [B, N]`` (``True`` = masked = scored); ``mask=None`` scores every position.
        - global: ``[B, K]`` and ``[B, K]`` with ``mask=None`` (or ``bool [B]`` to select rows).

    For both local and global terms call twice and add (weights are the caller's).

    Args:
        student_logits: student scores over ``K`` prototypes.
        teacher_probs: teacher distribution (constants), e.g. a centred and sharpened
            softmax from :mod:`maskmm.targets`. With ``teacher_temperature`` set they are
            logits instead and become ``softmax(teacher / teacher_temperature)``.
        student_temperature: ``tau_s > 0``.

    Returns:
        ``LossOutput`` (0, graph-connected, when nothing is scored) with stats
        ``num_scored``, ``teacher_entropy`` / ``student_entropy`` (mean per-row entropy,
        a collapse monitor) and ``agreement`` (arg-max match rate).
    """
    check_floating("student_logits", student_logits)
    if student_logits.dim() not in (2, 3):
        raise ValueError(
            f"student_logits must have shape [B, N, K] or [B, K], got {list(student_logits.shape)}"
        )
    check_floating("teacher_probs", teacher_probs, shape=tuple(student_logits.shape))
    lead = tuple(student_logits.shape[:-1])
    if mask is not None:
        check_tensor("mask", mask, shape=lead, dtype=torch.bool)
    student_temperature = check_positive_float("student_temperature", student_temperature)
    if teacher_temperature is not None:
        teacher_temperature = check_positive_float("teacher_temperature", teacher_temperature)
    check_same_device(student_logits=student_logits, teacher_probs=teacher_probs, mask=mask)

    sel = mask if mask is not None else torch.ones(lead, dtype=torch.bool, device=student_logits.device)
    keep = sel.unsqueeze(-1)
    acc = _acc_dtype(student_logits, teacher_probs)
    zero = student_logits.new_zeros((), dtype=acc)
    # Unscored rows are zeroed first (exactly zero gradient, non-finite values cannot leak in).
    s = torch.where(keep, student_logits.to(acc), zero)
    q = torch.where(keep, teacher_probs.detach().to(acc), zero)
    if teacher_temperature is not None:
        q = torch.softmax(q / teacher_temperature, dim=-1)
    logp = F.log_softmax(s / student_temperature, dim=-1)
    per_pos = -(q * logp).sum(-1)
    loss, count = _masked_mean(per_pos, sel)
    with torch.no_grad():
        t_ent = -(q * q.clamp(min=1e-12).log()).sum(-1)
        s_ent = -(logp.exp() * logp).sum(-1)
        agree = (logp.argmax(-1) == q.argmax(-1)).float()
        stats = {
            "num_scored": count,
            "teacher_entropy": _stat(_masked_mean(t_ent, sel)[0]),
            "student_entropy": _stat(_masked_mean(s_ent, sel)[0]),
            "agreement": _stat(_masked_mean(agree, sel)[0]),
        }
    return LossOutput(loss, stats)


class PrototypeLoss(nn.Module):
    """Module form of :func:`prototype_loss` (holds the temperatures)."""

    def __init__(self, student_temperature: float = 0.1, teacher_temperature: float | None = None) -> None:
        super().__init__()
        self.student_temperature = check_positive_float("student_temperature", student_temperature)
        self.teacher_temperature = (
            None
            if teacher_temperature is None
            else check_positive_float("teacher_temperature", teacher_temperature)
        )

    def forward(
        self, student_logits: Tensor, teacher_probs: Tensor, mask: Tensor | None = None
    ) -> LossOutput:
        return prototype_loss(
            student_logits,
            teacher_probs,
            mask,
            student_temperature=self.student_temperature,
            teacher_temperature=self.teacher_temperature,
        )
