"""Configuration of the MaskVLM recipe (joint masked vision and language modeling).

A :class:`MaskVLMConfig` composes the shared sections of :mod:`maskmm` (``model``: the encoders,
``itc`` / ``itm``: the contrastive and matching losses, ``text_masking``: BERT token masking, and
the run's ``optim`` / ``train`` / ``data`` / ``eval`` / ``log``) with MaskVLM's own sections:
``image_masking`` (pixel blocks), ``decoder`` (the cross-attending pixel decoder and its loss) and
``losses`` (switches, weights, start steps). Presets live beside this file (``tiny.yaml``,
``base.yaml``); ``--set section.field=value`` overrides any field.

What follows the paper (docs/methods.md, MaskVLM section): ITC + ITM on the clean pair; one view
with the image masked in 32x32-pixel blocks at 60 % and the caption clean, reconstructed (L1 on the
masked pixels) by a decoder of cross-attention blocks attending to the unmasked text; one view with
the image clean and the caption masked at 30 %, predicted through the fusion encoder; all losses
unweighted; no EMA teacher.

Our choices (not verified against the paper), each a field here:

- masked pixels are filled with ``image_masking.fill`` (0.0 = the data mean of normalised inputs);
- the reconstruction target is the input pixels themselves (``decoder.normalize_target = false``),
  scored in pixel layout on exactly the hidden pixels;
- the decoder reads the ViT patch states of the masked image (CLS excluded) and cross-attends to the
  unimodal text-encoder states of the clean caption; width = vision width, ``decoder.depth = 2``;
- ITC uses online in-batch keys (no queue, no momentum features: MaskVLM has no EMA model; keys
  gathered with gradient under data parallelism) with a learnable temperature (init 0.07);
- ITM draws one hard negative per image and per text from the ITC similarities (ALBEF);
- text masking is BERT 80/10/10, never on special ids or padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from maskmm.losses.config import ITCConfig, ITMConfig
from maskmm.masking.config import TextMaskingConfig
from maskmm.nn.encoders_config import EncodersConfig
from maskmm.training import config as _config
from maskmm.training.config import (
    RunConfig,
    TrainConfig,
    check_positive,
    check_ratio_value,
    config_to_dict,
    dump_config,
)

__all__ = [
    "LOSS_NAMES",
    "PRESET_DIR",
    "LossesConfig",
    "MaskVLMConfig",
    "PixelDecoderConfig",
    "PixelMaskingConfig",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
]

PRESET_DIR = Path(__file__).resolve().parent

#: Loss names, in the order they appear in outputs.
LOSS_NAMES: tuple[str, ...] = ("itc", "itm", "mlm", "mim")


@dataclass
class PixelMaskingConfig:
    """The masked-image view: ``ratio`` of the ``block_size`` x ``block_size``-pixel blocks of the
    input image are hidden (an exact count per image) and filled with ``fill`` (a learnable
    per-channel value with ``learnable_fill``). Blocks and ViT patches must nest (one side a
    multiple of the other); a patch counts as masked when all its pixels are hidden."""

    ratio: float = 0.6
    block_size: int = 32
    fill: float = 0.0
    learnable_fill: bool = False

    def check(self, p: str = "image_masking.") -> None:
        check_ratio_value(f"{p}ratio", self.ratio)
        check_positive(f"{p}block_size", self.block_size)


@dataclass
class PixelDecoderConfig:
    """The pixel decoder: ``depth`` pre-norm blocks that read the ViT patch states of the masked image
    and cross-attend to the clean caption's text states, then predict each patch's pixels.
    ``dim`` / ``heads``: 0 = the vision encoder's. ``loss``: L1 (paper) or MSE over the hidden
    pixels; ``normalize_target``: MAE's per-patch pixel normalisation of the target."""

    depth: int = 2
    dim: int = 0
    heads: int = 0
    loss: Literal["l1", "mse"] = "l1"
    normalize_target: bool = False

    def check(self, p: str = "decoder.") -> None:
        check_positive(f"{p}depth", self.depth)
        check_positive(f"{p}dim", self.dim, zero_ok=True)
        check_positive(f"{p}heads", self.heads, zero_ok=True)


