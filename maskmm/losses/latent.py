"""Latent regression at masked positions (data2vec / MAMO implicit targets)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskmm._checks import check_bool, check_choice, check_floating, check_same_device, check_tensor
from maskmm.losses.types import LossOutput, _acc_dtype, _masked_mean, _stat

__all__ = ["LatentRegressionLoss", "latent_regression_loss"]

_KINDS = ("smooth_l1", "mse", "cosine")


def _token_variance(x: Tensor, mask: Tensor, count: Tensor) -> Tensor:
    """Per-feature variance across the selected tokens (unbiased), averaged over features."""
    w = mask.unsqueeze(-1)
    zero = x.new_zeros(())
    mean = torch.where(w, x, zero).sum((0, 1)) / count.clamp(min=1.0)
    sq = torch.where(w, (x - mean) ** 2, zero).sum((0, 1))
    return (sq / (count - 1.0).clamp(min=1.0)).mean()


def _check_config(kind: object, scale_by_dim: object, beta: object, detach_target: object) -> float:
    check_choice("kind", kind, _KINDS)
    check_bool("scale_by_dim", scale_by_dim)
    check_bool("detach_target", detach_target)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
        raise ValueError(f"beta must be a float >= 0, got {beta!r}")
    return float(beta)


def latent_regression_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    *,
    kind: Literal["smooth_l1", "mse", "cosine"] = "smooth_l1",
    scale_by_dim: bool = True,
    beta: float = 1.0,
    detach_target: bool = True,
) -> LossOutput:
    """Regress ``pred`` onto ``target`` at masked positions only.

    Args:
        pred: ``[B, N, D]`` student predictions (fp32/fp16/bf16).
        target: ``[B, N, D]`` targets (e.g. normalised teacher states).
        mask: ``bool [B, N]``, ``True`` = masked (the positions that are scored).
        kind: ``"smooth_l1"`` (Huber with ``beta``; ``beta=0`` is L1), ``"mse"`` or
            ``"cosine"`` (per-token ``1 - cos(pred, target)``).
        scale_by_dim: for ``smooth_l1``/``mse`` the per-token loss is the *sum* over
            features times ``1/sqrt(D)`` (data2vec scaling). With ``False`` it is the
            *mean* over features (what ``F.mse_loss`` on the masked rows gives).
            Ignored for ``cosine``.
        beta: smooth-L1 threshold, ``>= 0``.
        detach_target: treat ``target`` as a constant (stop-gradient). Default ``True``.

    Returns:
        ``LossOutput``: fp32 mean of the per-token loss over masked positions; with
        no masked position the loss is ``0`` (graph-connected, zero gradients).
        Stats: ``pred_var`` / ``target_var`` (per-feature variance across masked
        tokens, averaged over features: a collapse monitor), ``num_masked``.
    """
    check_floating("pred", pred, ndim=3)
    b, n, d = pred.shape
    check_floating("target", target, shape=(b, n, d))
    check_tensor("mask", mask, shape=(b, n), dtype=torch.bool)
    check_same_device(pred=pred, target=target, mask=mask)
    beta = _check_config(kind, scale_by_dim, beta, detach_target)

    # Unmasked rows are zeroed *before* the computation: ``torch.where`` passes exactly zero
    # gradient there, so non-finite values at unscored positions cannot reach the loss or grads.
    keep = mask.unsqueeze(-1)
    acc = _acc_dtype(pred, target)
    zero = pred.new_zeros((), dtype=acc)
    p = torch.where(keep, pred.to(acc), zero)
    t = target.detach() if detach_target else target
    t = torch.where(keep, t.to(acc), zero)
    if kind == "cosine":
        per_token = 1.0 - (F.normalize(p, dim=-1, eps=1e-6) * F.normalize(t, dim=-1, eps=1e-6)).sum(-1)
    else:
        elem = (p - t) ** 2 if kind == "mse" else F.smooth_l1_loss(p, t, reduction="none", beta=beta)
        per_token = elem.sum(-1) * (d**-0.5 if scale_by_dim else 1.0 / d)
    loss, count = _masked_mean(per_token, mask)
    with torch.no_grad():
        stats = {
            "pred_var": _stat(_token_variance(p.detach(), mask, count)),
            "target_var": _stat(_token_variance(t.detach(), mask, count)),
            "num_masked": count,
        }
    return LossOutput(loss, stats)


class LatentRegressionLoss(nn.Module):
    """Module form of :func:`latent_regression_loss` (holds ``kind``, ``scale_by_dim``, ``beta``)."""

    def __init__(
        self,
        kind: Literal["smooth_l1", "mse", "cosine"] = "smooth_l1",
        *,
        scale_by_dim: bool = True,
        beta: float = 1.0,
        detach_target: bool = True,
    ) -> None:
        super().__init__()
        self.beta = _check_config(kind, scale_by_dim, beta, detach_target)
        self.kind = kind
        self.scale_by_dim = scale_by_dim
        self.detach_target = detach_target

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> LossOutput:
        return latent_regression_loss(
            pred,
            target,
            mask,
            kind=self.kind,
            scale_by_dim=self.scale_by_dim,
            beta=self.beta,
            detach_target=self.detach_target,
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, scale_by_dim={self.scale_by_dim}, beta={self.beta}"
