"""Prototype (code-distribution) targets for SemMIM, DINO / iBOT style.

Features are mapped to ``K`` learnable codes by :class:`PrototypeProjection`
(an L2-normalised input times a weight-normalised, bias-free linear map), the
same projection for global (``[B, D]``) and patch (``[B, N, D]``) features. The
teacher's code logits become targets by centring and sharpening:
``softmax((logits - center) / teacher_temp)``; the center is an EMA of the
batch-mean teacher logits, updated by an explicit :meth:`PrototypeTargets.update_center`
call (summed across ranks when ``torch.distributed`` is initialised).

Defaults (``teacher_temp = 0.04``, ``center_momentum = 0.9``, frozen unit row
norms) follow DINO / iBOT practice; they are our choices for SemMIM.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from maskmm._checks import (
    check_bool,
    check_floating,
    check_int,
    check_positive_float,
    check_ratio,
    check_tensor,
)
from maskmm.distributed import world_info

__all__ = ["PrototypeProjection", "PrototypeTargets", "sharpen_and_center"]


def sharpen_and_center(logits: torch.Tensor, center: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """Teacher code targets ``softmax((logits - center) / temperature)`` over the last axis.

    Args:
        logits: teacher code logits ``[..., K]`` (any float dtype).
        center: ``[K]`` running center, or ``None`` for no centring.
        temperature: positive sharpening temperature (smaller = sharper).

    Returns:
        fp32 probabilities ``[..., K]``, detached.
    """
    logits = check_floating("logits", logits)
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape [..., K] with K >= 1, got {list(logits.shape)}")
    k = logits.shape[-1]
    if center is not None:
        check_floating("center", center, shape=(k,))
        if center.device != logits.device:
            raise ValueError(f"center is on {center.device} but logits are on {logits.device}")
    temperature = check_positive_float("temperature", temperature)
    with torch.no_grad():
        z = logits.detach().float()
        if center is not None:
            z = z - center.detach().float()
        return torch.softmax(z / temperature, dim=-1)


class PrototypeProjection(nn.Module):
    """Weight-normalised linear map to ``K`` codes: ``[..., D] -> [..., K]``.

    ``logits = normalize(x) @ (g * v / ||v||).T`` with rows ``v [K, D]`` and gains
    ``g [K]`` (initialised to 1). With ``norm_last_layer=True`` (default) the gains
    are frozen, so every code has unit norm and logits are cosine similarities.
    The projection is learnable; run it on global and patch features alike.

    Args:
        dim: feature size ``D``.
        num_codes: number of codes ``K``.
        norm_last_layer: freeze ``g`` at 1.
        normalize_input: L2-normalise ``x`` over ``D`` first.
    """

    def __init__(
        self, dim: int, num_codes: int, *, norm_last_layer: bool = True, normalize_input: bool = True
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        self.num_codes = check_int("num_codes", num_codes, minimum=1)
        self.normalize_input = check_bool("normalize_input", normalize_input)
        check_bool("norm_last_layer", norm_last_layer)
        self.weight_v = nn.Parameter(torch.empty(num_codes, dim))
        self.weight_g = nn.Parameter(torch.ones(num_codes), requires_grad=not norm_last_layer)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Rows from a normal (std 0.02) clipped to two standard deviations; unit gains.

        ``generator`` (optional) makes the initialisation reproducible; the values are drawn on its
        device and copied to the weight's.
        """
        with torch.no_grad():
            device = generator.device if generator is not None else torch.device("cpu")
            w = torch.randn(self.weight_v.shape, generator=generator, device=device).clamp_(-2.0, 2.0) * 0.02
            self.weight_v.copy_(w)
            self.weight_g.fill_(1.0)

    def weight(self) -> torch.Tensor:
        """The effective ``[K, D]`` weight ``g * v / ||v||``."""
        v = self.weight_v
        return v * (self.weight_g / v.norm(dim=1).clamp_min(1e-12)).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., D]`` -> logits ``[..., K]`` in ``x``'s dtype."""
        x = check_floating("x", x)
        if x.dim() < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape [..., {self.dim}], got {list(x.shape)}")
        if self.normalize_input:
            x = F.normalize(x, dim=-1, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        return F.linear(x, self.weight().to(x.dtype))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_codes={self.num_codes}, norm_last_layer={not self.weight_g.requires_grad}, "
            f"normalize_input={self.normalize_input}"
        )


def _auto_all_reduce(t: torch.Tensor) -> None:
    """Sum ``t`` in place across ranks when a process group with several ranks is initialised."""
    if world_info()[1] > 1:
        torch.distributed.all_reduce(t)


