"""Config -> parts -> :class:`~maskmm.models.mamo.model.MAMO`."""

from __future__ import annotations

from typing import Any

from maskmm.losses import ImageTextContrastive
from maskmm.masking import TokenMasker
from maskmm.nn import (
    FusionConfig,
    MatchingHead,
    PredictionDecoder,
    ProjectionHead,
    RegressionHead,
    TextConfig,
    VisionConfig,
    build_fusion_encoder,
    build_mlm_head,
    build_text_encoder,
    build_vision_encoder,
)
from maskmm.nn.init import init_linear_xavier
from maskmm.teachers import ConstantDecay, CosineDecay, LinearDecay

from .config import MAMOConfig
from .model import LOSS_NAMES, MAMO, MAMOSettings, MAMOStudent

__all__ = ["build_model", "build_settings", "decay_schedule", "encoder_configs"]


def encoder_configs(
    cfg: MAMOConfig, vocab_size: int, pad_id: int = 0
) -> tuple[VisionConfig, TextConfig, FusionConfig]:
    """``maskmm.nn`` configs of the three encoders described by ``cfg.model``."""
    m = cfg.model
    vision = VisionConfig(
        image_size=m.image_size,
        patch_size=m.patch_size,
        dim=m.vision_dim,
        depth=m.vision_depth,
        num_heads=m.vision_heads,
        mlp_ratio=m.mlp_ratio,
        dropout=m.dropout,
        attn_dropout=m.dropout,
        drop_path=m.drop_path,
        mask_token=True,
        attn_backend=m.attention_backend,
        grad_checkpointing=m.grad_checkpointing,
    )
    text = TextConfig(
        vocab_size=vocab_size,
        dim=m.text_dim,
        depth=m.text_depth,
        num_heads=m.text_heads,
        intermediate_size=round(m.text_dim * m.mlp_ratio),
        max_position=m.max_text_len,
        pad_token_id=pad_id,
        dropout=m.dropout,
        attn_dropout=m.dropout,
        drop_path=m.drop_path,
        attn_backend=m.attention_backend,
        grad_checkpointing=m.grad_checkpointing,
    )
    fusion = FusionConfig(
        kind=m.fusion,
        dim=m.text_dim,
        depth=m.fusion_depth,
        num_heads=m.fusion_heads,
        intermediate_size=round(m.text_dim * m.mlp_ratio),
        image_dim=m.vision_dim,
        dropout=m.dropout,
        attn_dropout=m.dropout,
        drop_path=m.drop_path,
        attn_backend=m.attention_backend,
        grad_checkpointing=m.grad_checkpointing,
    )
    return vision, text, fusion


def decay_schedule(cfg: MAMOConfig) -> Any:
    """EMA decay (constant float or a :mod:`maskmm.teachers` schedule) from ``cfg.ema``."""
    e = cfg.ema
    if e.schedule == "constant":
        return ConstantDecay(e.decay)
    if e.schedule == "linear":
        return LinearDecay(base=e.decay, final=e.final_decay, steps=e.anneal_steps)
    return CosineDecay(base=e.decay, final=e.final_decay, steps=e.anneal_steps)


def build_settings(cfg: MAMOConfig) -> MAMOSettings:
    """:class:`MAMOSettings` from ``cfg.losses`` / ``cfg.masking`` / ``cfg.itc``."""
    L, k = cfg.losses, cfg.masking
    on = tuple(n for n in LOSS_NAMES if getattr(L, n))
    return MAMOSettings(
        losses=on,
        weights=tuple((n, float(getattr(L, f"{n}_weight"))) for n in LOSS_NAMES),
        image_ratio=k.image_ratio,
        mask_mode=k.mode,
        mrm_top_k=L.mrm_top_k,
        mrm_layer_norm=L.mrm_layer_norm,
        mrm_final_norm=L.mrm_final_norm,
        mrm_kind=L.mrm_kind,
        mrm_scale_by_dim=L.mrm_scale_by_dim,
        mrm_beta=L.mrm_beta,
        mim_kind=L.mim_kind,
        mim_target_norm=L.mim_target_norm,
        mim_scale_by_dim=L.mim_scale_by_dim,
        mlm_distill=L.mlm_distill,
        itc_distill=cfg.itc.distill,
        itc_momentum_keys=cfg.itc.momentum_keys,
        itc_pool=cfg.itc.pool,
    )


def build_model(
    cfg: MAMOConfig,
    *,
    vocab_size: int | None = None,
    pad_id: int = 0,
    mask_token_id: int = 3,
    special_ids: tuple[int, ...] = (0, 1, 2, 3, 4),
) -> MAMO:
    """Build the student parts, the ITC module, the teacher and the objective from ``cfg``.

    Only the heads of enabled losses are built (so DDP sees no unused parameters).
    ``vocab_size`` defaults to ``cfg.model.vocab_size`` (which must then be > 0).
    """
    cfg.validate()
    vocab = vocab_size if vocab_size is not None else cfg.model.vocab_size
    if not isinstance(vocab, int) or vocab <= 0:
        raise ValueError(
            f"vocab_size must be a positive int (from the tokenizer or model.vocab_size), got {vocab!r}"
        )
    vcfg, tcfg, fcfg = encoder_configs(cfg, vocab, pad_id)
    L = cfg.losses
    m = cfg.model
    vision = build_vision_encoder(vcfg)
    text = build_text_encoder(tcfg)
    fusion = build_fusion_encoder(fcfg)
    if m.init == "xavier":
        for part in (vision, text, fusion):
            part.apply(init_linear_xavier)
    mim_in = m.vision_dim if m.fusion == "cross" else m.text_dim
    student = MAMOStudent(
        vision=vision,
        text=text,
        fusion=fusion,
        vision_proj=ProjectionHead(m.vision_dim, m.embed_dim) if L.itc else None,
        text_proj=ProjectionHead(m.text_dim, m.embed_dim) if L.itc else None,
        itm_head=MatchingHead(m.text_dim) if L.itm else None,
        mlm_head=build_mlm_head(text, tie=True) if L.mlm else None,
        mrm_head=RegressionHead(m.text_dim, m.text_dim, hidden_dim=m.text_dim) if L.mrm else None,
        mim_decoder=(
            PredictionDecoder(
                mim_in,
                m.vision_dim,
                dim=mim_in,
                depth=L.mim_decoder_depth,
                num_heads=m.fusion_heads if m.fusion != "cross" else m.vision_heads,
                mlp_ratio=m.mlp_ratio,
                attn_backend=m.attention_backend,
            )
            if L.mim
            else None
        ),
    )
    itc = (
        ImageTextContrastive(
            m.embed_dim,
            cfg.itc.queue_size,
            cfg.itc.temperature,
            learnable_temperature=cfg.itc.learnable_temperature,
        )
        if L.itc
        else None
    )
    k = cfg.masking
    text_masker = (
        TokenMasker(
            k.text_ratio,
            mask_token_id=mask_token_id,
            vocab_size=vocab,
            special_ids=special_ids,
            mask_prob=k.mask_prob,
            random_prob=k.random_prob,
        )
        if L.mlm or L.mrm or L.mim
        else None
    )
    return MAMO(student, build_settings(cfg), itc=itc, text_masker=text_masker, ema_decay=decay_schedule(cfg))
