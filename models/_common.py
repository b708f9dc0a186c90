"""Pieces every recipe repeats, written once (importable as ``maskmm.models._common``).

- :class:`LossSwitches`: the loss switches and weights of a recipe config dataclass;
  :func:`check_switch_fields`, :func:`check_text_masking_fields` and the ``check_*_field`` helpers
  validate config fields with messages naming ``<ConfigClass>.<field>``.
- :func:`check_pair_batch`: the argument checks of a pretraining step on image-caption pairs.
- :func:`itc_similarity` and :func:`fused_text_cls`: the similarities and the pair encoder of
  :func:`maskmm.losses.hard_negative_matching` (ALBEF's ITM); :func:`itm_step` puts them together.
- :func:`check_required_parts`: each enabled loss has the parts it needs; :class:`PartsContainer`:
  the base of the recipes' student containers.
- :class:`StepLosses`: the named losses and statistics of one step and their weighted total.
- :func:`preset_encoders` and :func:`token_masker`: builder steps shared by the recipes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from maskmm._checks import check_floating, check_generator, check_int, check_ratio, check_tensor
from maskmm.losses import LossOutput, PairEncoder, hard_negative_matching
from maskmm.masking import TokenMasker
from maskmm.nn import PresetConfigs, preset

__all__ = [
    "LossSwitches",
    "PartsContainer",
    "StepLosses",
    "check_float_field",
    "check_int_field",
    "check_pair_batch",
    "check_ratio_field",
    "check_required_parts",
    "check_switch_fields",
    "check_text_masking_fields",
    "fused_text_cls",
    "itc_similarity",
    "itm_step",
    "preset_encoders",
    "token_masker",
]


# --------------------------------------------------------------------------- configs


def _field(config: object, name: str) -> str:
    return f"{type(config).__name__}.{name}"


def check_ratio_field(config: object, name: str, *, allow_one: bool = False) -> None:
    """``config.<name>`` must be a float in ``[0, 1)`` (``[0, 1]`` with ``allow_one``)."""
    check_ratio(_field(config, name), getattr(config, name), allow_one=allow_one)


def check_int_field(config: object, name: str, minimum: int = 0) -> None:
    """``config.<name>`` must be an ``int`` (not ``bool``) ``>= minimum``."""
    check_int(_field(config, name), getattr(config, name), minimum=minimum)


def check_float_field(
    config: object, name: str, low: float = -math.inf, high: float = math.inf, *, open_low: bool = False
) -> None:
    """``config.<name>`` must be a finite float (not ``bool``) in ``[low, high]`` (``(low, high]``
    with ``open_low``)."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{_field(config, name)} must be a float, got {value!r}")
    low_ok = value > low if open_low else value >= low
    if not (math.isfinite(value) and low_ok and value <= high):
        if high == math.inf:
            where = f"{'>' if open_low else '>='} {low}"
        else:
            where = f"in {'(' if open_low else '['}{low}, {high}]"
        raise ValueError(f"{_field(config, name)} must be a finite float {where}, got {value}")


_Config = TypeVar("_Config", bound="LossSwitches")


