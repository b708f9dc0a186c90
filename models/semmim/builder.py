"""Config -> parts -> :class:`~maskmm.models.semmim.model.SemMIM`."""

from __future__ import annotations

from typing import Any

from maskmm.losses import ImageTextContrastive
from maskmm.masking import TextGuidedPatchMasker
from maskmm.nn import (
    MatchingHead,
    PresetConfigs,
    ProjectionHead,
    RegressionHead,
    build_fusion_encoder,
    build_mlm_head,
    build_text_encoder,
    build_vision_encoder,
)
from maskmm.targets import PrototypeProjection, PrototypeTargets
from maskmm.teachers import ConstantDecay, CosineDecay, DecaySchedule

from .._common import preset_encoders, token_masker
from .config import SemMIMConfig
from .model import SemMIM, SemMIMStudent

__all__ = ["build_semmim", "decay_schedule", "encoder_configs", "tiny_config"]


def tiny_config(**changes: Any) -> SemMIMConfig:
    """A CPU-sized configuration on ``maskmm.nn.preset("tiny")`` (64 px images, patch 8).

    ``K = 64`` codes from a 64-wide code head (hidden 128), ITC features 64 wide with a queue of
    32. ``changes`` replace any field.
    """
    base: dict[str, Any] = {
        "encoders": "tiny",
        "embed_dim": 64,
        "itc_queue_size": 32,
        "num_codes": 64,
        "code_dim": 64,
        "code_hidden_dim": 128,
    }
    base.update(changes)
    return SemMIMConfig(**base)


def encoder_configs(config: SemMIMConfig) -> PresetConfigs:
    """The encoder configs of ``config``: its preset with its overrides; the ViT keeps a mask token
    and the fusion reads image tokens of the ViT's width."""
    return preset_encoders(config, mask_token=True)


def decay_schedule(config: SemMIMConfig) -> DecaySchedule:
    """Constant ``ema_decay``, or a half-cosine to ``ema_final_decay`` over ``ema_anneal_steps``."""
    if config.ema_anneal_steps == 0:
        return ConstantDecay(config.ema_decay)
    return CosineDecay(base=config.ema_decay, final=config.ema_final_decay, steps=config.ema_anneal_steps)


def build_semmim(config: SemMIMConfig | None = None, *, encoders: PresetConfigs | None = None) -> SemMIM:
    """Build every part ``config`` needs and assemble a :class:`SemMIM`.

    Args:
        config: default :class:`SemMIMConfig` (base encoders).
        encoders: explicit encoder configs; default :func:`encoder_configs` of ``config``.

    Only the parts of enabled losses are built. The ITC projections are built whenever ITC or the
    text-guided masking needs them (without ITC they stay frozen at their initialisation).
    """
    config = (config if config is not None else SemMIMConfig()).validate()
    enc = encoders if encoders is not None else encoder_configs(config)
    if not isinstance(enc, PresetConfigs):
        raise TypeError(f"encoders must be maskmm.nn.PresetConfigs, got {type(enc).__name__}")
    v, t, f = enc.vision, enc.text, enc.fusion
    on = set(config.losses)
    coded = bool(on & {"mim", "global_codes"})
    if coded and f.kind != "merged":
        raise ValueError(f"SemMIM's mim / global_codes need a merged fusion, got fusion kind {f.kind!r}")
    vision = build_vision_encoder(v)
    text = build_text_encoder(t)
    projections = "itc" in on or coded
    student = SemMIMStudent(
        vision=vision,
        text=text,
        fusion=build_fusion_encoder(f) if on & {"itm", "mlm", "mim", "global_codes"} else None,
        vision_proj=ProjectionHead(v.dim, config.embed_dim) if projections else None,
        text_proj=ProjectionHead(t.dim, config.embed_dim) if projections else None,
        itm_head=MatchingHead(f.dim) if "itm" in on else None,
        mlm_head=build_mlm_head(text, tie=True) if "mlm" in on else None,
        code_head=RegressionHead(f.dim, config.code_dim, hidden_dim=config.code_hidden_dim)
        if coded
        else None,
        prototypes=PrototypeProjection(config.code_dim, config.num_codes) if coded else None,
    )

    def targets() -> PrototypeTargets:
        return PrototypeTargets(
            config.num_codes, teacher_temp=config.teacher_temp, center_momentum=config.center_momentum
        )

    return SemMIM(
        student,
        config,
        patch_masker=(
            TextGuidedPatchMasker(
                config.mask_ratio, temperature=config.mask_temperature, patch_size=v.patch_size
            )
            if coded
            else None
        ),
        itc_loss=(
            ImageTextContrastive(config.embed_dim, config.itc_queue_size, config.temperature)
            if "itc" in on
            else None
        ),
        global_targets=targets() if "global_codes" in on else None,
        patch_targets=targets() if "mim" in on else None,
        text_masker=token_masker(config, t.vocab_size) if "mlm" in on else None,
        ema_decay=decay_schedule(config),
    )
