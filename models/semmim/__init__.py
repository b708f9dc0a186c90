"""SemMIM (semantics-enhanced cross-modal masked image modeling) assembled from maskmm parts.

- :mod:`.config`: :class:`SemMIMConfig` (documented defaults; our choices listed there).
- :mod:`.model`: :class:`SemMIM` (momentum model, text-guided masking, masked patches predicted
  as distributions over ``K`` codes, global code agreement, ITC + ITM, optional MLM).
- :mod:`.scores`: :func:`text_patch_similarity`, the relevance that guides the masking.
- :mod:`.builder`: :func:`build_semmim` (config -> parts -> model) and :func:`tiny_config`.
"""

from __future__ import annotations

from .builder import build_semmim, decay_schedule, encoder_configs, tiny_config
from .config import LOSS_NAMES, SemMIMConfig
from .model import SemMIM, SemMIMOutput, SemMIMStudent
from .scores import text_patch_similarity

__all__ = [
    "LOSS_NAMES",
    "SemMIM",
    "SemMIMConfig",
    "SemMIMOutput",
    "SemMIMStudent",
    "build_semmim",
    "decay_schedule",
    "encoder_configs",
    "text_patch_similarity",
    "tiny_config",
]