class PrototypeTargets(nn.Module):
    """Centred, sharpened teacher code distributions, with an EMA center.

    Args:
        num_codes: ``K``.
        dim: if given, the module also owns a learnable :class:`PrototypeProjection`
            ``D -> K`` (``self.projection``) shared by student and teacher
            features: the student calls ``self.projection(x)`` with gradients,
            :meth:`from_features` runs it without. Leave ``None`` when the student
            model owns its projection and the teacher is an EMA copy of it.
        teacher_temp: sharpening temperature of the targets.
        center_momentum: EMA momentum ``m`` of the center:
            ``center = m * center + (1 - m) * batch_mean``.
        all_reduce: how the (sum, count) of a center update is summed across
            ranks: ``"auto"`` (``torch.distributed.all_reduce`` when initialised
            with more than one rank), ``None`` (local only), or a callable that
            sums a tensor in place.

    Buffers: ``center`` fp32 ``[K]`` (zeros at start; saved in ``state_dict``).
    """

    def __init__(
        self,
        num_codes: int,
        dim: int | None = None,
        *,
        teacher_temp: float = 0.04,
        center_momentum: float = 0.9,
        all_reduce: str | Callable[[torch.Tensor], None] | None = "auto",
    ) -> None:
        super().__init__()
        self.num_codes = check_int("num_codes", num_codes, minimum=1)
        self.teacher_temp = check_positive_float("teacher_temp", teacher_temp)
        self.center_momentum = check_ratio("center_momentum", center_momentum, allow_one=True)
        if all_reduce == "auto":
            self._all_reduce: Callable[[torch.Tensor], None] | None = _auto_all_reduce
        elif all_reduce is None or callable(all_reduce):
            self._all_reduce = all_reduce
        else:
            raise TypeError(f"all_reduce must be 'auto', None or a callable, got {all_reduce!r}")
        self.projection = (
            None if dim is None else PrototypeProjection(check_int("dim", dim, minimum=1), num_codes)
        )
        self.register_buffer("center", torch.zeros(num_codes, dtype=torch.float32))

    def forward(self, teacher_logits: torch.Tensor, *, temperature: float | None = None) -> torch.Tensor:
        """Teacher logits ``[..., K]`` -> fp32 target distributions ``[..., K]`` (detached).

        ``temperature`` overrides ``teacher_temp`` (e.g. for a temperature warm-up).
        Does not update the center.
        """
        self._check_logits("teacher_logits", teacher_logits)
        temp = self.teacher_temp if temperature is None else temperature
        return sharpen_and_center(teacher_logits, self.center, temp)

    def from_features(
        self, teacher_features: torch.Tensor, *, temperature: float | None = None
    ) -> torch.Tensor:
        """Teacher features ``[..., D]`` -> targets ``[..., K]`` through the shared projection, no grad."""
        if self.projection is None:
            raise TypeError("from_features needs a projection; construct PrototypeTargets with dim=D")
        with torch.no_grad():
            logits = self.projection(teacher_features)
        return self(logits, temperature=temperature)

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """``center = m * center + (1 - m) * mean(teacher_logits)`` over all leading axes.

        Args:
            teacher_logits: ``[..., K]``.
            mask: optional bool of shape ``teacher_logits.shape[:-1]``; only rows
                where True enter the mean. No selected row (on every rank) leaves
                the center unchanged. No host sync.
        """
        logits = self._check_logits("teacher_logits", teacher_logits).detach().float()
        rows = logits.reshape(-1, self.num_codes)
        if mask is not None:
            check_tensor("mask", mask, shape=tuple(logits.shape[:-1]), dtype=torch.bool)
            if mask.device != logits.device:
                raise ValueError(f"mask is on {mask.device} but teacher_logits are on {logits.device}")
            w = mask.reshape(-1, 1).to(torch.float32)
            packed = torch.cat([(rows * w).sum(dim=0), w.sum().reshape(1)])
        else:
            packed = torch.cat([rows.sum(dim=0), rows.new_full((1,), float(rows.shape[0]))])
        if self._all_reduce is not None:
            self._all_reduce(packed)
        total, count = packed[:-1], packed[-1]
        mean = total / count.clamp_min(1.0)
        m = self.center_momentum
        updated = self.center * m + mean.to(self.center.device) * (1.0 - m)
        self.center.copy_(torch.where(count > 0, updated, self.center))

    def _check_logits(self, name: str, logits: object) -> torch.Tensor:
        t = check_floating(name, logits)
        if t.dim() < 1 or t.shape[-1] != self.num_codes:
            raise ValueError(f"{name} must have shape [..., {self.num_codes}], got {list(t.shape)}")
        if t.device != self.center.device:
            raise ValueError(f"{name} is on {t.device} but the center is on {self.center.device}")
        return t

    def extra_repr(self) -> str:
        return (
            f"num_codes={self.num_codes}, teacher_temp={self.teacher_temp}, "
            f"center_momentum={self.center_momentum}"
        )
