"""Reference MAMO (masked multimodal modeling) on maskmm parts.

- :mod:`.config`: :class:`MAMOConfig` and the ``tiny`` / ``base`` YAML presets with overrides.
- :mod:`.model`: :class:`MAMO` (ITC + ITM + MLM + MRM + MIM over a jointly masked pair).
- :mod:`.builder`: config -> parts -> model.
- :mod:`.train`, :mod:`.eval`, :mod:`.inference`, :mod:`.cli`: training loop, evaluation,
  inference API and the ``maskmm-train`` / ``maskmm-eval`` commands.

Heavy modules are imported lazily: ``import maskmm.models.mamo`` only loads the config.
"""

from __future__ import annotations

from .config import MAMOConfig, apply_overrides, config_from_dict, config_to_dict, load_config

__all__ = ["MAMOConfig", "apply_overrides", "config_from_dict", "config_to_dict", "load_config"]
