"""AdamW with the usual no-weight-decay parameter groups.

Biases, normalisation weights, embeddings tables of position/class/mask tokens and every
parameter with fewer than two dimensions are excluded from weight decay (as BERT/ViT
recipes do); everything else decays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["DEFAULT_NO_DECAY", "build_adamw", "param_groups"]

#: name fragments whose parameters never decay (matched as substrings of the full name)
DEFAULT_NO_DECAY: tuple[str, ...] = (
    "bias",
    "norm",
    "pos_embed",
    "position_embeddings",
    "cls_token",
    "mask_token",
    "temp",
    "logit_scale",
)


def _no_decay(name: str, p: torch.Tensor, patterns: Sequence[str]) -> bool:
    if p.ndim < 2:
        return True
    low = name.lower()
    return any(pat in low for pat in patterns)


def param_groups(
    model: nn.Module | Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    *,
    no_decay: Sequence[str] = DEFAULT_NO_DECAY,
) -> list[dict]:
    """Split trainable parameters into ``[{decay}, {no decay}]`` optimizer groups.

    Args:
        model: a module, or ``(name, parameter)`` pairs (e.g. ``model.named_parameters()``).
        weight_decay: decay of the first group (the second has ``0.0``).
        no_decay: lower-case name fragments that exclude a parameter from decay; parameters
            with ``ndim < 2`` are always excluded.
    Returns:
        Two groups, each ``{"params": [...], "weight_decay": float, "names": [...]}``; frozen
        parameters (``requires_grad=False``) are left out. Shared parameters appear once.
    """
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a float >= 0, got {weight_decay!r}")
    named = model.named_parameters() if isinstance(model, nn.Module) else model
    decay, skip, decay_names, skip_names = [], [], [], []
    seen: set[int] = set()
    for name, p in named:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if _no_decay(name, p, no_decay):
            skip.append(p)
            skip_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    return [
        {"params": decay, "weight_decay": float(weight_decay), "names": decay_names},
        {"params": skip, "weight_decay": 0.0, "names": skip_names},
    ]


def build_adamw(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.02,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    no_decay: Sequence[str] = DEFAULT_NO_DECAY,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`. ``fused=None`` uses the fused kernel on CUDA parameters."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    groups = param_groups(model, weight_decay, no_decay=no_decay)
    groups = [{k: v for k, v in g.items() if k != "names"} for g in groups if g["params"]]
    if not groups:
        raise ValueError("model has no trainable parameters")
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)
