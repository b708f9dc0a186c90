"""Parameter initialisation shared by the encoders (truncated normal, std 0.02, as BERT/ViT)."""

from __future__ import annotations

from torch import nn

__all__ = ["init_transformer_weights"]


def init_transformer_weights(module: nn.Module, std: float = 0.02) -> None:
    """Initialise ``Linear``/``Embedding`` weights from a truncated normal (``std``), biases to 0,
    ``LayerNorm`` to identity. Meant for ``model.apply``."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
