"""A FLIP / M3AE-style method assembled from maskmm parts, trained by maskmm's trainer (docs/new-method.md).

Half of the image patches are dropped before the image encoder; the kept ones carry an image-text
contrastive loss (ITC) and a light decoder reconstructs the pixels of the dropped ones. From the root of a
checkout: ``PYTHONPATH=. maskmm-train --recipe examples.flip_recipe:RECIPE --config examples/flip_tiny.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from maskmm.distributed import world_info
from maskmm.losses import ImageTextContrastive, batch_positives, pixel_reconstruction_loss
from maskmm.masking import PatchMasking, random_patch_masking
from maskmm.nn import PredictionDecoder, ProjectionHead
from maskmm.nn.encoders_config import EncodersConfig, build_encoders
from maskmm.targets import pixel_targets
from maskmm.training import Recipe, RunConfig, StepOutput, TokenizerIds


@dataclass
class FLIPSection:
    mask_ratio: float = 0.5  # fraction of patches dropped, in [0, 1)
    pixel_weight: float = 1.0  # weight of the reconstruction loss (ITC weighs 1)
    decoder_depth: int = 1  # transformer blocks of the pixel decoder (0 = an MLP)
    temperature: float = 0.07  # initial ITC temperature (learnt)


@dataclass
class FLIPConfig(RunConfig):
    model: EncodersConfig = field(default_factory=EncodersConfig)
    flip: FLIPSection = field(default_factory=FLIPSection)

    def check_recipe(self) -> None:
        if not 0.0 <= self.flip.mask_ratio < 1.0:
            raise ValueError(f"config field 'flip.mask_ratio' must lie in [0, 1), got {self.flip.mask_ratio}")
        if self.data.image_size != self.model.image_size:
            raise ValueError("config fields 'data.image_size' and 'model.image_size' must be equal")


class FLIP(nn.Module):
    has_itc, has_itm, find_unused_parameters = True, False, False

    def __init__(self, cfg: FLIPConfig, ids: TokenizerIds) -> None:
        super().__init__()
        m, f = cfg.model, cfg.flip
        vocab = max(m.vocab_size, ids.vocab_size)  # model.vocab_size = 0: the tokenizer's
        # ViT with a mask token (filled in at dropped patches for the decoder), text encoder, no fusion
        self.vision, self.text, _ = build_encoders(m, vocab, ids.pad_id, fusion=False)
        self.vision_proj = ProjectionHead(m.vision_dim, m.embed_dim)
        self.text_proj = ProjectionHead(m.text_dim, m.embed_dim)
        self.itc = ImageTextContrastive(m.embed_dim, temperature=f.temperature)
        out = m.patch_size**2 * 3  # one patch of RGB pixels
        self.decoder = PredictionDecoder(m.vision_dim, out, depth=f.decoder_depth, num_heads=m.vision_heads)
        self.patch, self.ratio, self.pixel_weight = m.patch_size, f.mask_ratio, f.pixel_weight

    def encode_image(self, images: Tensor) -> tuple[Tensor, Tensor]:
        states = self.vision(images).last_hidden  # [B, 1 + N, D]: the whole image at evaluation
        return states, self.vision_proj(states[:, 0])

    def encode_text(self, input_ids: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        states = self.text(input_ids, valid).last_hidden  # [B, L, D]
        return states, self.text_proj(states[:, 0])

    def itm_logits(self, image_states: Tensor, text_states: Tensor, text_valid: Tensor) -> Tensor:
        raise ValueError("FLIP has no image-text matching head")

    def after_optimizer_step(self, step: int) -> None:
        return None  # no EMA teacher

    def forward(self, batch: dict[str, Tensor], *, step: int, generator: torch.Generator) -> StepOutput:
        images = batch["images"]  # [B, 3, H, W]
        b, n = images.shape[0], (images.shape[-2] // self.patch) * (images.shape[-1] // self.patch)
        # drawn for the global batch (the same generator on every rank); this rank keeps its rows
        rank, world = world_info()
        pm = random_patch_masking(b * world, n, self.ratio, device=images.device, generator=generator)
        pm = PatchMasking(*(t[rank * b : (rank + 1) * b] for t in pm))  # mask [B, N]: True = dropped
        kept = self.vision(images, masking=pm, mask_mode="drop").last_hidden  # [B, 1 + N_keep, D]
        _, txt = self.encode_text(batch["input_ids"], batch["text_valid"])
        facts = [batch[k] for k in ("image_facts", "caption_facts") if k in batch]  # see docs/itm.md
        pos = batch_positives(*facts) if facts else None  # captions true of other images: positives
        itc = self.itc(self.vision_proj(kept[:, 0]), txt, image_ids=batch.get("image_ids"), positives=pos)
        full = self.vision.insert_mask_tokens(kept, pm)  # [B, 1 + N, D], mask token where dropped
        pred = self.decoder(full[:, 1:])  # [B, N, p*p*3]
        pix = pixel_reconstruction_loss(pred.float(), pixel_targets(images, self.patch), pm.mask, kind="mse")
        stats = {"loss_itc": itc.loss.detach(), "loss_pixel": pix.loss.detach()}
        stats.update({f"itc/{k}": v for k, v in itc.stats.items()})
        return StepOutput(itc.loss + self.pixel_weight * pix.loss, stats)


def build(cfg: FLIPConfig, ids: TokenizerIds) -> FLIP:
    return FLIP(cfg, ids)


# the name is the import path: checkpoints store it, and maskmm-eval finds the recipe by it
RECIPE = Recipe("examples.flip_recipe:RECIPE", FLIPConfig, build)
