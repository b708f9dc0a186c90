"""SemMIM (semantics-enhanced cross-modal masked image modeling) assembled from maskmm parts.

- :mod:`.config`: :class:`SemMIMConfig` and the ``tiny`` / ``base`` YAML presets with overrides.
- :mod:`.model`: :class:`SemMIM` (momentum model, text-guided masking, masked patches predicted
  as distributions over ``K`` codes, global code agreement, ITC + ITM, optional MLM).
- :mod:`.scores`: :func:`text_patch_similarity`, the relevance that guides the masking.
- :mod:`.builder`: config -> parts -> model; :mod:`.recipe`: SemMIM as a recipe of the one trainer
  (``maskmm-train --recipe semmim``), evaluator and inference API of :mod:`maskmm.training`.

Heavy modules are imported lazily: ``import maskmm.models.semmim`` only loads the config.
"""

from __future__ import annotations

from .config import LOSS_NAMES, SemMIMConfig, config_from_dict, config_to_dict, load_config

__all__ = ["LOSS_NAMES", "SemMIMConfig", "config_from_dict", "config_to_dict", "load_config"]
