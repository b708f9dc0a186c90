"""The SemMIM pretraining objective over injected parts.

One step (:meth:`SemMIM.forward`) on a batch of image-caption pairs:

1. The **momentum model** (:class:`maskmm.teachers.EMATeacher` of the student's encoders, ITC
   projections, code head and prototypes) encodes the clean pair without gradient. It gives the ITC
   momentum features, the text-to-patch relevance used for masking, and the code targets: its fused
   image states (clean image with the caption) through the code head and prototypes, centred and
   sharpened by :class:`maskmm.targets.PrototypeTargets` (CLS and patches have separate centres).
2. **ITC** (ALBEF: momentum keys, queue, soft targets) and **ITM** (hard negatives) on the clean pair.
3. **Text-guided masking**: the patches most similar to the caption are masked (Gumbel-top-k).
4. **Masked modeling with text**: the student encodes the masked image, fuses it with the clean
   caption, and maps the fused states into the code space. ``mim``: the masked patches predict the
   momentum patch codes (:func:`maskmm.losses.prototype_loss` at masked positions only);
   ``global_codes``: the fused CLS predicts the momentum global codes (the agreement that shapes the
   code space).
5. Optional **MLM** on (clean image, masked caption).

The training loop calls :meth:`SemMIM.update_teacher` after every optimizer step. The target
centres are updated inside ``forward`` in training mode, after the targets were computed (DINO).
Details that are our choices are listed in :mod:`maskmm.models.semmim.config`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from maskmm._checks import check_ratio
from maskmm.losses import ImageTextContrastive, masked_token_loss, prototype_loss
from maskmm.masking import TextGuidedPatchMasker, TokenMasker
from maskmm.nn import CrossAttentionFusion
from maskmm.targets import PrototypeTargets
from maskmm.teachers import EMATeacher

from .._common import (
    PartsContainer,
    StepLosses,
    check_pair_batch,
    check_required_parts,
    itc_similarity,
    itm_step,
)
from .config import LOSS_NAMES, SemMIMConfig
from .scores import text_patch_similarity

__all__ = ["SemMIM", "SemMIMOutput", "SemMIMStudent"]


class SemMIMOutput(NamedTuple):
    """Result of one :meth:`SemMIM.forward`.

    Attributes:
        loss: fp32 scalar, the weighted sum of the enabled losses.
        losses: loss name -> fp32 scalar (unweighted, attached to the graph).
        stats: name -> detached fp32 scalar (accuracies, code entropies, agreement); no host sync.
        image_mask: bool ``[B, N]`` masked patches (``None`` without ``mim`` / ``global_codes``).
        patch_scores: fp32 ``[B, N]`` text-to-patch relevance that guided the masking (``None`` likewise).
        text_mask: bool ``[B, L]`` tokens to predict (``None`` without ``mlm``).
    """

    loss: Tensor
    losses: dict[str, Tensor]
    stats: dict[str, Tensor]
    image_mask: Tensor | None = None
    patch_scores: Tensor | None = None
    text_mask: Tensor | None = None


class SemMIMStudent(PartsContainer):
    """Container of the trained parts; the momentum model copies them by name.

    Args:
        vision: ViT with a mask token (``maskmm.nn.VisionTransformer`` interface).
        text: text encoder; fusion: ``MergedFusion`` (image states are needed for masked modeling;
            a cross-attention fusion is accepted when only ITC / ITM / MLM run).
        vision_proj, text_proj: ITC projections (also score the text-to-patch relevance).
        itm_head, mlm_head: matching / masked-token heads.
        code_head: fused states ``[..., Df] -> [..., code_dim]``.
        prototypes: :class:`~maskmm.targets.PrototypeProjection` ``code_dim -> K``.
    """

    def __init__(
        self,
        *,
        vision: nn.Module,
        text: nn.Module,
        fusion: nn.Module | None = None,
        vision_proj: nn.Module | None = None,
        text_proj: nn.Module | None = None,
        itm_head: nn.Module | None = None,
        mlm_head: nn.Module | None = None,
        code_head: nn.Module | None = None,
        prototypes: nn.Module | None = None,
    ) -> None:
        super().__init__(
            vision=vision,
            text=text,
            fusion=fusion,
            vision_proj=vision_proj,
            text_proj=text_proj,
            itm_head=itm_head,
            mlm_head=mlm_head,
            code_head=code_head,
            prototypes=prototypes,
        )


_REQUIRED = {
    "itc": ("vision_proj", "text_proj"),
    "itm": ("fusion", "itm_head"),
    "mlm": ("fusion", "mlm_head"),
    "mim": ("fusion", "vision_proj", "text_proj", "code_head", "prototypes"),
    "global_codes": ("fusion", "vision_proj", "text_proj", "code_head", "prototypes"),
}


class SemMIM(nn.Module):
    """SemMIM objective (see the module docstring).

    Args:
        student: the trained parts.
        config: which losses run, weights, temperatures and masking options.
        patch_masker: :class:`~maskmm.masking.TextGuidedPatchMasker` (ratio, Gumbel temperature).
        itc_loss: ``ImageTextContrastive`` (learnable temperature, queue); required with ITC.
        global_targets, patch_targets: :class:`~maskmm.targets.PrototypeTargets` (centre +
            sharpening) of the CLS and patch codes; required with ``global_codes`` / ``mim``.
        text_masker: :class:`~maskmm.masking.TokenMasker`; required with MLM.
        ema_decay: float or schedule ``step -> decay`` of the momentum model.
    """

    def __init__(
        self,
        student: SemMIMStudent,
        config: SemMIMConfig,
        *,
        patch_masker: TextGuidedPatchMasker | None = None,
        itc_loss: ImageTextContrastive | None = None,
        global_targets: PrototypeTargets | None = None,
        patch_targets: PrototypeTargets | None = None,
        text_masker: TokenMasker | None = None,
        ema_decay: Any = 0.996,
    ) -> None:
        super().__init__()
        if not isinstance(student, SemMIMStudent):
            raise TypeError(f"student must be a SemMIMStudent, got {type(student).__name__}")
        if not isinstance(config, SemMIMConfig):
            raise TypeError(f"config must be a SemMIMConfig, got {type(config).__name__}")
        self.config = config.validate()
        on = set(config.losses)
        check_required_parts(student, _REQUIRED, on.__contains__, "student.")
        coded = bool(on & {"mim", "global_codes"})
        extra = {
            "itc_loss": (itc_loss, "itc" in on),
            "patch_masker": (patch_masker, coded),
            "global_targets": (global_targets, "global_codes" in on),
            "patch_targets": (patch_targets, "mim" in on),
            "text_masker": (text_masker, "mlm" in on),
        }
        for name, (part, needed) in extra.items():
            if needed and part is None:
                raise ValueError(f"the enabled losses need {name}, got None")
        if coded and isinstance(student.fusion, CrossAttentionFusion):
            raise ValueError("mim / global_codes need fusion states at image positions: use a merged fusion")
        if coded and getattr(student.vision, "mask_token", None) is None:
            raise ValueError(
                "mim / global_codes need a ViT with a mask token (VisionConfig(mask_token=True))"
            )
        # Parts no enabled loss trains are frozen, so every trainable parameter receives a gradient.
        if not coded and getattr(student.vision, "mask_token", None) is not None:
            student.vision.mask_token.requires_grad_(False)
        if "itc" not in on:
            for proj in (student.vision_proj, student.text_proj):
                if proj is not None:
                    proj.requires_grad_(False)
        self.student = student
        self.itc_loss = itc_loss
        self.patch_masker = patch_masker
        self.global_targets = global_targets
        self.patch_targets = patch_targets
        self.text_masker = text_masker
        include = [
            name
            for name in ("vision", "text", "fusion", "vision_proj", "text_proj", "code_head", "prototypes")
            if getattr(student, name) is not None
            and (coded or name in ("vision", "text", "vision_proj", "text_proj"))
        ]
        self.teacher = EMATeacher(student, decay=ema_decay, include=include)

    def on(self, name: str) -> bool:
        """Whether loss ``name`` runs."""
        return name in self.config.losses

    @torch.no_grad()
    def update_teacher(self, step: int) -> None:
        """EMA update of the momentum model; call after the optimizer step of ``step``."""
        self.teacher.update(step)

    def _t(self, name: str) -> nn.Module:
        return getattr(self.teacher.module, name)

    # ------------------------------------------------------------------ encoders (also for eval)

    def encode_image(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Student image states ``[B, 1 + N, Dv]`` and ITC features ``[B, E]`` (``None`` without ITC)."""
        states = self.student.vision(images).last_hidden
        proj = self.student.vision_proj
        return states, (proj(states[:, 0]) if proj is not None else None)

    def encode_text(self, input_ids: Tensor, valid: Tensor) -> tuple[Tensor, Tensor | None]:
        """Student text states ``[B, L, Dt]`` and ITC features ``[B, E]`` (``None`` without ITC)."""
        states = self.student.text(input_ids, valid).last_hidden
        proj = self.student.text_proj
        return states, (proj(states[:, 0]) if proj is not None else None)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        images: Tensor,
        input_ids: Tensor,
        text_valid: Tensor,
        image_ids: Tensor | None = None,
        *,
        alpha: float | None = None,
        itm_hardness: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> SemMIMOutput:
        """One pretraining step's losses.

        Args:
            images: float ``[B, C, H, W]``; input_ids: long ``[B, L]`` (CLS first);
            text_valid: bool ``[B, L]``, ``True`` = real token.
            image_ids: long ``[B]``: pairs sharing an id are ITC positives and never ITM negatives.
            alpha: ITC soft-target weight in ``[0, 1]`` (default ``config.itc_alpha``).
            itm_hardness: in ``[0, 1]``, how much the ITM negatives follow the ITC similarities
                rather than a uniform draw (:func:`maskmm.losses.sample_hard_negatives`); from
                scratch, start at 0 and ramp up (see ``models/mamo`` ``itm.*``).
            generator: RNG of the masks and the hard-negative draws.
        """
        cfg = self.config
        check_pair_batch(images, input_ids, text_valid, image_ids, generator, itm=self.on("itm"))
        alpha = check_ratio("alpha", cfg.itc_alpha if alpha is None else alpha, allow_one=True)

        st = self.student
        coded = self.on("mim") or self.on("global_codes")
        step = StepLosses()

        # ---------------- momentum model on the clean pair (no grad)
        t_img = t_txt = scores = cls_probs = patch_probs = None
        with torch.no_grad():
            if coded or self.on("itc"):
                t_img = self._t("vision")(images).last_hidden  # [B, 1+N, Dv]
                t_txt = self._t("text")(input_ids, text_valid).last_hidden  # [B, L, Dt]
            if coded:
                scores = text_patch_similarity(
                    self._t("vision_proj")(t_img[:, 1:]), self._t("text_proj")(t_txt[:, 0])
                )
                t_fused = self._t("fusion")(t_img, None, t_txt, text_valid).image  # [B, 1+N, Df]
                t_logits = self._t("prototypes")(self._t("code_head")(t_fused)).float()  # [B, 1+N, K]
                if self.on("global_codes"):
                    cls_probs = self.global_targets(t_logits[:, 0])
                    if self.training:
                        self.global_targets.update_center(t_logits[:, 0])
                if self.on("mim"):
                    patch_probs = self.patch_targets(t_logits[:, 1:])
                    if self.training:
                        self.patch_targets.update_center(t_logits[:, 1:])

        # ---------------- clean student pass: ITC + ITM
        need_img = self.on("itc") or self.on("itm") or self.on("mlm")
        img = st.vision(images).last_hidden if need_img else None
        txt = st.text(input_ids, text_valid).last_hidden if (need_img or coded) else None
        sim_i2t = None  # without ITC the hard negatives are drawn uniformly
        if self.on("itc"):
            img_feat = st.vision_proj(img[:, 0])
            txt_feat = st.text_proj(txt[:, 0])
            with torch.no_grad():
                img_feat_m = self._t("vision_proj")(t_img[:, 0])
                txt_feat_m = self._t("text_proj")(t_txt[:, 0])
            out = self.itc_loss(
                img_feat,
                txt_feat,
                image_feat_m=img_feat_m,
                text_feat_m=txt_feat_m,
                image_ids=image_ids,
                alpha=alpha,
            )
            step.add("itc", out)
            sim_i2t = itc_similarity(img_feat, txt_feat, self.itc_loss.temp)
        if self.on("itm"):
            out = itm_step(
                img,
                txt,
                text_valid,
                sim_i2t,
                fusion=st.fusion,
                head=st.itm_head,
                image_ids=image_ids,
                generator=generator,
                hardness=itm_hardness,
            )
            step.add("itm", out)

        # ---------------- text-guided masked view, fused with the clean caption
        image_mask = None
        if coded:
            pm = self.patch_masker(scores, generator=generator)
            image_mask = pm.mask
            v_full = st.vision.encode_masked_full(images, pm, cfg.mask_mode)  # [B, 1+N, Dv]
            fused = st.fusion(v_full, None, txt, text_valid).image  # [B, 1+N, Df]
            logits = st.prototypes(st.code_head(fused))  # [B, 1+N, K]
            with torch.no_grad():
                m = pm.mask.float()
                step.stats["mask/image_masked"] = m.sum(1).mean()
                step.stats["mask/score_masked"] = (scores * m).sum() / m.sum().clamp(min=1.0)
                step.stats["mask/score_mean"] = scores.mean()
            if self.on("mim"):
                out = prototype_loss(
                    logits[:, 1:], patch_probs, pm.mask, student_temperature=cfg.student_temp
                )
                step.add("mim", out)
            if self.on("global_codes"):
                out = prototype_loss(logits[:, 0], cls_probs, student_temperature=cfg.student_temp)
                step.add("global_codes", out)

        # ---------------- optional MLM: (clean image, masked caption)
        text_mask = None
        if self.on("mlm"):
            tm = self.text_masker(input_ids, text_valid, generator=generator)
            text_mask = tm.mask
            masked_txt = st.text(tm.input_ids, text_valid).last_hidden
            fused_t = st.fusion(img, None, masked_txt, text_valid).text
            out = masked_token_loss(fused_t, tm.labels, st.mlm_head)
            step.add("mlm", out)

        total = step.total(LOSS_NAMES, cfg.weight)
        return SemMIMOutput(total, step.losses, step.stats, image_mask, scores, text_mask)
