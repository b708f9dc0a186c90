"""Task heads: contrastive projection, image-text matching, masked-token prediction, regression."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from maskmm._checks import check_floating

from .init import init_transformer_weights

__all__ = ["MaskedTokenHead", "MatchingHead", "ProjectionHead", "RegressionHead"]


def _check_features(x: Tensor, dim: int) -> None:
    """``x`` must be a floating tensor ``[..., dim]``."""
    check_floating("x", x)
    if x.dim() == 0 or x.shape[-1] != dim:
        raise ValueError(f"x must have shape [..., {dim}], got {list(x.shape)}")


class ProjectionHead(nn.Module):
    """Linear projection followed by L2 normalisation: ``[..., in_dim] -> [..., out_dim]``.

    The norm is taken in float32 and the result returned in the input's (autocast) dtype.
    ``normalize=False`` returns the raw projection.
    """

    def __init__(self, in_dim: int, out_dim: int, *, normalize: bool = True) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.normalize = normalize
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, self.proj.in_features)
        y = self.proj(x)
        if not self.normalize:
            return y
        return F.normalize(y.float(), dim=-1, eps=1e-12).to(y.dtype)


class MatchingHead(nn.Module):
    """Two-way image-text matching classifier: ``[..., dim] -> [..., 2]`` logits
    (index 1 = matched). Usually fed the fusion CLS state."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(dim, 2)
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, self.classifier.in_features)
        return self.classifier(x)


class MaskedTokenHead(nn.Module):
    """BERT masked-token head: ``LN(GELU(dense(x)))`` then a vocabulary projection
    ``[..., dim] -> [..., vocab_size]``.

    With ``tie_to`` (an ``nn.Embedding [vocab_size, dim]``) the projection weight *is* the
    embedding weight (shared parameter). ``weight [vocab, dim]`` / ``bias [vocab]`` and
    :meth:`transform` are exposed so a fused linear + cross-entropy loss can compute
    ``transform(x) @ weight.T + bias`` without materialising all logits.
    """

    def __init__(
        self, dim: int, vocab_size: int, *, tie_to: nn.Embedding | None = None, eps: float = 1e-12
    ) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.decoder = nn.Linear(dim, vocab_size, bias=False)
        self.apply(init_transformer_weights)
        if tie_to is not None:
            if not isinstance(tie_to, nn.Embedding):
                raise TypeError(f"tie_to must be an nn.Embedding, got {type(tie_to).__name__}")
            if tuple(tie_to.weight.shape) != (vocab_size, dim):
                raise ValueError(
                    f"tie_to weight must have shape [{vocab_size}, {dim}], got {list(tie_to.weight.shape)}"
                )
            self.decoder.weight = tie_to.weight
        self.bias = nn.Parameter(self.decoder.weight.new_zeros(vocab_size))

    @property
    def weight(self) -> Tensor:
        """Vocabulary projection weight ``[vocab_size, dim]`` (the embedding weight when tied)."""
        return self.decoder.weight

    def transform(self, x: Tensor) -> Tensor:
        """``[..., dim] -> [..., dim]``: the part before the vocabulary projection."""
        _check_features(x, self.dense.in_features)
        return self.norm(self.act(self.dense(x)))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.transform(x), self.weight, self.bias)


class RegressionHead(nn.Module):
    """Feature regression ``[..., in_dim] -> [..., out_dim]``: optional input LayerNorm, then a
    Linear (``hidden_dim=None``) or Linear-GELU-Linear."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dim: int | None = None,
        norm: bool = False,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.norm = nn.LayerNorm(in_dim, eps=eps) if norm else nn.Identity()
        if hidden_dim is None:
            self.net = nn.Linear(in_dim, out_dim)
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, self.in_dim)
        return self.net(self.norm(x))
