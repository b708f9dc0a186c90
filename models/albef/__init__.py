"""ALBEF (align before fuse) as a recipe of the one trainer.

- :mod:`.config`: :class:`ALBEFConfig` and the ``tiny`` / ``base`` YAML presets.
- :mod:`.model`: :class:`ALBEF`, the objective (ITC with momentum distillation and a queue, ITM with
  hard negatives on the fusion CLS, MLM on the fused text with optional distillation).
- :mod:`.recipe`: ``maskmm-train --recipe albef --config tiny``.

Heavy modules are imported lazily: ``import maskmm.models.albef`` only loads the config.
"""

from __future__ import annotations

from .config import ALBEFConfig, ALBEFLossesConfig

__all__ = ["ALBEFConfig", "ALBEFLossesConfig"]