@dataclass
class LossesConfig:
    """Which losses run, their weights, and the steps at which they join.

    ``mim`` is the masked pixel reconstruction. ``itm_start_step`` / ``masked_start_step``: ITM, and
    the masked views (MLM, MIM), join the objective at these 0-based steps (0 = from the first step,
    as the paper). The ITM hard-negative schedule (``itm.*``) counts from ``itm_start_step``.
    """

    itc: bool = True
    itm: bool = True
    mlm: bool = True
    mim: bool = True
    itc_weight: float = 1.0
    itm_weight: float = 1.0
    mlm_weight: float = 1.0
    mim_weight: float = 1.0
    itm_start_step: int = 0
    masked_start_step: int = 0

    def enabled(self) -> tuple[str, ...]:
        """Names of the enabled losses, in :data:`LOSS_NAMES` order."""
        return tuple(n for n in LOSS_NAMES if getattr(self, n))

    def start_of(self, name: str) -> int:
        """The 0-based step at which loss ``name`` joins."""
        return {"itm": self.itm_start_step, "mlm": self.masked_start_step, "mim": self.masked_start_step}.get(
            name, 0
        )

    def active_at(self, step: int) -> tuple[str, ...]:
        """The enabled losses computed at the 0-based ``step``."""
        return tuple(n for n in self.enabled() if step >= self.start_of(n))

    def weight(self, name: str) -> float:
        return float(getattr(self, f"{name}_weight"))

    def check(self, p: str = "losses.") -> None:
        if not self.enabled():
            raise ValueError(
                f"config section '{p[:-1]}' turns every loss off ({', '.join(LOSS_NAMES)}); "
                "enable at least one"
            )
        for name in LOSS_NAMES:
            check_positive(f"{p}{name}_weight", self.weight(name), zero_ok=True)
        check_positive(f"{p}itm_start_step", self.itm_start_step, zero_ok=True)
        check_positive(f"{p}masked_start_step", self.masked_start_step, zero_ok=True)
        if not self.active_at(0):
            raise ValueError(
                f"config section '{p[:-1]}' computes no loss at step 0 (every enabled loss starts later); "
                f"enable itc or set {p}itm_start_step / {p}masked_start_step to 0"
            )


def _itc() -> ITCConfig:
    # MaskVLM has no momentum model: online in-batch keys, nothing to distil.
    return ITCConfig(momentum_keys=False, queue_size=0, distill=False)


@dataclass
class MaskVLMConfig(RunConfig):
    """Full configuration: encoders, ITC, ITM, text and pixel masking, decoder, losses, and the run."""

    model: EncodersConfig = field(default_factory=EncodersConfig)
    itc: ITCConfig = field(default_factory=_itc)
    itm: ITMConfig = field(default_factory=ITMConfig)
    text_masking: TextMaskingConfig = field(default_factory=lambda: TextMaskingConfig(ratio=0.3))
    image_masking: PixelMaskingConfig = field(default_factory=PixelMaskingConfig)
    decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    losses: LossesConfig = field(default_factory=LossesConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/maskvlm"))

    def check_recipe(self) -> None:
        m, L, im, dec = self.model, self.losses, self.image_masking, self.decoder
        if L.itc and self.itc.momentum_keys:
            raise ValueError(
                "config field 'itc.momentum_keys' must be false: MaskVLM has no momentum model "
                "(ITC keys are the online features of the batch)"
            )
        if im.block_size % m.patch_size and m.patch_size % im.block_size:
            raise ValueError(
                f"config fields 'image_masking.block_size' ({im.block_size}) and 'model.patch_size' "
                f"({m.patch_size}) must nest (one a multiple of the other)"
            )
        if im.block_size > m.image_size:
            raise ValueError(
                f"config field 'image_masking.block_size' ({im.block_size}) exceeds "
                f"model.image_size ({m.image_size})"
            )
        dim = dec.dim or m.vision_dim
        heads = dec.heads or m.vision_heads
        if dim % heads:
            raise ValueError(
                f"config field 'decoder.heads' ({heads}) must divide the decoder width ({dim}, "
                "decoder.dim or model.vision_dim)"
            )
        if L.itm and self.train.batch_size < 2:
            raise ValueError("config field 'train.batch_size' must be >= 2 when losses.itm is on (negatives)")
        d = self.data
        if d.image_size != m.image_size:
            raise ValueError(
                f"config fields 'data.image_size' ({d.image_size}) and 'model.image_size' ({m.image_size}) "
                "differ"
            )
        if d.max_text_len > m.max_text_len:
            raise ValueError(
                f"config field 'data.max_text_len' ({d.max_text_len}) exceeds model.max_text_len "
                f"({m.max_text_len})"
            )


def load_config(preset: str | Path = "tiny", overrides: Sequence[str] = ()) -> MaskVLMConfig:
    """Load a preset (name or YAML path), apply ``section.field=value`` overrides, validate.

    Example::

        cfg = load_config("tiny", ["train.steps=50", "losses.mim=false"])
    """
    return _config.load_config(MaskVLMConfig, preset, overrides, preset_dirs=[PRESET_DIR])


def config_from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> MaskVLMConfig:
    """Build and validate a :class:`MaskVLMConfig` from a nested dict (unknown keys are errors)."""
    return _config.config_from_dict(MaskVLMConfig, data, overrides)
