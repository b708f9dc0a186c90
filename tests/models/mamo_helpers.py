"""Config overrides that shrink the ``tiny`` MAMO preset for fast CPU tests."""

from __future__ import annotations

#: A very small model at 32 px (4x4 patches of 8 px): every encoder one or two layers of width 32.
SMALL_MODEL = [
    "model.image_size=32",
    "data.image_size=32",
    "model.patch_size=8",
    "model.vision_dim=32",
    "model.text_dim=32",
    "model.vision_depth=1",
    "model.text_depth=1",
    "model.fusion_depth=2",
    "model.vision_heads=2",
    "model.text_heads=2",
    "model.fusion_heads=2",
    "model.embed_dim=16",
]