class LossSwitches:
    """Mixin of a recipe config dataclass: per loss ``n`` of ``LOSS_NAMES``, a ``bool`` field ``n``
    (on / off) and a ``float`` field ``n_weight``. Validate them with :func:`check_switch_fields`."""

    LOSS_NAMES: ClassVar[tuple[str, ...]] = ()

    @property
    def losses(self) -> tuple[str, ...]:
        """Names of the enabled losses, in ``LOSS_NAMES`` order."""
        return tuple(n for n in self.LOSS_NAMES if getattr(self, n))

    def weight(self, name: str) -> float:
        """Weight of loss ``name``."""
        return float(getattr(self, f"{name}_weight"))

    def replace(self: _Config, **changes: Any) -> _Config:
        """A validated copy with ``changes`` applied (e.g. ``cfg.replace(itm=False)``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def check_switch_fields(config: LossSwitches) -> None:
    """Check ``encoders`` (a preset name), ``encoder_overrides`` (a dict), every loss switch (a
    ``bool``) and weight (a float ``>= 0``), and that at least one loss is on."""
    cls = type(config).__name__
    if not isinstance(config.encoders, str):
        raise TypeError(f"{cls}.encoders must be a preset name, got {type(config.encoders).__name__}")
    if not isinstance(config.encoder_overrides, dict):
        raise TypeError(
            f"{cls}.encoder_overrides must be a dict, got {type(config.encoder_overrides).__name__}"
        )
    for name in config.LOSS_NAMES:
        if not isinstance(getattr(config, name), bool):
            raise TypeError(f"{cls}.{name} must be a bool, got {getattr(config, name)!r}")
        w = getattr(config, f"{name}_weight")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ValueError(f"{cls}.{name}_weight must be a float >= 0, got {w!r}")
    if not config.losses:
        raise ValueError(f"{cls} turns every loss off ({', '.join(config.LOSS_NAMES)}); enable at least one")


def check_text_masking_fields(config: object) -> None:
    """Check the BERT text-masking fields ``text_mask_ratio``, ``mask_prob``, ``random_prob`` (their
    sum ``<= 1``), ``mask_token_id`` and ``special_ids``."""
    check_ratio_field(config, "text_mask_ratio")
    check_ratio_field(config, "mask_prob", allow_one=True)
    check_ratio_field(config, "random_prob", allow_one=True)
    if config.mask_prob + config.random_prob > 1.0 + 1e-9:
        raise ValueError(
            f"{_field(config, 'mask_prob')} + random_prob must be <= 1, "
            f"got {config.mask_prob} + {config.random_prob}"
        )
    check_int_field(config, "mask_token_id", 0)
    for i in config.special_ids:
        check_int(_field(config, "special_ids[*]"), i, minimum=0)


# --------------------------------------------------------------------------- forward


def check_pair_batch(
    images: Tensor,
    input_ids: Tensor,
    text_valid: Tensor,
    image_ids: Tensor | None,
    generator: torch.Generator | None,
    *,
    itm: bool,
    world: int = 1,
) -> int:
    """Validate one batch of image-caption pairs and return its size ``B``.

    Args:
        images: float ``[B, C, H, W]``; input_ids: long ``[B, L]``; text_valid: bool ``[B, L]``;
        image_ids: long ``[B]`` or ``None``; all on the images' device.
        generator: ``None`` or a generator of that device.
        itm: ITM runs, so the global batch of ``world * B`` pairs needs ``>= 2`` (a negative must
            exist; ``world`` = number of data-parallel ranks that draw negatives from it).
    """
    check_floating("images", images, ndim=4)
    b = images.shape[0]
    check_tensor("input_ids", input_ids, shape=(b, None), dtype=torch.long, device=images.device)
    check_tensor(
        "text_valid", text_valid, shape=tuple(input_ids.shape), dtype=torch.bool, device=images.device
    )
    if image_ids is not None:
        check_tensor("image_ids", image_ids, shape=(b,), dtype=torch.long, device=images.device)
    check_generator("generator", generator, images.device)
    if itm and b * world < 2:
        on_ranks = f" on each of {world} ranks" if world > 1 else ""
        raise ValueError(
            f"ITM needs a batch of at least 2 pairs to draw negatives, got images of batch {b}{on_ranks}"
        )
    return b


@torch.no_grad()
def itc_similarity(image_feat: Tensor, text_feat: Tensor, temperature: Tensor | float) -> Tensor:
    """fp32 ``[B, B]`` image-to-text similarities ``image_feat @ text_feat.T / temperature``, detached
    (the hard-negative sampling distribution of ITM)."""
    temp = temperature.detach().float() if isinstance(temperature, Tensor) else float(temperature)
    return image_feat.detach().float() @ text_feat.detach().float().t() / temp


def fused_text_cls(fusion: nn.Module) -> PairEncoder:
    """The :data:`~maskmm.losses.PairEncoder` of an ALBEF-style fusion encoder: its fused text CLS
    state ``[N, D]`` (the input of the matching head)."""

    def fuse(image: Tensor, image_valid: Tensor | None, text: Tensor, text_valid: Tensor) -> Tensor:
        return fusion(image, image_valid, text, text_valid).text[:, 0]

    return fuse


def itm_step(
    image_states: Tensor,
    text_states: Tensor,
    text_valid: Tensor,
    sim_i2t: Tensor | None,
    *,
    fusion: nn.Module,
    head: nn.Module,
    image_ids: Tensor | None = None,
    generator: torch.Generator | None = None,
    hardness: float = 1.0,
    rows: tuple[int, int] | None = None,
) -> LossOutput:
    """ALBEF's ITM: :func:`maskmm.losses.hard_negative_matching` on the fused text CLS of ``fusion``,
    negatives drawn from ``sim_i2t [B, B]`` (e.g. :func:`itc_similarity`; ``None``: uniformly), mixed
    with uniform draws by ``hardness``; ``rows`` scores a slice of the ``B`` rows (data parallelism,
    see ``hard_negative_matching``)."""
    return hard_negative_matching(
        image_states,
        None,
        text_states,
        text_valid,
        sim_i2t,
        fuse=fused_text_cls(fusion),
        head=head,
        image_ids=image_ids,
        generator=generator,
        hardness=hardness,
        rows=rows,
    )


class PartsContainer(nn.Module):
    """A module holding named parts (``None`` = absent) that is never called itself: the recipes'
    students, whose parts the objective calls one by one (and the EMA teacher copies by name)."""

    def __init__(self, **parts: nn.Module | None) -> None:
        super().__init__()
        for name, part in parts.items():
            setattr(self, name, part)

    def forward(self, *args: object, **kwargs: object) -> None:  # pragma: no cover
        raise TypeError(f"{type(self).__name__} is a container; call the objective or the parts directly")


def check_required_parts(
    owner: object, required: dict[str, Sequence[str]], enabled: Callable[[str], bool], prefix: str = ""
) -> None:
    """Raise ``ValueError`` when an enabled loss (``enabled(name)``) lacks one of its parts:
    ``required`` maps a loss name to the attribute names of ``owner`` it needs (``None`` = missing)."""
    for loss, parts in required.items():
        for part in parts:
            if enabled(loss) and getattr(owner, part) is None:
                raise ValueError(f"loss {loss!r} is enabled but {prefix}{part} is None")


@dataclasses.dataclass
class StepLosses:
    """The losses of one step (name -> fp32 scalar, attached) and its statistics (name -> detached
    fp32 scalar)."""

    losses: dict[str, Tensor] = dataclasses.field(default_factory=dict)
    stats: dict[str, Tensor] = dataclasses.field(default_factory=dict)

    def add(self, name: str, out: LossOutput) -> None:
        """Record loss ``name`` and its statistics as ``<name>/<stat>``."""
        self.losses[name] = out.loss
        self.stats.update({f"{name}/{k}": v for k, v in out.stats.items()})

    def total(self, order: Sequence[str], weight: Callable[[str], float]) -> Tensor:
        """The weighted sum of the losses (fp32). Orders :attr:`losses` as ``order`` and logs each
        loss as the statistic ``loss_<name>``."""
        self.losses = {k: self.losses[k] for k in order if k in self.losses}
        for k, v in self.losses.items():
            self.stats[f"loss_{k}"] = v.detach().float()
        return sum(weight(k) * v.float() for k, v in self.losses.items())


# --------------------------------------------------------------------------- builders


def preset_encoders(config: Any, *, mask_token: bool) -> PresetConfigs:
    """The encoder configs of a recipe config: the :func:`maskmm.nn.preset` ``config.encoders`` with
    ``config.encoder_overrides``; the ViT gets (or loses) its mask token and the fusion reads image
    tokens of the ViT's width."""
    enc = preset(config.encoders, **config.encoder_overrides)
    vision = dataclasses.replace(enc.vision, mask_token=mask_token)
    fusion = enc.fusion
    if fusion.context_dim != vision.dim and fusion.image_dim is None:
        fusion = dataclasses.replace(fusion, image_dim=vision.dim)
    return PresetConfigs(vision, enc.text, fusion)


def token_masker(config: Any, vocab_size: int) -> TokenMasker:
    """The BERT text masker of the fields checked by :func:`check_text_masking_fields`."""
    return TokenMasker(
        config.text_mask_ratio,
        mask_token_id=config.mask_token_id,
        vocab_size=vocab_size,
        special_ids=config.special_ids,
        mask_prob=config.mask_prob,
        random_prob=config.random_prob,
    )
