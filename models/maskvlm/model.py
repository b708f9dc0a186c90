"""The MaskVLM pretraining objective over injected parts.

One step (:meth:`MaskVLM.forward`) on a batch of image-caption pairs computes:

1. **ITC** on the clean pair: in-batch symmetric InfoNCE of the projected CLS states (no momentum
   encoder, no queue; keys gathered with gradient under DDP).
2. **ITM** on the clean pair: one hard negative text per image and one hard negative image per
   text drawn from the ITC similarities; 2-way head on the fused CLS.
3. Two masked views from :class:`maskmm.masking.JointMasker` in ``"separate"`` mode:

   - **MIM**, (masked image, clean text): pixel blocks of the *input image* are hidden and the ViT
     encodes the whole corrupted image (no patch is dropped); a decoder of cross-attention blocks
     attending to the clean caption's text states predicts the pixels of every patch; L1 on the
     hidden pixels only.
   - **MLM**, (clean image, masked text): the masked caption is encoded and fused with the clean
     image states; masked tokens are predicted from the fused text states.

All losses are unweighted by default and each one can be switched off in
:class:`~maskmm.models.maskvlm.config.MaskVLMConfig`. Our choices are listed in that module.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from maskmm.losses import (
    ImageTextContrastive,
    masked_token_loss,
    pixel_reconstruction_loss,
)
from maskmm.masking import JointMasker
from maskmm.nn import CrossAttentionFusion, MergedFusion
from maskmm.targets import pixel_targets, unpatchify

from .._common import StepLosses, check_pair_batch, check_required_parts, itc_similarity, itm_step
from .config import LOSS_NAMES, MaskVLMConfig

__all__ = ["MaskVLM", "MaskVLMOutput"]


class MaskVLMOutput(NamedTuple):
    """Result of one :meth:`MaskVLM.forward`.

    Attributes:
        loss: fp32 scalar, the weighted sum of the enabled losses.
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
        masker: :class:`~maskmm.masking.JointMasker` in ``"separate"`` mode whose image masker
            hides pixel blocks (e.g. ``PixelBlockMasker(0.6, block_size=32)``).
        config: which losses run, their weights and the pixel-loss options.
        fusion: fusion encoder (merged or cross); needed by ITM and MLM.
        vision_proj, text_proj: ITC projection heads; itc_loss: ``ImageTextContrastive``.
        itm_head: 2-way matching head.
        mlm_head: masked-token head.
        pixel_decoder: ``PredictionDecoder(Dv, p*p*C, cross_attend=True, context_dim=Dt)``.
    """

    def __init__(
        self,
        *,
        vision: nn.Module,
        text: nn.Module,
        masker: JointMasker,
        config: MaskVLMConfig,
        fusion: MergedFusion | CrossAttentionFusion | None = None,
        vision_proj: nn.Module | None = None,
        text_proj: nn.Module | None = None,
        itc_loss: ImageTextContrastive | None = None,
        itm_head: nn.Module | None = None,
        mlm_head: nn.Module | None = None,
        pixel_decoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, MaskVLMConfig):
            raise TypeError(f"config must be a MaskVLMConfig, got {type(config).__name__}")
        if not isinstance(masker, JointMasker) or masker.mode != "separate":
            raise ValueError(f"masker must be a JointMasker with mode='separate', got {masker!r}")
        patch = vision.config.patch_size
        if masker.image_masker.patch_size != patch:
            raise ValueError(
                f"masker.image_masker.patch_size ({masker.image_masker.patch_size}) must equal the ViT "
                f"patch size ({patch})"
            )
        self.config = config.validate()
        if getattr(vision, "mask_token", None) is not None:  # pixels are hidden, patches never replaced
            vision.mask_token.requires_grad_(False)
        self.vision = vision
        self.text = text
        self.masker = masker
        self.fusion = fusion
        self.vision_proj = vision_proj
        self.text_proj = text_proj
        self.itc_loss = itc_loss
        self.itm_head = itm_head
        self.mlm_head = mlm_head
        self.pixel_decoder = pixel_decoder
        check_required_parts(self, _REQUIRED, self.on)
        if pixel_decoder is not None:
            want = patch * patch * vision.config.in_chans
            if getattr(pixel_decoder, "out_dim", want) != want:
                raise ValueError(f"pixel_decoder.out_dim must be patch*patch*channels = {want}")

    def on(self, name: str) -> bool:
        """Whether loss ``name`` runs."""
        return name in self.config.losses

    # ------------------------------------------------------------------ encoders (also for eval)

    def encode_image(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Image states ``[B, 1 + N, Dv]`` and ITC features ``[B, E]`` (``None`` without ITC heads)."""
        states = self.vision(images).last_hidden
        return states, (self.vision_proj(states[:, 0]) if self.vision_proj is not None else None)

    def encode_text(self, input_ids: Tensor, valid: Tensor) -> tuple[Tensor, Tensor | None]:
        """Text states ``[B, L, Dt]`` and ITC features ``[B, E]`` (``None`` without ITC heads)."""
        states = self.text(input_ids, valid).last_hidden
        return states, (self.text_proj(states[:, 0]) if self.text_proj is not None else None)

    def itm_logits(self, image_states: Tensor, text_states: Tensor, text_valid: Tensor) -> Tensor:
        """``[B, 2]`` matching logits (index 1 = match) of paired rows."""
        if self.fusion is None or self.itm_head is None:
            raise ValueError("this model was built without a fusion encoder or an ITM head")
        return self.itm_head(self.fusion(image_states, None, text_states, text_valid).text[:, 0])

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        images: Tensor,
        input_ids: Tensor,
        text_valid: Tensor,
        image_ids: Tensor | None = None,
        *,
        itm_hardness: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> MaskVLMOutput:
        """One pretraining step's losses.

        Args:
            images: float ``[B, C, H, W]`` (``H``, ``W`` multiples of the patch size).
            input_ids: long ``[B, L]`` token ids (CLS first).
            text_valid: bool ``[B, L]``, ``True`` = real token.
            image_ids: long ``[B]``: pairs sharing an id are ITC positives and never ITM negatives.
            itm_hardness: in ``[0, 1]``, how much the ITM negatives follow the ITC similarities
                rather than a uniform draw (:func:`maskmm.losses.sample_hard_negatives`); from
                scratch, start at 0 and ramp up (see ``models/mamo`` ``itm.*``).
            generator: RNG of the masks and the hard-negative draws.
        """
        check_pair_batch(images, input_ids, text_valid, image_ids, generator, itm=self.on("itm"))
        step = StepLosses()
        need_img = self.on("itc") or self.on("itm") or self.on("mlm")
        need_txt = self.on("itc") or self.on("itm") or self.on("mim")
        img = self.vision(images).last_hidden if need_img else None  # clean image [B, 1+N, Dv]
        txt = self.text(input_ids, text_valid).last_hidden if need_txt else None  # clean text [B, L, Dt]

        sim_i2t = None  # without ITC the hard negatives are drawn uniformly
        if self.on("itc"):
            img_feat = self.vision_proj(img[:, 0])
            txt_feat = self.text_proj(txt[:, 0])
            step.add("itc", self.itc_loss(img_feat, txt_feat, image_ids=image_ids))
            sim_i2t = itc_similarity(img_feat, txt_feat, self.itc_loss.temp)
        if self.on("itm"):
            out = itm_step(
                img,
                txt,
                text_valid,
                sim_i2t,
                fusion=self.fusion,
                head=self.itm_head,
                image_ids=image_ids,
                generator=generator,
                hardness=itm_hardness,
            )
            step.add("itm", out)

        image_mask = pixel_mask = text_mask = recon = None
        if self.on("mim") or self.on("mlm"):
            image_view, text_view = self.masker(images, input_ids, text_valid, generator=generator).views
            image_mask, pixel_mask = image_view.image.mask, image_view.image.pixel_mask
            if pixel_mask is None:
                raise ValueError(
                    "masker.image_masker must hide pixels (return pixel_mask), e.g. PixelBlockMasker"
                )
            text_mask = text_view.text.mask
            step.stats["mask/pixel_ratio"] = pixel_mask.float().mean()
            step.stats["mask/text_masked"] = text_mask.float().sum(1).mean()

            if self.on("mim"):
                # The ViT sees the whole corrupted image: no patch is dropped or replaced.
                states = self.vision(image_view.image.images).last_hidden[:, 1:]
                pred = self.pixel_decoder(states, context=txt, context_valid=text_valid)
                p = self.vision.config.patch_size
                grid = (images.shape[-2] // p, images.shape[-1] // p)
                recon_full = unpatchify(pred, p, grid)
                if self.config.normalize_target:
                    target = unpatchify(pixel_targets(images, p, normalize=True), p, grid)
                else:
                    target = images.detach()
                out = pixel_reconstruction_loss(
                    recon_full, target, pixel_mask, kind=self.config.pixel_loss, layout="pixel"
                )
                step.add("mim", out)
                recon = recon_full.detach()

            if self.on("mlm"):
                tm = text_view.text
                masked_txt = self.text(tm.input_ids, text_valid).last_hidden
                fused = self.fusion(img, None, masked_txt, text_valid)
                out = masked_token_loss(fused.text, tm.labels, self.mlm_head)
                step.add("mlm", out)

        total = step.total(LOSS_NAMES, self.config.weight)
        return MaskVLMOutput(total, step.losses, step.stats, image_mask, pixel_mask, text_mask, recon)
