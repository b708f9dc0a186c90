"""The MaskVLM pretraining objective over injected parts.

One step (:meth:`MaskVLM.compute`) on a batch of image-caption pairs computes:

1. **ITC** on the clean pair: symmetric InfoNCE of the projected pooled states against the online
   features of the (global) batch (no momentum encoder; an optional queue of online features).
2. **ITM** on the clean pair: one hard negative text per image and one hard negative image per
   text drawn from the ITC similarities (mixed with uniform draws by ``itm_hardness``); 2-way head
   on the fused CLS.
3. Two masked views, each masking one modality:

   - **MIM**, (masked image, clean text): pixel blocks of the *input image* are hidden and the ViT
     encodes the whole corrupted image (no patch is dropped); a decoder of cross-attention blocks
     attending to the clean caption's text states predicts the pixels of every patch; L1 on the
     hidden pixels only.
   - **MLM**, (clean image, masked text): the masked caption is encoded and fused with the clean
     image states; masked tokens are predicted from the fused text states.

All losses are unweighted by default and each one can be switched off or start later
(:class:`~maskmm.models.maskvlm.config.LossesConfig`). :meth:`MaskVLM.forward` is the recipe
protocol of :class:`maskmm.training.Objective`: it reads the step's ITM hardness and active losses
from the :class:`MaskVLMSchedule` and calls :meth:`MaskVLM.compute`.

**Data parallelism** (more than one rank, the same local batch size ``b`` and the same
``generator`` state on every rank): the step equals one process on the concatenated global batch.
Captions are padded to the longest length over ranks; ITC gathers its keys with gradient; ITM
gathers the image and text states with gradient and draws the negatives of the global batch; the
pixel blocks and the text masks are drawn for the global batch and each rank keeps its rows; the
ITM, MLM and MIM means are rescaled to this rank's share of the global mean.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
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
from maskmm.losses import ImageTextContrastive, masked_token_loss, pixel_reconstruction_loss
from maskmm.masking import PixelBlockMasker, TokenMasker, apply_pixel_mask, pixel_block_masking
from maskmm.nn import CrossAttentionFusion, MergedFusion
from maskmm.targets import pixel_targets, unpatchify

from .._common import (
    StepLosses,
    batch_pair_positives,
    check_pair_batch,
    check_required_parts,
    itc_similarity,
    itm_step,
)
from .config import LOSS_NAMES

__all__ = ["MaskVLM", "MaskVLMOutput", "MaskVLMSchedule", "MaskVLMSettings"]


@dataclass(frozen=True)
class MaskVLMSettings:
    """What :class:`MaskVLM` computes at every step (built from a config by the builder).

    Attributes:
        losses: names of the enabled losses, a subset of :data:`LOSS_NAMES`.
        weights: loss name -> weight (missing names weigh 1).
        pixel_loss: ``"l1"`` (paper) or ``"mse"`` over the hidden pixels.
        normalize_target: MAE per-patch normalisation of the pixel target.
        itc_pool: ITC feature from the CLS state or the mean of the other (valid) states.
    """

    losses: tuple[str, ...] = LOSS_NAMES
    weights: tuple[tuple[str, float], ...] = ()
    pixel_loss: Literal["l1", "mse"] = "l1"
    normalize_target: bool = False
    itc_pool: Literal["cls", "mean"] = "cls"

    def __post_init__(self) -> None:
        unknown = set(self.losses) - set(LOSS_NAMES)
        if unknown or not self.losses:
            raise ValueError(f"losses must be a non-empty subset of {LOSS_NAMES}, got {self.losses}")
        if self.pixel_loss not in ("l1", "mse"):
            raise ValueError(f"pixel_loss must be 'l1' or 'mse', got {self.pixel_loss!r}")
        if self.itc_pool not in ("cls", "mean"):
            raise ValueError(f"itc_pool must be 'cls' or 'mean', got {self.itc_pool!r}")

    def weight(self, name: str) -> float:
        return dict(self.weights).get(name, 1.0)

    def on(self, name: str) -> bool:
        return name in self.losses


class MaskVLMSchedule(NamedTuple):
    """What changes with the training step: the ITM hardness ``itm_hardness(step)`` and the enabled
    losses computed at ``step`` (``active_losses``; ``None``: all of them from step 0).
    ``find_unused_parameters``: some loss joins later (DDP must know)."""

    itm_hardness: Callable[[int], float] = lambda step: 1.0
    active_losses: Callable[[int], tuple[str, ...]] | None = None
    find_unused_parameters: bool = False


class MaskVLMOutput(NamedTuple):
    """Result of one step.

    Attributes:
        loss: fp32 scalar, the weighted sum of the computed losses.
        losses: loss name -> fp32 scalar (unweighted, attached to the graph).
        stats: name -> detached fp32 scalar (accuracies, counts, temperature); no host sync.
        image_mask: bool ``[B, N]`` patches fully hidden in the masked-image view (``None`` when
            neither MIM nor MLM runs).
        pixel_mask: bool ``[B, H, W]`` hidden pixels of the masked-image view (``None`` likewise).
        text_mask: bool ``[B, L]`` tokens to predict in the masked-text view (``None`` likewise).
        reconstruction: ``[B, C, H, W]`` decoder prediction, detached (``None`` without MIM).
    """

    loss: Tensor
    losses: dict[str, Tensor]
    stats: dict[str, Tensor]
    image_mask: Tensor | None = None
    pixel_mask: Tensor | None = None
    text_mask: Tensor | None = None
    reconstruction: Tensor | None = None


_REQUIRED = {
    "itc": ("vision_proj", "text_proj", "itc_loss"),
    "itm": ("fusion", "itm_head"),
    "mlm": ("fusion", "mlm_head"),
    "mim": ("pixel_decoder",),
}


class MaskVLM(nn.Module):
    """MaskVLM objective (see the module docstring).

    Args:
        vision: ViT (``maskmm.nn.VisionTransformer`` interface).
        text: text encoder (``maskmm.nn.TextEncoder`` interface).
        image_masker: :class:`~maskmm.masking.PixelBlockMasker` of the masked-image view (its patch
            size must be the ViT's), e.g. ``PixelBlockMasker(0.6, block_size=32)``.
        text_masker: :class:`~maskmm.masking.TokenMasker` of the masked-text view.
        settings: which losses run, their weights and the pixel-loss options.
        fusion: fusion encoder (merged or cross); needed by ITM and MLM.
        vision_proj, text_proj: ITC projection heads; itc_loss: ``ImageTextContrastive``.
        itm_head: 2-way matching head.
        mlm_head: masked-token head.
        pixel_decoder: ``PredictionDecoder(Dv, p*p*C, cross_attend=True, context_dim=Dt)``.
        schedule: the step-dependent settings :meth:`forward` uses (:class:`MaskVLMSchedule`).
    """

    def __init__(
        self,
        *,
        vision: nn.Module,
        text: nn.Module,
        image_masker: PixelBlockMasker,
        text_masker: TokenMasker,
        settings: MaskVLMSettings | None = None,
        fusion: MergedFusion | CrossAttentionFusion | None = None,
        vision_proj: nn.Module | None = None,
        text_proj: nn.Module | None = None,
        itc_loss: ImageTextContrastive | None = None,
        itm_head: nn.Module | None = None,
        mlm_head: nn.Module | None = None,
        pixel_decoder: nn.Module | None = None,
        schedule: MaskVLMSchedule | None = None,
    ) -> None:
        super().__init__()
        settings = settings if settings is not None else MaskVLMSettings()
        if not isinstance(settings, MaskVLMSettings):
            raise TypeError(f"settings must be a MaskVLMSettings, got {type(settings).__name__}")
        if not isinstance(image_masker, PixelBlockMasker):
            raise TypeError(
                f"image_masker must be a PixelBlockMasker (MaskVLM hides pixel blocks), got "
                f"{type(image_masker).__name__}"
            )
        if not isinstance(text_masker, TokenMasker):
            raise TypeError(f"text_masker must be a TokenMasker, got {type(text_masker).__name__}")
        patch = vision.config.patch_size
        if image_masker.patch_size != patch:
            raise ValueError(
                f"image_masker.patch_size ({image_masker.patch_size}) must equal the ViT patch size ({patch})"
            )
        self.settings = settings
        self.schedule = schedule if schedule is not None else MaskVLMSchedule()
        if getattr(vision, "mask_token", None) is not None:  # pixels are hidden, patches never replaced
            vision.mask_token.requires_grad_(False)
        self.vision = vision
        self.text = text
        self.image_masker = image_masker
        self.text_masker = text_masker
        self.fusion = fusion
        self.vision_proj = vision_proj
        self.text_proj = text_proj
        self.itc_loss = itc_loss
        self.itm_head = itm_head
        self.mlm_head = mlm_head
        self.pixel_decoder = pixel_decoder
        check_required_parts(self, _REQUIRED, settings.on)
        if pixel_decoder is not None:
            want = patch * patch * vision.config.in_chans
            if getattr(pixel_decoder, "out_dim", want) != want:
                raise ValueError(f"pixel_decoder.out_dim must be patch*patch*channels = {want}")
        self._pad_id = int(getattr(getattr(text, "config", None), "pad_token_id", 0))

    def on(self, name: str) -> bool:
        """Whether loss ``name`` is enabled."""
        return self.settings.on(name)

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
        """Image states ``[B, 1 + N, Dv]`` and ITC features ``[B, E]`` (``None`` without ITC heads)."""
        states = self.vision(images).last_hidden
        proj = self.vision_proj
        return states, (proj(self.pool_image(states)) if proj is not None else None)

    def encode_text(self, input_ids: Tensor, valid: Tensor) -> tuple[Tensor, Tensor | None]:
        """Text states ``[B, L, Dt]`` and ITC features ``[B, E]`` (``None`` without ITC heads)."""
        states = self.text(input_ids, valid).last_hidden
        proj = self.text_proj
        return states, (proj(self.pool_text(states, valid)) if proj is not None else None)

    def itm_logits(self, image_states: Tensor, text_states: Tensor, text_valid: Tensor) -> Tensor:
        """``[B, 2]`` matching logits (index 1 = match) of paired rows."""
        if self.fusion is None or self.itm_head is None:
            raise ValueError("this model was built without a fusion encoder or an ITM head")
        return self.itm_head(self.fusion(image_states, None, text_states, text_valid).text[:, 0])

    # ------------------------------------------------------------------ recipe protocol

    has_itc = property(lambda self: self.vision_proj is not None and self.text_proj is not None)
    has_itm = property(lambda self: self.itm_head is not None)
    find_unused_parameters = property(lambda self: self.schedule.find_unused_parameters)

    def forward(
        self, batch: Mapping[str, Tensor], *, step: int = 0, generator: torch.Generator | None = None
    ) -> MaskVLMOutput:
        """The losses of the 0-based ``step`` on ``batch`` (``images``, ``input_ids``, ``text_valid``,
        ``image_ids``), with the ITM hardness and active losses the :class:`MaskVLMSchedule` gives for
        that step (:meth:`compute` takes them explicitly)."""
        sch = self.schedule
        active = sch.active_losses(step) if sch.active_losses is not None else self.settings.losses
        hardness = sch.itm_hardness(step)
        out = self.compute(
            batch["images"],
            batch["input_ids"],
            batch["text_valid"],
            batch.get("image_ids"),
            positives=batch_pair_positives(batch),
            itm_hardness=hardness,
            active_losses=active,
            generator=generator,
        )
        if "itm" in active:
            out.stats["itm/hardness"] = torch.tensor(hardness)  # a CPU scalar: no device work
        return out

    def after_optimizer_step(self, step: int) -> None:
        """Nothing to do: MaskVLM has no momentum model."""
        return None

    # ------------------------------------------------------------------ losses

    def compute(
        self,
        images: Tensor,
        input_ids: Tensor,
        text_valid: Tensor,
        image_ids: Tensor | None = None,
        *,
        positives: Tensor | None = None,
        itm_hardness: float = 1.0,
        active_losses: Collection[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> MaskVLMOutput:
        """One pretraining step's losses.

        Args:
            images: float ``[B, C, H, W]`` (``H``, ``W`` multiples of the patch size).
            input_ids: long ``[B, L]`` token ids (CLS first).
            text_valid: bool ``[B, L]``, ``True`` = real token.
            image_ids: long ``[B]``: pairs sharing an id are ITC positives and never ITM negatives.
            positives: ``bool [W * B, W * B]`` over the global batch, ``[i, j]`` = caption ``j`` is
                true of image ``i`` (:func:`maskmm.losses.batch_positives`): an ITC positive, never an
                ITM negative. ``None``: only the own pair (and ``image_ids``).
            itm_hardness: in ``[0, 1]``, how much the ITM negatives follow the ITC similarities
                rather than a uniform draw (:func:`maskmm.losses.sample_hard_negatives`).
            active_losses: the enabled losses to compute at this step (default: all of them).
            generator: RNG of the masks and the hard-negative draws (the same state on every rank
                under data parallelism: the draws are made for the global batch).
        """
        s = self.settings
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
        masked_view = on("mim") or on("mlm")
        valid_all = None
        if on("itm") or masked_view:  # draws for the global batch need a common caption length
            input_ids, text_valid = pad_to_common_length([input_ids, text_valid], [self._pad_id, False])
            valid_all = all_gather_no_grad(text_valid)

        step = StepLosses()
        need_img = on("itc") or on("itm") or on("mlm")
        need_txt = on("itc") or on("itm") or on("mim")
        img = self.vision(images).last_hidden if need_img else None  # clean image [B, 1+N, Dv]
        txt = self.text(input_ids, text_valid).last_hidden if need_txt else None  # clean text [B, L, Dt]

        sim_i2t = None  # without ITC the hard negatives are drawn uniformly
        img_feat = txt_feat = None
        if on("itc"):
            img_feat = self.vision_proj(self.pool_image(img))
            txt_feat = self.text_proj(self.pool_text(txt, text_valid))
            step.add("itc", self.itc_loss(img_feat, txt_feat, image_ids=image_ids, positives=positives))
        if on("itm"):
            if img_feat is not None:
                sim_i2t = itc_similarity(
                    all_gather_no_grad(img_feat), all_gather_no_grad(txt_feat), self.itc_loss.temp
                )
            out = itm_step(
                all_gather_with_grad(img),
                all_gather_with_grad(txt),
                valid_all,
                sim_i2t,
                fusion=self.fusion,
                head=self.itm_head,
                image_ids=None if image_ids is None else all_gather_no_grad(image_ids),
                positives=positives,
                generator=generator,
                hardness=itm_hardness,
                rows=rows,
            )
            n_local, n_total = out.stats.pop("num_scored"), out.stats.pop("num_scored_total")
            step.add("itm", out._replace(loss=rescale_to_global_mean(out.loss, n_local, n_total)))

        image_mask = pixel_mask = text_mask = recon = None
        if masked_view:
            # Both views' masks are drawn for the global batch, image first then text (the order of
            # maskmm.masking.JointMasker); this rank keeps its rows.
            im = self.image_masker
            pm_all = pixel_block_masking(
                b * world,
                tuple(images.shape[-2:]),
                im.ratio,
                block_size=im.block_size,
                patch_size=im.patch_size,
                device=images.device,
                generator=generator,
            )
            tm_all = self.text_masker(all_gather_no_grad(input_ids), valid_all, generator=generator)
            pixel_mask = pm_all.pixel_mask[rows[0] : rows[1]]
            image_mask = pm_all.patch_mask[rows[0] : rows[1]]
            tm = type(tm_all)(*(t[rows[0] : rows[1]] for t in tm_all))
            text_mask = tm.mask
            step.stats["mask/pixel_ratio"] = pixel_mask.float().mean()
            step.stats["mask/text_masked"] = text_mask.float().sum(1).mean()

            if on("mim"):
                # The ViT sees the whole corrupted image: no patch is dropped or replaced.
                corrupted = apply_pixel_mask(images, pixel_mask, im.fill)
                states = self.vision(corrupted).last_hidden[:, 1:]
                pred = self.pixel_decoder(states, context=txt, context_valid=text_valid)
                p = self.vision.config.patch_size
                grid = (images.shape[-2] // p, images.shape[-1] // p)
                recon_full = unpatchify(pred, p, grid)
                if s.normalize_target:
                    target = unpatchify(pixel_targets(images, p, normalize=True), p, grid)
                else:
                    target = images.detach()
                out = pixel_reconstruction_loss(
                    recon_full, target, pixel_mask, kind=s.pixel_loss, layout="pixel"
                )
                loss = rescale_to_global_mean(out.loss, pixel_mask.sum(), pm_all.pixel_mask.sum())
                step.add("mim", out._replace(loss=loss))
                recon = recon_full.detach()

            if on("mlm"):
                masked_txt = self.text(tm.input_ids, text_valid).last_hidden
                fused = self.fusion(img, None, masked_txt, text_valid)
                out = masked_token_loss(fused.text, tm.labels, self.mlm_head)
                loss = rescale_to_global_mean(out.loss, tm.mask.sum(), tm_all.mask.sum())
                step.add("mlm", out._replace(loss=loss))

        total = step.total(LOSS_NAMES, s.weight)
        return MaskVLMOutput(total, step.losses, step.stats, image_mask, pixel_mask, text_mask, recon)
