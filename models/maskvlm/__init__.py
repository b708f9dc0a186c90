"""MaskVLM (joint masked vision and language modeling) assembled from maskmm parts.

- :mod:`.config`: :class:`MaskVLMConfig` and the ``tiny`` / ``base`` YAML presets with overrides.
- :mod:`.model`: :class:`MaskVLM` (ITC + ITM on the clean pair; pixel-block MIM with a text
  cross-attending decoder; MLM with the clean image as context).
- :mod:`.builder`: config -> parts -> model; :mod:`.recipe`: MaskVLM as a recipe of the one trainer
  (``maskmm-train --recipe maskvlm``), evaluator and inference API of :mod:`maskmm.training`.

Heavy modules are imported lazily: ``import maskmm.models.maskvlm`` only loads the config.
"""

from __future__ import annotations

from .config import LOSS_NAMES, MaskVLMConfig, config_from_dict, config_to_dict, load_config

__all__ = ["LOSS_NAMES", "MaskVLMConfig", "config_from_dict", "config_to_dict", "load_config"]
