"""The CLIP pretraining objective: a dual encoder trained by symmetric InfoNCE.

One step (:meth:`CLIP.forward`): image features ``f_i = P_v(pool(ViT(image)))`` and text features
``f_t = P_t(pool(Text(caption)))``, both L2-normalised; logits ``s = exp(logit_scale) * f_i f_t^T``
over the **global** batch (the online features of every rank, gathered with gradient); loss
``(CE(s, targets) + CE(s^T, targets)) / 2`` where each pair's own caption is the target (with
``image_ids``, every pair of the same image is a positive, the targets normalised per row). This is
:func:`maskmm.losses.image_text_contrastive_loss` with online keys.

The temperature is ``exp(-logit_scale)``: CLIP learns the log of the logit scale (initialised to
``log(1 / 0.07)``) and clamps it after every optimiser step to ``[0, log(1 / min_temperature)]``
(CLIP: the logit scale never exceeds 100). With ``learnable_temperature=False`` it is a fixed buffer.

**Data parallelism**: each rank's loss is the mean over its rows against the gathered keys; DDP's
gradient averaging then gives the gradient of the single-process loss on the concatenated batch
(the gather passes gradients back to the rank that owns each key). Nothing is drawn at random.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from maskmm.losses import image_text_contrastive_loss

from .._common import PartsContainer, StepLosses, batch_pair_positives, check_pair_batch

__all__ = ["CLIP", "CLIPStudent"]


class CLIPStudent(PartsContainer):
    """The trained parts: ``vision`` (ViT), ``text`` (text encoder), ``vision_proj`` / ``text_proj``
    (:class:`maskmm.nn.ProjectionHead`, L2-normalised)."""

    def __init__(self, *, vision: nn.Module, text: nn.Module, vision_proj: nn.Module, text_proj: nn.Module):
        super().__init__(vision=vision, text=text, vision_proj=vision_proj, text_proj=text_proj)


class CLIP(nn.Module):
    """CLIP's objective over injected parts (see the module docstring).

    Args:
        student: the encoders and projections.
        temperature: initial temperature (CLIP: 0.07).
        learnable_temperature: learn ``logit_scale = log(1 / temperature)`` (a parameter) or keep it
            fixed (a buffer).
        min_temperature: the logit scale is clamped to ``[1, 1 / min_temperature]`` after each
            optimiser step (CLIP: 0.01, i.e. at most 100).
        pool: ITC input of each encoder: its CLS state, or the mean of the other valid states.
    """

    has_itc = True
    has_itm = False
    find_unused_parameters = False

    def __init__(
        self,
        student: CLIPStudent,
        *,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        min_temperature: float = 0.01,
        pool: Literal["cls", "mean"] = "cls",
        false_negatives: Literal["positive", "exclude"] = "positive",
    ) -> None:
        super().__init__()
        if not isinstance(student, CLIPStudent):
            raise TypeError(f"student must be a CLIPStudent, got {type(student).__name__}")
        if not (0.0 < min_temperature <= temperature <= 1.0):
            raise ValueError(
                f"need 0 < min_temperature <= temperature <= 1, got {min_temperature} and {temperature}"
            )
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if false_negatives not in ("positive", "exclude"):
            raise ValueError(f"false_negatives must be 'positive' or 'exclude', got {false_negatives!r}")
        self.student = student
        self.pool, self.false_negatives = pool, false_negatives
        self.max_logit_scale = math.log(1.0 / min_temperature)
        scale = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)

    # ------------------------------------------------------------------ encoders (also for eval)

    def pool_image(self, states: Tensor) -> Tensor:
        return states[:, 0] if self.pool == "cls" else states[:, 1:].mean(1)

    def pool_text(self, states: Tensor, valid: Tensor) -> Tensor:
        if self.pool == "cls":
            return states[:, 0]
        w = valid[:, 1:, None].to(states.dtype)
        return (states[:, 1:] * w).sum(1) / w.sum(1).clamp(min=1.0)

    def encode_image(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Image states ``[B, 1 + P, D]`` and unit ITC features ``[B, E]``."""
        states = self.student.vision(images).last_hidden
        return states, self.student.vision_proj(self.pool_image(states))

    def encode_text(self, input_ids: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Text states ``[B, L, D]`` and unit ITC features ``[B, E]``."""
        states = self.student.text(input_ids, valid).last_hidden
        return states, self.student.text_proj(self.pool_text(states, valid))

    def itm_logits(self, image_states: Tensor, text_states: Tensor, text_valid: Tensor) -> Tensor:
        raise ValueError("CLIP has no image-text matching head (has_itm is False)")

    @property
    def temperature(self) -> Tensor:
        """The current temperature ``exp(-logit_scale)`` (a 0-dim tensor, attached when learnable)."""
        return torch.exp(-self.logit_scale.float())

    # ------------------------------------------------------------------ recipe protocol

    def forward(
        self, batch: Mapping[str, Tensor], *, step: int = 0, generator: torch.Generator | None = None
    ):
        """The loss of one step on ``batch`` (``images``, ``input_ids``, ``text_valid``, ``image_ids``,
        and the ``image_facts`` / ``caption_facts`` of :func:`batch_pair_positives` when present);
        ``step`` and ``generator`` are unused (nothing is scheduled or drawn)."""
        from maskmm.training.recipe import StepOutput

        images, ids, valid = batch["images"], batch["input_ids"], batch["text_valid"]
        image_ids = batch.get("image_ids")
        check_pair_batch(images, ids, valid, image_ids, generator, itm=False)
        _, img_feat = self.encode_image(images)
        _, txt_feat = self.encode_text(ids, valid)
        out = image_text_contrastive_loss(
            img_feat,
            txt_feat,
            self.temperature,
            image_ids=image_ids,
            positives=batch_pair_positives(batch),
            false_negatives=self.false_negatives,
        )
        step_losses = StepLosses()
        step_losses.add("itc", out)
        stats = step_losses.stats
        stats["itc/logit_scale"] = self.logit_scale.detach().float()
        return StepOutput(step_losses.total(("itc",), lambda name: 1.0), stats)

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        """Clamp the logit scale to ``[0, log(1 / min_temperature)]`` (CLIP)."""
        self.logit_scale.clamp_(0.0, self.max_logit_scale)
