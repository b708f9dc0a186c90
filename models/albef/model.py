"""The ALBEF pretraining objective over injected parts.

One training step (:meth:`ALBEF.forward`) on a batch of image-caption pairs:

1. **ITC**: image and text CLS features (projected, L2-normalised) of the student against the
   momentum model's features of the global batch plus a queue of earlier momentum features, with
   momentum distillation: the targets are ``alpha * softmax(momentum similarities) + (1 - alpha) *
   one-hot`` (``alpha`` ramps up over the first epoch). Learnable temperature.
   ``itc_momentum_keys=False`` instead uses the online features of the global batch as keys (CLIP
   style, no queue, no distillation).
2. **ITM**: one hard negative text per image and one hard negative image per text, drawn from the
   in-batch ITC similarities (pairs of the same image excluded); the ``3B`` pairs go through the
   fusion encoder and a 2-way head on the fused text CLS.
3. **MLM**: 15 % of the caption tokens are masked (BERT 80/10/10); the masked caption is encoded and
   fused with the student's image states (the clean image of step 1); the masked tokens are
   predicted from the fused text states, the target optionally distilled from the momentum model
   (masked caption + momentum image states), with the same ``alpha``.

The momentum model (:class:`maskmm.teachers.EMATeacher` of the parts that ITC and MLM distillation
read) holds its weights as buffers; :meth:`ALBEF.after_optimizer_step` updates it.

**Data parallelism** (every rank passing the same local batch size ``b``): the step equals one
process on the concatenated global batch, given the same ``generator`` state on every rank:
captions are padded to the longest length over ranks; ITC gathers its keys and queues the global
momentum features; ITM gathers image and text states with gradient, draws the negatives of the
global batch and fuses this rank's ``3b`` pairs; the MLM masking is drawn for the global batch
(token ids and validity gathered) and each rank keeps its rows; ITM and MLM means are rescaled to
this rank's share of the global mean. Dropout draws stay per rank (the ``tiny`` preset has none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, NamedTuple

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
from maskmm.losses import ImageTextContrastive, masked_token_loss
from maskmm.masking import TokenMasker
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
from .config import LOSS_NAMES

__all__ = ["ALBEF", "ALBEFOutput", "ALBEFSchedule", "ALBEFStudent"]


class ALBEFStudent(PartsContainer):
    """The trained parts (the momentum model copies a subset of them by name).

    Args:
        vision: image encoder (``maskmm.nn.VisionTransformer`` interface).
        text: text encoder (``maskmm.nn.TextEncoder`` interface).
        fusion: ``CrossAttentionFusion`` (ALBEF) or ``MergedFusion``; ``None`` without ITM and MLM.
        vision_proj, text_proj: ITC projection heads (``None`` without ITC).
        itm_head: 2-way matching head (``None`` without ITM).
        mlm_head: masked-token head (``None`` without MLM).
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
    ) -> None:
        super().__init__(
            vision=vision,
            text=text,
            fusion=fusion,
            vision_proj=vision_proj,
            text_proj=text_proj,
            itm_head=itm_head,
            mlm_head=mlm_head,
        )


_REQUIRED = {
    "itc": ("vision_proj", "text_proj"),
    "itm": ("fusion", "itm_head"),
    "mlm": ("fusion", "mlm_head"),
}


class ALBEFSchedule(NamedTuple):
    """What changes with the 0-based training step: the distillation weight ``alpha(step)`` (ITC and
    MLM) and the ITM hardness ``itm_hardness(step)``."""

    alpha: Callable[[int], float] = lambda step: 0.4
    itm_hardness: Callable[[int], float] = lambda step: 1.0


class ALBEFOutput(NamedTuple):
    """Result of one :meth:`ALBEF.forward`: ``loss`` (fp32, the weighted sum), ``losses`` (name ->
    unweighted fp32 scalar, attached) and ``stats`` (name -> detached scalar; no host sync)."""

    loss: Tensor
    losses: dict[str, Tensor]
    stats: dict[str, Tensor]


