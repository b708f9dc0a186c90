"""CLIP (contrastive language-image pretraining) as a recipe of the one trainer.

- :mod:`.config`: :class:`CLIPConfig` and the ``tiny`` / ``base`` YAML presets.
- :mod:`.model`: :class:`CLIP`, the objective (symmetric InfoNCE over the global batch, online keys).
- :mod:`.recipe`: ``maskmm-train --recipe clip --config tiny``.

Heavy modules are imported lazily: ``import maskmm.models.clip`` only loads the config.
"""

from __future__ import annotations

from .config import CLIPConfig, ContrastiveConfig

__all__ = ["CLIPConfig", "ContrastiveConfig"]
