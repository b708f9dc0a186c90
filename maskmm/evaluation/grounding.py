"""Weakly-supervised grounding: Grad-CAM maps over image tokens and scores against object boxes."""

from __future__ import annotations

import torch

from .._checks import check_floating, check_tensor

__all__ = ["box_patch_mask", "grad_cam", "grounding_scores"]


def grad_cam(
    activations: torch.Tensor, gradients: torch.Tensor, *, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Grad-CAM over a token sequence.

    Args:
        activations: ``[B, N, D]`` states of the image tokens (no CLS) in some layer.
        gradients: ``[B, N, D]`` gradient of the score (e.g. ITM match logit) w.r.t. them.
        valid: optional ``bool [B, N]`` tokens to keep (others get 0).
    Returns:
        ``[B, N]`` fp32 map: ``relu(sum_d w_d * A[:, n, d])`` with ``w = mean_n grad`` (channel
        weights averaged over the tokens, as Grad-CAM averages over space).
    """
    check_floating("activations", activations, ndim=3)
    check_floating("gradients", gradients, shape=tuple(activations.shape))
    a, g = activations.float(), gradients.float()
    if valid is not None:
        check_tensor("valid", valid, shape=tuple(a.shape[:2]), dtype=torch.bool)
        m = valid[..., None].float()
        w = (g * m).sum(1) / m.sum(1).clamp(min=1)
    else:
        w = g.mean(1)
    cam = torch.relu((a * w[:, None, :]).sum(-1))
    if valid is not None:
        cam = cam * valid
    return cam


def box_patch_mask(
    boxes: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int], *, min_overlap: float = 0.0
) -> torch.Tensor:
    """``bool [B, gh*gw]``: patches covered by the box.

    Args:
        boxes: ``[B, 4]`` as ``(x0, y0, x1, y1)`` in pixels (x = column).
        grid: patch grid ``(gh, gw)``; image_size: ``(H, W)`` in pixels.
        min_overlap: a patch belongs to the box when the intersection covers MORE than this
            fraction of the patch's area (``0``: any overlap; ``0.5``: mostly inside). Small
            objects on a coarse grid still get the patches they touch.
    """
    check_tensor("boxes", boxes, shape=(None, 4))
    if not 0.0 <= min_overlap < 1.0:
        raise ValueError(f"min_overlap must lie in [0, 1), got {min_overlap}")
    gh, gw = grid
    h, w = image_size
    dev = boxes.device
    ph, pw = h / gh, w / gw
    ys = torch.arange(gh, device=dev, dtype=torch.float32) * ph  # patch starts
    xs = torch.arange(gw, device=dev, dtype=torch.float32) * pw
    b = boxes.float()
    oy = (torch.minimum(ys[None] + ph, b[:, 3:4]) - torch.maximum(ys[None], b[:, 1:2])).clamp(
        min=0
    )  # [B, gh]
    ox = (torch.minimum(xs[None] + pw, b[:, 2:3]) - torch.maximum(xs[None], b[:, 0:1])).clamp(
        min=0
    )  # [B, gw]
    area = oy[:, :, None] * ox[:, None, :]
    return (area > min_overlap * ph * pw).reshape(boxes.shape[0], gh * gw)


def grounding_scores(cam: torch.Tensor, box_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Score maps against boxes.

    Args:
        cam: ``[B, N]`` non-negative maps; box_mask: ``bool [B, N]`` patches inside the object box.
    Returns:
        ``pointing``: % of samples whose map maximum falls in the box (a constant/all-zero map
        counts as a miss unless the box covers every patch); ``energy``: mean % of the map's mass
        inside the box (0 for an all-zero map); ``box_fraction``: mean % of patches in the box
        (the chance level of both scores).
    """
    check_floating("cam", cam, ndim=2)
    check_tensor("box_mask", box_mask, shape=tuple(cam.shape), dtype=torch.bool)
    c = cam.float().clamp(min=0)
    peak = c.amax(dim=1, keepdim=True)
    at_peak = c >= peak
    # a hit needs every maximal patch in the box: flat maps do not score by luck
    hit = (at_peak <= box_mask).all(dim=1) & box_mask.any(dim=1)
    total = c.sum(1)
    energy = torch.where(total > 0, (c * box_mask).sum(1) / total.clamp(min=1e-12), torch.zeros_like(total))
    return {
        "pointing": hit.float().mean() * 100.0,
        "energy": energy.mean() * 100.0,
        "box_fraction": box_mask.float().mean() * 100.0,
    }
