"""Image-text contrastive term (ALBEF / CLIP): pooling, projections, online or momentum keys."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from maskmm._checks import check_bool, check_choice
from maskmm.distributed import all_gather_no_grad
from maskmm.losses.contrastive import ImageTextContrastive
from maskmm.losses.types import LossOutput

from .base import LossTerm
from .matching import itc_similarity

__all__ = ["ContrastiveTerm", "pool_states"]

_POOLS = ("cls", "mean")


def pool_states(states: Tensor, valid: Tensor | None = None, mode: Literal["cls", "mean"] = "cls") -> Tensor:
    """``[B, D]`` summary of ``states [B, L, D]`` whose first token is a CLS token.

    ``"cls"``: the first state. ``"mean"``: the mean of the other states, over the ones ``valid
    bool [B, L]`` marks (``None``: all of them; a row with none gives 0).
    """
    if mode == "cls":
        return states[:, 0]
    if valid is None:
        return states[:, 1:].mean(1)
    w = valid[:, 1:, None].to(states.dtype)
    return (states[:, 1:] * w).sum(1) / w.sum(1).clamp(min=1.0)


class ContrastiveTerm(LossTerm):
    """ITC on pooled, projected image and text states (:class:`~maskmm.losses.ImageTextContrastive`).

    Args:
        contrastive: the loss module (temperature, queue; keys gathered over ranks).
        image_proj, text_proj: the trained projections ``[B, D] -> [B, E]``.
        pool: ``"cls"`` (ALBEF) or ``"mean"`` (:func:`pool_states`), for student and teacher states.
        momentum: ``(image_proj_m, text_proj_m)``, the momentum (EMA) copies of the projections:
            the keys are then the momentum features of the teacher states (ALBEF; ``forward`` reads
            ``teacher_image`` and ``teacher_text``). ``None``: the online features are the keys
            (gathered with gradient, CLIP). Held by reference (the teacher owns them).
        distill: momentum distillation (soft targets weighted by ``alpha``); needs ``momentum``.

    ``forward(image_states [B, Li, Dv], text_states [B, Lt, Dt], text_valid bool [B, Lt], *,
    teacher_image=None, teacher_text=None, image_ids=None, positives=None, alpha=0.0, features=None)``:
    the contrastive loss of the pooled projections (``features``: :meth:`features` of the same states when
    the caller has it already; ``positives``: ``bool [W * B, W * B]`` captions true of other images of the
    global batch, :func:`maskmm.losses.batch_positives`). Its stats are the contrastive module's
    (``i2t_acc``, ``t2i_acc``, ``loss_i2t``, ``loss_t2i``, ``temperature``). In training mode the module's
    queue takes the keys. Under data parallelism each rank passes its rows (one batch size on every rank).
    """

    def __init__(
        self,
        contrastive: ImageTextContrastive,
        image_proj: nn.Module,
        text_proj: nn.Module,
        *,
        pool: Literal["cls", "mean"] = "cls",
        momentum: tuple[nn.Module, nn.Module] | None = None,
        distill: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(contrastive, ImageTextContrastive):
            raise TypeError(f"contrastive must be an ImageTextContrastive, got {type(contrastive).__name__}")
        for name, part in (("image_proj", image_proj), ("text_proj", text_proj)):
            if not callable(part):
                raise TypeError(f"{name} must be a module [B, D] -> [B, E], got {type(part).__name__}")
        if momentum is not None and (len(momentum) != 2 or not all(callable(p) for p in momentum)):
            raise TypeError("momentum must be a pair (image_proj_m, text_proj_m) of modules, or None")
        if check_bool("distill", distill) and momentum is None:
            raise ValueError("distill=True needs momentum projections (soft targets come from momentum keys)")
        self.contrastive = contrastive
        self.image_proj = image_proj
        self.text_proj = text_proj
        self.pool = check_choice("pool", pool, _POOLS)
        self.momentum = tuple(momentum) if momentum is not None else None  # not submodules: the teacher's
        self.distill = distill

    def teacher_reads(self, alpha: float = 0.0) -> frozenset[str]:
        return frozenset({"teacher_image", "teacher_text"}) if self.momentum is not None else frozenset()

    def features(
        self, image_states: Tensor, text_states: Tensor, text_valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The online features ``([B, E], [B, E])``: pooled states through the projections."""
        return (
            self.image_proj(pool_states(image_states, None, self.pool)),
            self.text_proj(pool_states(text_states, text_valid, self.pool)),
        )

    @torch.no_grad()
    def similarity(self, image_feat: Tensor, text_feat: Tensor) -> Tensor:
        """fp32 ``[W * B, W * B]`` image-to-text similarities of the global batch (features gathered
        over the ``W`` ranks, detached) at the module's temperature: ALBEF's hard-negative
        distribution for :class:`~maskmm.losses.terms.MatchingTerm`."""
        image_all, text_all = all_gather_no_grad(image_feat), all_gather_no_grad(text_feat)
        return itc_similarity(image_all, text_all, self.contrastive.temp)

    def forward(
        self,
        image_states: Tensor,
        text_states: Tensor,
        text_valid: Tensor,
        *,
        teacher_image: Tensor | None = None,
        teacher_text: Tensor | None = None,
        image_ids: Tensor | None = None,
        positives: Tensor | None = None,
        alpha: float = 0.0,
        features: tuple[Tensor, Tensor] | None = None,
    ) -> LossOutput:
        image_feat, text_feat = (
            features if features is not None else self.features(image_states, text_states, text_valid)
        )
        if self.momentum is None:
            return self.contrastive(image_feat, text_feat, image_ids=image_ids, positives=positives)
        if teacher_image is None or teacher_text is None:
            raise ValueError("momentum keys need the teacher states teacher_image and teacher_text")
        with torch.no_grad():
            image_feat_m = self.momentum[0](pool_states(teacher_image, None, self.pool))
            text_feat_m = self.momentum[1](pool_states(teacher_text, text_valid, self.pool))
        return self.contrastive(
            image_feat,
            text_feat,
            image_feat_m=image_feat_m,
            text_feat_m=text_feat_m,
            image_ids=image_ids,
            positives=positives,
            alpha=float(alpha) if self.distill else 0.0,
        )

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}, momentum={self.momentum is not None}, distill={self.distill}"
