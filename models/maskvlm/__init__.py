"""MaskVLM (joint masked vision and language modeling) assembled from maskmm parts.

- :mod:`.config`: :class:`MaskVLMConfig` (documented defaults; our choices listed there).
- :mod:`.model`: :class:`MaskVLM` (ITC + ITM on the clean pair; pixel-block MIM with a text
  cross-attending decoder; MLM with the clean image as context).
- :mod:`.builder`: :func:`build_maskvlm` (config -> parts -> model) and :func:`tiny_config`.
"""

from __future__ import annotations

from .builder import build_maskvlm, encoder_configs, tiny_config
from .config import LOSS_NAMES, MaskVLMConfig
from .model import MaskVLM, MaskVLMOutput

__all__ = [
    "LOSS_NAMES",
    "MaskVLM",
    "MaskVLMConfig",
    "MaskVLMOutput",
    "build_maskvlm",
    "encoder_configs",
    "tiny_config",
]
