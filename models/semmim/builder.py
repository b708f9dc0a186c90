"""Config -> parts -> :class:`~maskmm.models.semmim.model.SemMIM`."""

from __future__ import annotations

from maskmm.masking import TextGuidedPatchMasker
from maskmm.nn import MatchingHead, ProjectionHead, RegressionHead, build_mlm_head
from maskmm.nn.encoders_config import build_encoders
from maskmm.targets import PrototypeProjection, PrototypeTargets

from .config import CODED, LOSS_NAMES, SemMIMConfig
from .model import SemMIM, SemMIMSchedule, SemMIMSettings, SemMIMStudent

__all__ = ["build_model", "build_settings"]

#: The built-in tokenizer's ``[PAD]=0, [CLS]=1, [SEP]=2, [MASK]=3, [UNK]=4``.
_SPECIAL_IDS = (0, 1, 2, 3, 4)


def build_settings(cfg: SemMIMConfig) -> SemMIMSettings:
    """:class:`SemMIMSettings` from ``cfg.losses`` / ``cfg.codes`` / ``cfg.image_masking`` / ``cfg.itc``."""
    L = cfg.losses
    return SemMIMSettings(
        losses=L.enabled(),
        weights=tuple((n, L.weight(n)) for n in LOSS_NAMES),
        student_temp=cfg.codes.student_temp,
        mask_mode=cfg.image_masking.mode,
        itc_momentum_keys=cfg.itc.momentum_keys,
        itc_distill=cfg.itc.distill,
        itc_pool=cfg.itc.pool,
    )


def build_model(
    cfg: SemMIMConfig,
    *,
    vocab_size: int | None = None,
    pad_id: int = 0,
    mask_token_id: int = 3,
    special_ids: tuple[int, ...] = _SPECIAL_IDS,
) -> SemMIM:
    """Build every part ``cfg`` needs and assemble a :class:`SemMIM`.

    Only the parts of enabled losses are built. The ITC projections are built whenever ITC or the
    text-guided masking needs them (without ITC they stay frozen at their initialisation).
    ``vocab_size`` defaults to ``cfg.model.vocab_size`` (which must then be > 0).
    """
    cfg.validate()
    vocab = vocab_size if vocab_size is not None else cfg.model.vocab_size
    if not isinstance(vocab, int) or vocab <= 0:
        raise ValueError(
            f"vocab_size must be a positive int (from the tokenizer or model.vocab_size), got {vocab!r}"
        )
    m, L, c = cfg.model, cfg.losses, cfg.codes
    on = set(L.enabled())
    coded = bool(on & set(CODED))
    vision, text, fusion = build_encoders(
        m, vocab, pad_id, mask_token=True, fusion=bool(on & {"itm", "mlm", *CODED})
    )
    projections = "itc" in on or coded
    student = SemMIMStudent(
        vision=vision,
        text=text,
        fusion=fusion,
        vision_proj=ProjectionHead(m.vision_dim, m.embed_dim) if projections else None,
        text_proj=ProjectionHead(m.text_dim, m.embed_dim) if projections else None,
        itm_head=MatchingHead(m.text_dim) if "itm" in on else None,
        mlm_head=build_mlm_head(text, tie=True) if "mlm" in on else None,
        code_head=RegressionHead(m.text_dim, c.dim, hidden_dim=c.hidden_dim) if coded else None,
        prototypes=PrototypeProjection(c.dim, c.num_codes) if coded else None,
    )

    def targets() -> PrototypeTargets:
        return PrototypeTargets(c.num_codes, teacher_temp=c.teacher_temp, center_momentum=c.center_momentum)

    schedule = SemMIMSchedule(
        alpha=cfg.itc.alpha_at,
        itm_hardness=lambda step: cfg.itm.hardness_at(step - L.itm_start_step),
        active_losses=L.active_at,
        find_unused_parameters=L.itm_start_step > 0 or L.masked_start_step > 0,
    )
    im = cfg.image_masking
    return SemMIM(
        student,
        build_settings(cfg),
        patch_masker=(
            TextGuidedPatchMasker(im.ratio, temperature=im.temperature, patch_size=m.patch_size)
            if coded
            else None
        ),
        itc_loss=(cfg.itc.build(m.embed_dim) if "itc" in on else None),
        global_targets=targets() if "global_codes" in on else None,
        patch_targets=targets() if "mim" in on else None,
        text_masker=cfg.text_masking.build(vocab, mask_token_id, special_ids) if "mlm" in on else None,
        ema_decay=cfg.ema.decay_schedule(),
        schedule=schedule,
    )
