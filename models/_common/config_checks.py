"""Config-field checks and loss switches shared by the recipe config dataclasses.

Messages name the field as ``<ConfigClass>.<field>``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, TypeVar

from maskmm._checks import check_int, check_ratio


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
