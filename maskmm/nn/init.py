"""Parameter initialisation shared by the encoders: truncated normal with std 0.02 (BERT / ViT), and
a width-scaled Xavier re-initialisation of Linear layers for narrow encoders trained from scratch."""

from __future__ import annotations

from torch import nn

__all__ = ["init_linear_xavier", "init_transformer_weights"]


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


def init_linear_xavier(module: nn.Module) -> None:
    """Re-initialise ``Linear`` weights Xavier-uniform (std ``sqrt(2 / (fan_in + fan_out))``),
    biases to 0; other modules are left alone. Meant for ``model.apply``.

    BERT's fixed std 0.02 suits width 768 (about ``1 / sqrt(768)``); in narrow encoders trained
    from scratch it leaves attention nearly uniform and its gradients tiny: a fusion encoder then
    needs hundreds of steps before its output depends on how image and text match. A width-scaled
    init shortens that plateau.
    """
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
