"""Config -> parts -> :class:`~maskmm.models.maskvlm.model.MaskVLM`."""

from __future__ import annotations

from maskmm.masking import PixelBlockMasker
from maskmm.nn import MatchingHead, PredictionDecoder, ProjectionHead, build_mlm_head
from maskmm.nn.encoders_config import build_encoders

from .config import LOSS_NAMES, MaskVLMConfig
from .model import MaskVLM, MaskVLMSchedule, MaskVLMSettings

__all__ = ["build_model", "build_settings"]

#: The built-in tokenizer's ``[PAD]=0, [CLS]=1, [SEP]=2, [MASK]=3, [UNK]=4``.
_SPECIAL_IDS = (0, 1, 2, 3, 4)


def build_settings(cfg: MaskVLMConfig) -> MaskVLMSettings:
    """:class:`MaskVLMSettings` from ``cfg.losses`` / ``cfg.decoder`` / ``cfg.itc``."""
    L = cfg.losses
    return MaskVLMSettings(
        losses=L.enabled(),
        weights=tuple((n, L.weight(n)) for n in LOSS_NAMES),
        pixel_loss=cfg.decoder.loss,
        normalize_target=cfg.decoder.normalize_target,
        itc_pool=cfg.itc.pool,
    )


def build_model(
    cfg: MaskVLMConfig,
    *,
    vocab_size: int | None = None,
    pad_id: int = 0,
    mask_token_id: int = 3,
    special_ids: tuple[int, ...] = _SPECIAL_IDS,
) -> MaskVLM:
    """Build every part ``cfg`` needs and assemble a :class:`MaskVLM`.

    Only the parts of enabled losses are built, so every trainable parameter gets a gradient once
    every loss has joined. ``vocab_size`` defaults to ``cfg.model.vocab_size`` (which must then be > 0).
    """
    cfg.validate()
    vocab = vocab_size if vocab_size is not None else cfg.model.vocab_size
    if not isinstance(vocab, int) or vocab <= 0:
        raise ValueError(
            f"vocab_size must be a positive int (from the tokenizer or model.vocab_size), got {vocab!r}"
        )
    m, L, dec, im = cfg.model, cfg.losses, cfg.decoder, cfg.image_masking
    on = set(L.enabled())
    # the ViT has no mask token: MaskVLM hides pixels, it never drops or replaces patches
    vision, text, fusion = build_encoders(
        m, vocab, pad_id, mask_token=False, fusion=bool(on & {"itm", "mlm"})
    )
    v = vision.config
    decoder = None
    if "mim" in on:
        decoder = PredictionDecoder(
            m.vision_dim,
            v.patch_size * v.patch_size * v.in_chans,
            dim=dec.dim or m.vision_dim,
            depth=dec.depth,
            num_heads=dec.heads or m.vision_heads,
            mlp_ratio=m.mlp_ratio,
            cross_attend=True,
            context_dim=m.text_dim,
            attn_backend=m.attention_backend,
        )
    itc = "itc" in on
    schedule = MaskVLMSchedule(
        itm_hardness=lambda step: cfg.itm.hardness_at(step - L.itm_start_step),
        active_losses=L.active_at,
        find_unused_parameters=L.itm_start_step > 0 or L.masked_start_step > 0,
    )
    return MaskVLM(
        vision=vision,
        text=text,
        image_masker=PixelBlockMasker(
            im.ratio,
            block_size=im.block_size,
            patch_size=v.patch_size,
            fill=im.fill,
            learnable_fill=im.learnable_fill and "mim" in on,
            channels=v.in_chans,
        ),
        text_masker=cfg.text_masking.build(vocab, mask_token_id, special_ids),
        settings=build_settings(cfg),
        fusion=fusion,
        vision_proj=ProjectionHead(m.vision_dim, m.embed_dim) if itc else None,
        text_proj=ProjectionHead(m.text_dim, m.embed_dim) if itc else None,
        itc_loss=(cfg.itc.build(m.embed_dim) if itc else None),
        itm_head=MatchingHead(m.text_dim) if "itm" in on else None,
        mlm_head=build_mlm_head(text, tie=True) if "mlm" in on else None,
        pixel_decoder=decoder,
        schedule=schedule,
    )
