"""Two-stream co-attention fusion: a text stream and an image stream that attend to each other."""

from __future__ import annotations

from torch import Tensor

from maskmm.attention import AttentionMask

from .blocks import call_block, post_norm_stack
from .config import FusionConfig
from .fusion import _FusionBase
from .init import init_transformer_weights
from .outputs import FusionLayerState, FusionOutput

__all__ = ["CoAttentionFusion"]


class CoAttentionFusion(_FusionBase):
    """Two-stream fusion: per layer, a text block and an image block, each a BERT post-norm
    layer with self-attention over its own stream, cross-attention to the other stream, then
    the MLP. Both blocks of layer ``i`` read the other stream's states *entering* layer ``i``
    (the streams update in parallel); a query whose other stream has no valid key gets a
    zero cross-attention output::

        t', v' = text_layers[i](t, ctx=v), image_layers[i](v, ctx=t)

    Text keys are restricted to ``text_valid`` (in text self-attention and image
    cross-attention); image keys to ``image_valid`` (in image self-attention and text
    cross-attention). Invalid tokens still get states (they attend to the valid ones) that
    carry no meaning. Image tokens of width ``image_dim != dim`` pass through ``image_proj``
    (Linear) first; ``config.modality_embedding`` is not used (the streams are separate).

    Attributes: ``image_proj`` (or ``None``), ``text_layers``, ``image_layers`` (each block with
    ``attn``, ``norm1``, ``cross_attn``, ``norm_cross``, ``mlp``, ``norm2``).
    """

    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        self.image_proj = self._make_image_proj()
        self.text_layers = post_norm_stack(config, context_dim=config.dim)
        self.image_layers = post_norm_stack(config, context_dim=config.dim)
        self.apply(init_transformer_weights)

    def _fuse(
        self,
        image: Tensor,
        image_valid: Tensor | None,
        text: Tensor,
        text_valid: Tensor,
        layers: tuple[int, ...],
    ) -> FusionOutput:
        if self.image_proj is not None:
            image = self.image_proj(image)
        text_mask = AttentionMask.from_key_valid(text_valid)
        image_mask = None if image_valid is None else AttentionMask.from_key_valid(image_valid)
        ckpt = self._checkpointing
        t, v = text, image
        kept: dict[int, FusionLayerState] = {}
        for i, (text_block, image_block) in enumerate(zip(self.text_layers, self.image_layers)):
            t, v = (
                call_block(text_block, t, text_mask, v, image_mask, checkpointing=ckpt),
                call_block(image_block, v, image_mask, t, text_mask, checkpointing=ckpt),
            )
            if i in layers:
                kept[i] = FusionLayerState(t, v)
        return FusionOutput(t, v, tuple(kept[i] for i in layers))
