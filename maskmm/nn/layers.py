"""Small layers: stochastic depth, the transformer MLP, and layer-index helpers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["DropPath", "Mlp", "drop_path", "drop_path_rates", "resolve_layers"]


def drop_path(x: Tensor, p: float, training: bool, *, generator: torch.Generator | None = None) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch ``x [B, ...]`` with probability ``p``
    and scale the kept ones by ``1 / (1 - p)``. Identity when ``p == 0`` or not ``training``."""
    if p == 0.0 or not training:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
    keep.bernoulli_(1.0 - p, generator=generator)
    return x * keep / (1.0 - p)


class DropPath(nn.Module):
    """Module form of :func:`drop_path`."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return drop_path(x, self.p, self.training, generator=generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path_rates(max_rate: float, depth: int) -> list[float]:
    """Linearly increasing stochastic-depth rates ``0 .. max_rate`` over ``depth`` blocks."""
    if depth == 1:
        return [0.0]
    return [max_rate * i / (depth - 1) for i in range(depth)]


class Mlp(nn.Module):
    """``fc2(drop(GELU(fc1(x))))`` with dropout ``dropout`` after the activation (pre-norm ViT style,
    ``hidden_dropout=True``) or only on the output (BERT style). ``[..., dim] -> [..., out_dim]``."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        out_dim: int | None = None,
        *,
        dropout: float = 0.0,
        hidden_dropout: bool = True,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout if hidden_dropout else 0.0)
        self.fc2 = nn.Linear(hidden_dim, dim if out_dim is None else out_dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


def resolve_layers(name: str, layers: Sequence[int], depth: int) -> tuple[int, ...]:
    """Validate layer indices (negative ones count from the end) and return them as non-negative ints."""
    if isinstance(layers, int) or not isinstance(layers, Sequence):
        raise TypeError(f"{name} must be a sequence of ints, got {type(layers).__name__}")
    out = []
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"{name} must hold ints, got {type(i).__name__}")
        if not -depth <= i < depth:
            raise ValueError(f"{name} entries must lie in [{-depth}, {depth}), got {i}")
        out.append(i % depth)
    return tuple(out)
