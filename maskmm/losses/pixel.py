"""Pixel reconstruction at masked regions (MAE / MaskVLM)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from maskmm._checks import (
    check_bool,
    check_choice,
    check_floating,
    check_positive_float,
    check_same_device,
    check_tensor,
)
from maskmm.losses.types import LossOutput, _acc_dtype, _stat

__all__ = ["PixelReconstructionLoss", "pixel_reconstruction_loss"]


_KINDS = ("l1", "mse")
_LAYOUTS = ("patch", "pixel")


def _check_config(kind: object, layout: object, normalize_target: object, eps: object) -> None:
    check_choice("kind", kind, _KINDS)
    check_choice("layout", layout, _LAYOUTS)
    check_bool("normalize_target", normalize_target)
    check_positive_float("eps", eps)
    if normalize_target and layout != "patch":
        raise ValueError("normalize_target is only defined for layout='patch'")


def pixel_reconstruction_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    *,
    kind: Literal["l1", "mse"] = "l1",
    layout: Literal["patch", "pixel"] = "patch",
    normalize_target: bool = False,
    eps: float = 1e-6,
) -> LossOutput:
    """L1 / MSE between ``pred`` and ``target`` on masked regions only.

    Layouts:
        - ``"patch"``: ``pred``/``target`` ``[B, N, P]`` (patchified pixels), ``mask bool [B, N]``.
        - ``"pixel"``: ``pred``/``target`` ``[B, C, H, W]``, ``mask bool [B, H, W]`` or ``[B, 1, H, W]``.

    ``True`` in ``mask`` = masked (scored). The loss is the mean of the element-wise
    error over every element of the masked regions (fp32); no masked region gives 0
    (graph-connected, zero gradient). ``normalize_target`` (patch layout only) normalises
    each target patch to zero mean / unit variance (MAE's ``norm_pix_loss``).
    ``target`` is treated as a constant.

    Returns:
        ``LossOutput`` with stats ``num_masked`` (masked patches or pixels) and
        ``pred_std`` (std of the prediction over masked elements).
    """
    _check_config(kind, layout, normalize_target, eps)
    if layout == "patch":
        check_floating("pred", pred, ndim=3)
        b, n, _ = pred.shape
        check_floating("target", target, shape=tuple(pred.shape))
        check_tensor("mask", mask, shape=(b, n), dtype=torch.bool)
        m = mask.unsqueeze(-1)
        per_region = pred.shape[-1]
    else:  # "pixel"
        check_floating("pred", pred, ndim=4)
        b, _, h, w = pred.shape
        check_floating("target", target, shape=tuple(pred.shape))
        check_tensor("mask", mask, dtype=torch.bool)
        if mask.dim() == 3:
            check_tensor("mask", mask, shape=(b, h, w))
            m = mask.unsqueeze(1)
        else:
            check_tensor("mask", mask, shape=(b, 1, h, w))
            m = mask
        per_region = pred.shape[1]
    check_same_device(pred=pred, target=target, mask=mask)

    # Zero unscored elements first: ``torch.where`` passes them exactly zero gradient.
    acc = _acc_dtype(pred, target)
    p = torch.where(m, pred.to(acc), pred.new_zeros((), dtype=acc))
    t = torch.where(m, target.detach().to(acc), pred.new_zeros((), dtype=acc))
    if normalize_target:
        mu = t.mean(-1, keepdim=True)
        var = t.var(-1, keepdim=True, unbiased=True) if t.shape[-1] > 1 else torch.zeros_like(mu)
        t = (t - mu) / (var + eps).sqrt()
    err = (p - t).abs() if kind == "l1" else (p - t) ** 2
    regions = mask.sum().to(acc)
    n_elem = regions * per_region
    zero = err.new_zeros(())
    loss = torch.where(m, err, zero).sum() / n_elem.clamp(min=1.0)
    with torch.no_grad():
        pd = p.detach()
        mean = torch.where(m, pd, zero).sum() / n_elem.clamp(min=1.0)
        var = torch.where(m, (pd - mean) ** 2, zero).sum() / (n_elem - 1).clamp(min=1.0)
        stats = {"num_masked": _stat(regions), "pred_std": _stat(var.sqrt())}
    return LossOutput(loss, stats)


class PixelReconstructionLoss(nn.Module):
    """Module form of :func:`pixel_reconstruction_loss`."""

    def __init__(
        self,
        kind: Literal["l1", "mse"] = "l1",
        *,
        layout: Literal["patch", "pixel"] = "patch",
        normalize_target: bool = False,
    ) -> None:
        super().__init__()
        _check_config(kind, layout, normalize_target, 1e-6)
        self.kind = kind
        self.layout = layout
        self.normalize_target = normalize_target

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> LossOutput:
        return pixel_reconstruction_loss(
            pred, target, mask, kind=self.kind, layout=self.layout, normalize_target=self.normalize_target
        )
