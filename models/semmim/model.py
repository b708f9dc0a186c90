"""The SemMIM pretraining objective over injected parts.

One step (:meth:`SemMIM.compute`) on a batch of image-caption pairs:

1. The **momentum model** (:class:`maskmm.teachers.EMATeacher` of the student's encoders, ITC
   projections, code head and prototypes) encodes the clean pair without gradient. It gives the ITC
   momentum features, the text-to-patch relevance used for masking, and the code targets: its fused
   image states (clean image with the caption) through the code head and prototypes, centred and
   sharpened by :class:`maskmm.targets.PrototypeTargets` (CLS and patches have separate centres).
2. **ITC** (ALBEF: momentum keys, queue, soft targets; or CLIP-style online keys) and **ITM** (hard
   negatives) on the clean pair.
3. **Text-guided masking**: the patches most similar to the caption are masked (Gumbel-top-k).
4. **Masked modeling with text**: the student encodes the masked image, fuses it with the clean
   caption, and maps the fused states into the code space. ``mim``: the masked patches predict the
   momentum patch codes (:func:`maskmm.losses.prototype_loss` at masked positions only);
   ``global_codes``: the fused CLS predicts the momentum global codes (the agreement that shapes the
   code space).
5. Optional **MLM** on (clean image, masked caption).

:meth:`SemMIM.forward` is the recipe protocol of :class:`maskmm.training.Objective`: it reads the
step's distillation weight, ITM hardness and active losses from the :class:`SemMIMSchedule`; the
trainer calls :meth:`SemMIM.after_optimizer_step` (the EMA update) after every optimizer step. The
target centres are updated inside the step in training mode, after the targets were computed (DINO).
Details that are our choices are listed in :mod:`maskmm.models.semmim.config`.

**Data parallelism** (more than one rank, the same local batch size ``b`` and the same
``generator`` state on every rank): the step equals one process on the concatenated global batch.
Captions are padded to the longest length over ranks; ITC gathers its keys; ITM gathers the image
and text states with gradient and draws the negatives of the global batch; the text-guided patch
masks and the text masks are drawn for the global batch (relevance scores and token ids gathered)
and each rank keeps its rows; the target centres are updated from the global batch; the ITM, MIM
and MLM means are rescaled to this rank's share of the global mean.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from maskmm._checks import check_ratio
from maskmm.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    pad_to_common_length,
    rescale_to_global_mean,
    world_info,
)
from maskmm.losses import ImageTextContrastive, masked_token_loss, prototype_loss
from maskmm.masking import TextGuidedPatchMasker, TokenMasker
from maskmm.nn import CrossAttentionFusion
from maskmm.targets import PrototypeTargets
from maskmm.teachers import EMATeacher

from .._common import (
    PartsContainer,
    StepLosses,
    batch_pair_positives,
    check_pair_batch,
    check_required_parts,
    itc_similarity,
    itm_step,
)
from .config import CODED, LOSS_NAMES
from .scores import text_patch_similarity

__all__ = ["SemMIM", "SemMIMOutput", "SemMIMSchedule", "SemMIMSettings", "SemMIMStudent"]


@dataclass(frozen=True)
class SemMIMSettings:
    """What :class:`SemMIM` computes at every step (built from a config by the builder).

    Attributes:
        losses: names of the enabled losses, a subset of :data:`LOSS_NAMES`.
        weights: loss name -> weight (missing names weigh 1).
        student_temp: temperature of the student's code logits.
        mask_mode: ``"token"``: masked patches replaced by the ViT mask token at its input;
            ``"drop"``: removed before the ViT, mask tokens inserted before the fusion.
        itc_momentum_keys: ITC keys (and queue) are the momentum model's features, with soft targets
            (ALBEF); ``False``: the online features of the batch (CLIP style), no distillation.
        itc_distill: soft targets weighted by ``alpha`` (with momentum keys).
        itc_pool: ITC feature (and the caption feature of the masking score) from the CLS state or
            the mean of the other valid states.
    """

    losses: tuple[str, ...] = ("itc", "itm", "mim", "global_codes")
    weights: tuple[tuple[str, float], ...] = ()
    student_temp: float = 0.1
    mask_mode: Literal["token", "drop"] = "token"
    itc_momentum_keys: bool = True
    itc_distill: bool = True
    itc_pool: Literal["cls", "mean"] = "cls"

    def __post_init__(self) -> None:
        unknown = set(self.losses) - set(LOSS_NAMES)
        if unknown or not self.losses:
            raise ValueError(f"losses must be a non-empty subset of {LOSS_NAMES}, got {self.losses}")
        if self.mask_mode not in ("token", "drop"):
            raise ValueError(f"mask_mode must be 'token' or 'drop', got {self.mask_mode!r}")
        if self.itc_pool not in ("cls", "mean"):
            raise ValueError(f"itc_pool must be 'cls' or 'mean', got {self.itc_pool!r}")
        if not self.student_temp > 0:
            raise ValueError(f"student_temp must be > 0, got {self.student_temp}")

    def weight(self, name: str) -> float:
        return dict(self.weights).get(name, 1.0)

    def on(self, name: str) -> bool:
        return name in self.losses

    @property
    def coded(self) -> bool:
        """Whether a loss of the code space (``mim``, ``global_codes``) is enabled."""
        return any(self.on(n) for n in CODED)


class SemMIMSchedule(NamedTuple):
    """What changes with the training step: the ITC distillation weight ``alpha(step)``, the ITM
    hardness ``itm_hardness(step)`` and the enabled losses computed at ``step`` (``active_losses``;
    ``None``: all of them from step 0). ``find_unused_parameters``: some loss joins later."""

    alpha: Callable[[int], float] = lambda step: 0.4
    itm_hardness: Callable[[int], float] = lambda step: 1.0
    active_losses: Callable[[int], tuple[str, ...]] | None = None
    find_unused_parameters: bool = False


class SemMIMOutput(NamedTuple):
    """Result of one step.

    Attributes:
        loss: fp32 scalar, the weighted sum of the computed losses.
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
        settings: which losses run, their weights and options (:class:`SemMIMSettings`).
        patch_masker: :class:`~maskmm.masking.TextGuidedPatchMasker` (ratio, Gumbel temperature).
        itc_loss: ``ImageTextContrastive`` (temperature, queue); required with ITC.
        global_targets, patch_targets: :class:`~maskmm.targets.PrototypeTargets` (centre +
            sharpening) of the CLS and patch codes; required with ``global_codes`` / ``mim``.
        text_masker: :class:`~maskmm.masking.TokenMasker`; required with MLM.
        ema_decay: float or schedule ``step -> decay`` of the momentum model.
        schedule: the step-dependent settings :meth:`forward` uses (:class:`SemMIMSchedule`).
    """

    def __init__(
        self,
        student: SemMIMStudent,
        settings: SemMIMSettings | None = None,
        *,
        patch_masker: TextGuidedPatchMasker | None = None,
        itc_loss: ImageTextContrastive | None = None,
        global_targets: PrototypeTargets | None = None,
        patch_targets: PrototypeTargets | None = None,
        text_masker: TokenMasker | None = None,
        ema_decay: Any = 0.996,
        schedule: SemMIMSchedule | None = None,
    ) -> None:
        super().__init__()
        settings = settings if settings is not None else SemMIMSettings()
        if not isinstance(student, SemMIMStudent):
            raise TypeError(f"student must be a SemMIMStudent, got {type(student).__name__}")
        if not isinstance(settings, SemMIMSettings):
            raise TypeError(f"settings must be a SemMIMSettings, got {type(settings).__name__}")
        self.settings = settings
        self.schedule = schedule if schedule is not None else SemMIMSchedule()
        on = settings.on
        check_required_parts(student, _REQUIRED, on, "student.")
        coded = settings.coded
        extra = {
            "itc_loss": (itc_loss, on("itc")),
            "patch_masker": (patch_masker, coded),
            "global_targets": (global_targets, on("global_codes")),
            "patch_targets": (patch_targets, on("mim")),
            "text_masker": (text_masker, on("mlm")),
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
        if not on("itc"):
            for proj in (student.vision_proj, student.text_proj):
                if proj is not None:
                    proj.requires_grad_(False)
        self.student = student
        self.itc_loss = itc_loss
        self.patch_masker = patch_masker
        self.global_targets = global_targets
        self.patch_targets = patch_targets
        self.text_masker = text_masker
        # the momentum model copies what its outputs need: the code targets and masking scores, and
        # the ITC keys with momentum keys
        names = ()
        if coded:
            names = ("vision", "text", "fusion", "vision_proj", "text_proj", "code_head", "prototypes")
        elif on("itc") and settings.itc_momentum_keys:
            names = ("vision", "text", "vision_proj", "text_proj")
        include = [n for n in names if getattr(student, n) is not None]
        self.teacher = EMATeacher(student, decay=ema_decay, include=include) if include else None
        self._pad_id = int(getattr(getattr(student.text, "config", None), "pad_token_id", 0))

    def on(self, name: str) -> bool:
        """Whether loss ``name`` is enabled."""
        return self.settings.on(name)

    @torch.no_grad()
    def update_teacher(self, step: int) -> None:
        """EMA update of the momentum model; call after the optimizer step of ``step``."""
        if self.teacher is not None:
            self.teacher.update(step)

    def _t(self, name: str) -> nn.Module:
        return getattr(self.teacher.module, name)

    # ------------------------------------------------------------------ encoders (also for eval)

    def pool_image(self, states: Tensor) -> Tensor:
        """``[B, D]`` ITC input: the CLS state, or the mean of the patch states (``itc_pool``)."""
        return states[:, 0] if self.settings.itc_pool == "cls" else states[:, 1:].mean(1)

    def pool_text(self, states: Tensor, valid: Tensor) -> Tensor:
        """``[B, D]`` ITC input: the CLS state, or the mean of the other valid states."""
        if self.settings.itc_pool == "cls":
            return states[:, 0]
        w = valid[:, 1:, None].to(states.dtype)
        return (states[:, 1:] * w).sum(1) / w.sum(1).clamp(min=1.0)

    def encode_image(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Student image states ``[B, 1 + N, Dv]`` and ITC features ``[B, E]`` (``None`` without ITC)."""
        states = self.student.vision(images).last_hidden
        proj = self.student.vision_proj
        return states, (proj(self.pool_image(states)) if proj is not None and self.on("itc") else None)

    def encode_text(self, input_ids: Tensor, valid: Tensor) -> tuple[Tensor, Tensor | None]:
        """Student text states ``[B, L, Dt]`` and ITC features ``[B, E]`` (``None`` without ITC)."""
        states = self.student.text(input_ids, valid).last_hidden
        proj = self.student.text_proj
        return states, (proj(self.pool_text(states, valid)) if proj is not None and self.on("itc") else None)

    def itm_logits(self, image_states: Tensor, text_states: Tensor, text_valid: Tensor) -> Tensor:
        """``[B, 2]`` matching logits (index 1 = match) of paired rows."""
        st = self.student
        if st.fusion is None or st.itm_head is None:
            raise ValueError("this model was built without a fusion encoder or an ITM head")
        return st.itm_head(st.fusion(image_states, None, text_states, text_valid).text[:, 0])

    # ------------------------------------------------------------------ recipe protocol

    has_itc = property(lambda self: self.on("itc"))
    has_itm = property(lambda self: self.student.itm_head is not None)
    find_unused_parameters = property(lambda self: self.schedule.find_unused_parameters)

    def forward(
        self, batch: Mapping[str, Tensor], *, step: int = 0, generator: torch.Generator | None = None
    ) -> SemMIMOutput:
        """The losses of the 0-based ``step`` on ``batch`` (``images``, ``input_ids``, ``text_valid``,
        ``image_ids``), with the distillation weight, ITM hardness and active losses the
        :class:`SemMIMSchedule` gives for that step (:meth:`compute` takes them explicitly)."""
        sch = self.schedule
        active = sch.active_losses(step) if sch.active_losses is not None else self.settings.losses
        hardness = sch.itm_hardness(step)
        out = self.compute(
            batch["images"],
            batch["input_ids"],
            batch["text_valid"],
            batch.get("image_ids"),
            positives=batch_pair_positives(batch),
            alpha=sch.alpha(step),
            itm_hardness=hardness,
            active_losses=active,
            generator=generator,
        )
        if "itm" in active:
            out.stats["itm/hardness"] = torch.tensor(hardness)  # a CPU scalar: no device work
        return out

    def after_optimizer_step(self, step: int) -> None:
        """EMA update of the momentum model (the trainer calls it after each optimiser step)."""
        self.update_teacher(step)

    # ------------------------------------------------------------------ losses

    def compute(
        self,
        images: Tensor,
        input_ids: Tensor,
        text_valid: Tensor,
        image_ids: Tensor | None = None,
        *,
        positives: Tensor | None = None,
        alpha: float = 0.4,
        itm_hardness: float = 1.0,
        active_losses: Collection[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> SemMIMOutput:
        """One pretraining step's losses.

        Args:
            images: float ``[B, C, H, W]``; input_ids: long ``[B, L]`` (CLS first);
            text_valid: bool ``[B, L]``, ``True`` = real token.
            image_ids: long ``[B]``: pairs sharing an id are ITC positives and never ITM negatives.
            positives: ``bool [W * B, W * B]`` over the global batch, ``[i, j]`` = caption ``j`` is
                true of image ``i`` (:func:`maskmm.losses.batch_positives`): an ITC positive, never an
                ITM negative. ``None``: only the own pair (and ``image_ids``).
            alpha: ITC soft-target weight in ``[0, 1]`` (used with momentum keys and distillation).
            itm_hardness: in ``[0, 1]``, how much the ITM negatives follow the ITC similarities
                rather than a uniform draw (:func:`maskmm.losses.sample_hard_negatives`).
            active_losses: the enabled losses to compute at this step (default: all of them).
            generator: RNG of the masks and the hard-negative draws (the same state on every rank
                under data parallelism: the draws are made for the global batch).
        """
        s = self.settings
        alpha = check_ratio("alpha", alpha, allow_one=True)
        check_ratio("itm_hardness", itm_hardness, allow_one=True)
        active = s.losses if active_losses is None else tuple(active_losses)
        if not active or not set(active) <= set(s.losses):
            raise ValueError(
                f"active_losses must be a non-empty subset of the enabled losses {s.losses}, got {active}"
            )

        def on(name: str) -> bool:
            return name in active

        rank, world = world_info()
        b = check_pair_batch(images, input_ids, text_valid, image_ids, generator, itm=on("itm"), world=world)
        rows = (rank * b, (rank + 1) * b)
        coded = on("mim") or on("global_codes")
        valid_all = None
        if on("itm") or on("mlm") or coded:  # draws for the global batch need a common caption length
            input_ids, text_valid = pad_to_common_length([input_ids, text_valid], [self._pad_id, False])
            valid_all = all_gather_no_grad(text_valid)

        st = self.student
        step = StepLosses()
        momentum_itc = on("itc") and s.itc_momentum_keys

        # ---------------- momentum model on the clean pair (no grad)
        t_img = t_txt = scores = cls_probs = patch_probs = None
        with torch.no_grad():
            if coded or momentum_itc:
                t_img = self._t("vision")(images).last_hidden  # [B, 1+N, Dv]
                t_txt = self._t("text")(input_ids, text_valid).last_hidden  # [B, L, Dt]
            if coded:
                scores = text_patch_similarity(
                    self._t("vision_proj")(t_img[:, 1:]),
                    self._t("text_proj")(self.pool_text(t_txt, text_valid)),
                )
                t_fused = self._t("fusion")(t_img, None, t_txt, text_valid).image  # [B, 1+N, Df]
                t_logits = self._t("prototypes")(self._t("code_head")(t_fused)).float()  # [B, 1+N, K]
                if on("global_codes"):
                    cls_probs = self.global_targets(t_logits[:, 0])
                    if self.training:
                        self.global_targets.update_center(t_logits[:, 0])
                if on("mim"):
                    patch_probs = self.patch_targets(t_logits[:, 1:])
                    if self.training:
                        self.patch_targets.update_center(t_logits[:, 1:])

        # ---------------- clean student pass: ITC + ITM
        need_img = on("itc") or on("itm") or on("mlm")
        img = st.vision(images).last_hidden if need_img else None
        txt = st.text(input_ids, text_valid).last_hidden if (need_img or coded) else None
        img_feat = txt_feat = None
        if on("itc"):
            img_feat = st.vision_proj(self.pool_image(img))
            txt_feat = st.text_proj(self.pool_text(txt, text_valid))
            if momentum_itc:
                with torch.no_grad():
                    img_feat_m = self._t("vision_proj")(self.pool_image(t_img))
                    txt_feat_m = self._t("text_proj")(self.pool_text(t_txt, text_valid))
                out = self.itc_loss(
                    img_feat,
                    txt_feat,
                    image_feat_m=img_feat_m,
                    text_feat_m=txt_feat_m,
                    image_ids=image_ids,
                    positives=positives,
                    alpha=alpha if s.itc_distill else 0.0,
                )
            else:
                out = self.itc_loss(img_feat, txt_feat, image_ids=image_ids, positives=positives)
            step.add("itc", out)
        if on("itm"):
            sim_i2t = None  # without ITC the hard negatives are drawn uniformly
            if img_feat is not None:
                sim_i2t = itc_similarity(
                    all_gather_no_grad(img_feat), all_gather_no_grad(txt_feat), self.itc_loss.temp
                )
            out = itm_step(
                all_gather_with_grad(img),
                all_gather_with_grad(txt),
                valid_all,
                sim_i2t,
                fusion=st.fusion,
                head=st.itm_head,
                image_ids=None if image_ids is None else all_gather_no_grad(image_ids),
                positives=positives,
                generator=generator,
                hardness=itm_hardness,
                rows=rows,
            )
            n_local, n_total = out.stats.pop("num_scored"), out.stats.pop("num_scored_total")
            step.add("itm", out._replace(loss=rescale_to_global_mean(out.loss, n_local, n_total)))

        # ---------------- text-guided masked view, fused with the clean caption
        image_mask = None
        if coded:
            pm_all = self.patch_masker(all_gather_no_grad(scores), generator=generator)  # global batch
            pm = type(pm_all)(*(t[rows[0] : rows[1]] for t in pm_all))
            image_mask = pm.mask
            v_full = st.vision.encode_masked_full(images, pm, s.mask_mode)  # [B, 1+N, Dv]
            fused = st.fusion(v_full, None, txt, text_valid).image  # [B, 1+N, Df]
            logits = st.prototypes(st.code_head(fused))  # [B, 1+N, K]
            with torch.no_grad():
                m = pm.mask.float()
                step.stats["mask/image_masked"] = m.sum(1).mean()
                step.stats["mask/score_masked"] = (scores * m).sum() / m.sum().clamp(min=1.0)
                step.stats["mask/score_mean"] = scores.mean()
            if on("mim"):
                out = prototype_loss(logits[:, 1:], patch_probs, pm.mask, student_temperature=s.student_temp)
                loss = rescale_to_global_mean(out.loss, pm.mask.sum(), pm_all.mask.sum())
                step.add("mim", out._replace(loss=loss))
            if on("global_codes"):
                out = prototype_loss(logits[:, 0], cls_probs, student_temperature=s.student_temp)
                step.add("global_codes", out)

        # ---------------- optional MLM: (clean image, masked caption)
        text_mask = None
        if on("mlm"):
            tm_all = self.text_masker(all_gather_no_grad(input_ids), valid_all, generator=generator)
            tm = type(tm_all)(*(t[rows[0] : rows[1]] for t in tm_all))
            text_mask = tm.mask
            masked_txt = st.text(tm.input_ids, text_valid).last_hidden
            fused_t = st.fusion(img, None, masked_txt, text_valid).text
            out = masked_token_loss(fused_t, tm.labels, st.mlm_head)
            loss = rescale_to_global_mean(out.loss, tm.mask.sum(), tm_all.mask.sum())
            step.add("mlm", out._replace(loss=loss))

        total = step.total(LOSS_NAMES, s.weight)
        return SemMIMOutput(total, step.losses, step.stats, image_mask, scores, text_mask)
