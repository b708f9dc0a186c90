"""Config -> parts -> :class:`~maskmm.models.mamo.model.MAMO`."""

from __future__ import annotations

from maskmm.nn import MatchingHead, PredictionDecoder, ProjectionHead, RegressionHead, build_mlm_head
from maskmm.nn.encoders_config import build_encoders

from .config import MAMOConfig
from .model import LOSS_NAMES, MAMO, MAMOSchedule, MAMOSettings, MAMOStudent

__all__ = ["build_model", "build_settings"]


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
        itm_input=L.itm_input,
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
    L = cfg.losses
    m = cfg.model
    vision, text, fusion = build_encoders(m, vocab, pad_id, mask_token=True)
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
    itc = cfg.itc.build(m.embed_dim) if L.itc else None
    text_masker = (
        cfg.masking.text().build(vocab, mask_token_id, special_ids) if L.mlm or L.mrm or L.mim else None
    )
    schedule = MAMOSchedule(
        alpha=cfg.itc.alpha_at,
        itm_hardness=lambda step: cfg.itm.hardness_at(step - L.itm_start_step),
        active_losses=L.active_at,
        find_unused_parameters=L.itm_start_step > 0 or L.masked_start_step > 0,
    )
    return MAMO(
        student,
        build_settings(cfg),
        itc=itc,
        text_masker=text_masker,
        ema_decay=cfg.ema.decay_schedule(),
        schedule=schedule,
    )
