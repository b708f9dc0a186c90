"""Reference MAMO (masked multimodal modeling) on maskmm parts.

- :mod:`.config`: :class:`MAMOConfig` and the ``tiny`` / ``base`` YAML presets with overrides.
- :mod:`.model`: :class:`MAMO` (ITC + ITM + MLM + MRM + MIM over a jointly masked pair).
- :mod:`.builder`: config -> parts -> model; :mod:`.recipe`: MAMO as a recipe of the one trainer
  (``maskmm-train --recipe mamo``), evaluator and inference API of :mod:`maskmm.training`.

Heavy modules are imported lazily: ``import maskmm.models.mamo`` only loads the config.
"""

from __future__ import annotations

from .config import MAMOConfig, config_from_dict, config_to_dict, load_config

__all__ = ["MAMOConfig", "config_from_dict", "config_to_dict", "load_config"]