class ALBEF(nn.Module):
    """ALBEF's pretraining objective (see the module docstring).

    Args:
        student: the trained parts.
        losses: the enabled losses, a non-empty subset of ``("itc", "itm", "mlm")``.
        weights: loss name -> weight (missing names weigh 1).
        itc: :class:`maskmm.losses.ImageTextContrastive` (temperature and queue); required with ITC.
        text_masker: :class:`maskmm.masking.TokenMasker` of MLM; required with MLM.
        itc_momentum_keys: ITC keys are the momentum features (ALBEF); ``False``: online keys.
        itc_distill: momentum distillation in ITC (needs momentum keys).
        mlm_distill: momentum distillation in MLM.
        itc_pool: ITC feature from the CLS state (ALBEF) or the mean of the other valid states.
        ema_decay: float or schedule ``step -> decay`` of the momentum model (ALBEF: 0.995).
        fp32_shadow: fp32 master weights in the momentum model (for bf16 students).
        schedule: :class:`ALBEFSchedule`.
    """

    def __init__(
        self,
        student: ALBEFStudent,
        *,
        losses: tuple[str, ...] = LOSS_NAMES,
        weights: Mapping[str, float] | None = None,
        itc: ImageTextContrastive | None = None,
        text_masker: TokenMasker | None = None,
        itc_momentum_keys: bool = True,
        itc_distill: bool = True,
        mlm_distill: bool = True,
        itc_pool: Literal["cls", "mean"] = "cls",
        ema_decay: object = 0.995,
        fp32_shadow: bool = False,
        schedule: ALBEFSchedule | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(student, ALBEFStudent):
            raise TypeError(f"student must be an ALBEFStudent, got {type(student).__name__}")
        losses = tuple(losses)
        if not losses or not set(losses) <= set(LOSS_NAMES):
            raise ValueError(f"losses must be a non-empty subset of {LOSS_NAMES}, got {losses}")
        self.losses = tuple(n for n in LOSS_NAMES if n in losses)
        self.weights = {n: float((weights or {}).get(n, 1.0)) for n in LOSS_NAMES}
        check_required_parts(student, _REQUIRED, self.on, "student.")
        if self.on("itc") and not isinstance(itc, ImageTextContrastive):
            raise TypeError(f"ITC is enabled: itc must be an ImageTextContrastive, got {type(itc).__name__}")
        if self.on("mlm") and not isinstance(text_masker, TokenMasker):
            raise TypeError(
                f"MLM is enabled: text_masker must be a TokenMasker, got {type(text_masker).__name__}"
            )
        if itc_pool not in ("cls", "mean"):
            raise ValueError(f"itc_pool must be 'cls' or 'mean', got {itc_pool!r}")
        self.student = student
        self.itc = itc if self.on("itc") else None
        self.text_masker = text_masker if self.on("mlm") else None
        self.schedule = schedule if schedule is not None else ALBEFSchedule()
        self.itc_momentum_keys = bool(itc_momentum_keys)
        self.itc_distill = bool(itc_distill) and self.itc_momentum_keys
        self.mlm_distill = bool(mlm_distill) and self.on("mlm")
        self.itc_pool = itc_pool
        # the momentum model: what the momentum ITC keys and the MLM soft targets read
        include: list[str] = []
        momentum_itc = self.on("itc") and self.itc_momentum_keys
        if momentum_itc or self.mlm_distill:
            include.append("vision")
        if momentum_itc:
            include += ["text", "vision_proj", "text_proj"]
        if self.mlm_distill:
            include += ["fusion", "mlm_head"] + ([] if "text" in include else ["text"])
        self.teacher = (
            EMATeacher(student, decay=ema_decay, include=include, fp32_shadow=fp32_shadow)
            if include
            else None
        )
        self._pad_id = int(getattr(getattr(student.text, "config", None), "pad_token_id", 0))

    def on(self, name: str) -> bool:
        return name in self.losses

    def _teacher(self, name: str) -> nn.Module:
        return getattr(self.teacher.module, name)

    # ------------------------------------------------------------------ encoders (also for eval)

    def pool_image(self, states: Tensor) -> Tensor:
        """``[B, D]`` ITC input: the CLS state, or the mean of the patch states."""
        return states[:, 0] if self.itc_pool == "cls" else states[:, 1:].mean(1)

    def pool_text(self, states: Tensor, valid: Tensor) -> Tensor:
        """``[B, D]`` ITC input: the CLS state, or the mean of the other valid states."""
        if self.itc_pool == "cls":
            return states[:, 0]
        w = valid[:, 1:, None].to(states.dtype)
        return (states[:, 1:] * w).sum(1) / w.sum(1).clamp(min=1.0)

    def encode_image(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Student image states ``[B, 1 + N, D]`` and ITC features ``[B, E]`` (``None`` without ITC)."""
        states = self.student.vision(images).last_hidden
        proj = self.student.vision_proj
        return states, (proj(self.pool_image(states)) if proj is not None else None)

    def encode_text(self, input_ids: Tensor, valid: Tensor) -> tuple[Tensor, Tensor | None]:
        """Student text states ``[B, L, D]`` and ITC features ``[B, E]`` (``None`` without ITC)."""
        states = self.student.text(input_ids, valid).last_hidden
        proj = self.student.text_proj
        return states, (proj(self.pool_text(states, valid)) if proj is not None else None)

    def itm_logits(self, image_states: Tensor, text_states: Tensor, text_valid: Tensor) -> Tensor:
        """``[B, 2]`` matching logits (index 1 = match) of paired rows."""
        if self.student.itm_head is None:
            raise ValueError("this model was built without an ITM head")
        fused = self.student.fusion(image_states, None, text_states, text_valid)
        return self.student.itm_head(fused.text[:, 0])

    # ------------------------------------------------------------------ recipe protocol

    has_itc = property(lambda self: self.student.vision_proj is not None)
    has_itm = property(lambda self: self.student.itm_head is not None)
    find_unused_parameters = False

    def forward(
        self, batch: Mapping[str, Tensor], *, step: int = 0, generator: torch.Generator | None = None
    ) -> ALBEFOutput:
        """The losses of the 0-based ``step`` on ``batch`` (``images``, ``input_ids``, ``text_valid``,
        ``image_ids``), with the ``alpha`` and ITM hardness of :class:`ALBEFSchedule` at ``step``."""
        hardness = self.schedule.itm_hardness(step)
        alpha = self.schedule.alpha(step)
        out = self.compute(
            batch["images"],
            batch["input_ids"],
            batch["text_valid"],
            batch.get("image_ids"),
            positives=batch_pair_positives(batch),
            alpha=alpha,
            itm_hardness=hardness,
            generator=generator,
        )
        if self.on("itm"):
            out.stats["itm/hardness"] = torch.tensor(hardness)  # CPU scalars: no device work
        if self.itc_distill or self.mlm_distill:
            out.stats["alpha"] = torch.tensor(alpha)
        return out

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        """EMA update of the momentum model (the trainer calls it after each optimiser step)."""
        if self.teacher is not None:
            self.teacher.update(step)

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
        generator: torch.Generator | None = None,
    ) -> ALBEFOutput:
        """One pretraining step's losses.

        Args:
            images: ``[B, 3, H, W]`` float; input_ids: ``long [B, L]`` (CLS first); text_valid:
                ``bool [B, L]`` (``True`` = real token).
            image_ids: ``long [B]``: pairs sharing an id are positives of each other in ITC and never
                ITM negatives; ``None`` = every pair distinct.
            positives: ``bool [W * B, W * B]`` over the global batch, ``[i, j]`` = caption ``j`` is
                true of image ``i`` (:func:`maskmm.losses.batch_positives`): an ITC positive, never an
                ITM negative. ``None``: only the own pair (and ``image_ids``).
            alpha: distillation weight of the ITC and MLM soft targets, in ``[0, 1]``.
            itm_hardness: in ``[0, 1]``: how much the ITM negatives follow the ITC similarities
                rather than a uniform draw.
            generator: RNG of the ITM negatives and the MLM masking, in the same state on every
                rank under data parallelism (the draws are made for the global batch).
        """
        check_ratio("alpha", alpha, allow_one=True)
        check_ratio("itm_hardness", itm_hardness, allow_one=True)
        on = self.on
        rank, world = world_info()
        b = check_pair_batch(images, input_ids, text_valid, image_ids, generator, itm=on("itm"), world=world)
        st = self.student
        step = StepLosses()
        valid_all = None
        if on("itm") or on("mlm"):
            input_ids, text_valid = pad_to_common_length([input_ids, text_valid], [self._pad_id, False])
            valid_all = all_gather_no_grad(text_valid)
        rows = (rank * b, (rank + 1) * b)

        # ---------------- momentum model on the clean pair (no grad): only what a loss reads
        momentum_itc = on("itc") and self.itc_momentum_keys
        mlm_soft = on("mlm") and self.mlm_distill and alpha > 0
        t_img = t_txt = None
        with torch.no_grad():
            if momentum_itc or mlm_soft:
                t_img = self._teacher("vision")(images).last_hidden
            if momentum_itc:
                t_txt = self._teacher("text")(input_ids, text_valid).last_hidden

        # ---------------- student unimodal encoders
        img = st.vision(images).last_hidden  # [B, 1+N, D]: ITC, ITM and the MLM fusion read it
        txt = st.text(input_ids, text_valid).last_hidden if (on("itc") or on("itm")) else None

        img_feat = txt_feat = None
        if on("itc"):
            img_feat = st.vision_proj(self.pool_image(img))
            txt_feat = st.text_proj(self.pool_text(txt, text_valid))
            if momentum_itc:
                with torch.no_grad():
                    img_feat_m = self._teacher("vision_proj")(self.pool_image(t_img))
                    txt_feat_m = self._teacher("text_proj")(self.pool_text(t_txt, text_valid))
                out = self.itc(
                    img_feat,
                    txt_feat,
                    image_feat_m=img_feat_m,
                    text_feat_m=txt_feat_m,
                    image_ids=image_ids,
                    positives=positives,
                    alpha=float(alpha) if self.itc_distill else 0.0,
                )
            else:
                out = self.itc(img_feat, txt_feat, image_ids=image_ids, positives=positives)
            step.add("itc", out)

        if on("itm"):
            sim_i2t = None  # without ITC: uniform negatives
            if img_feat is not None:
                sim_i2t = itc_similarity(
                    all_gather_no_grad(img_feat), all_gather_no_grad(txt_feat), self.itc.temp
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

        if on("mlm"):
            # drawn for the global batch (the same on every rank); this rank keeps its rows
            tm_all = self.text_masker(all_gather_no_grad(input_ids), valid_all, generator=generator)
            tm = type(tm_all)(*(t[rows[0] : rows[1]] for t in tm_all))
            t_masked = st.text(tm.input_ids, text_valid).last_hidden
            fused = st.fusion(img, None, t_masked, text_valid)
            soft = None
            if mlm_soft:
                with torch.no_grad():
                    t_txt_masked = self._teacher("text")(tm.input_ids, text_valid).last_hidden
                    t_fused = self._teacher("fusion")(t_img, None, t_txt_masked, text_valid)
                    soft = self._teacher("mlm_head")(t_fused.text[tm.labels != -100]).float()
            out = masked_token_loss(
                fused.text,
                tm.labels,
                st.mlm_head,
                soft_targets=soft,
                soft_targets_are_logits=True,
                alpha=float(alpha) if soft is not None else 0.0,
            )
            step.add(
                "mlm", out._replace(loss=rescale_to_global_mean(out.loss, tm.mask.sum(), tm_all.mask.sum()))
            )
            step.stats["mlm/masked_per_caption"] = tm.mask.float().sum(1).mean()

        total = step.total(LOSS_NAMES, lambda name: self.weights[name])
        return ALBEFOutput(total, step.losses, step.stats)
