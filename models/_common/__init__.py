"""Pieces every recipe repeats, written once (``maskmm.models._common``).

- :func:`check_pair_batch`: the argument checks of a pretraining step on image-caption pairs;
  :func:`batch_pair_positives`: which captions of the global batch are true of which images.
- :func:`itc_similarity` and :func:`fused_text_cls`: the similarities and the pair encoder of
  :func:`maskmm.losses.hard_negative_matching` (ALBEF's ITM); :func:`itm_step` puts them together.
- :func:`check_required_parts`: each enabled loss has the parts it needs; :class:`PartsContainer`:
  the base of the recipes' student containers.
- :class:`StepLosses`: the named losses and statistics of one step and their weighted total.

Config checks live with the config sections (``check(prefix)`` methods of each section).
"""

from .step import (
    PartsContainer,
    StepLosses,
    batch_pair_positives,
    check_pair_batch,
    check_required_parts,
    fused_text_cls,
    itc_similarity,
    itm_step,
)

__all__ = [
    "PartsContainer",
    "StepLosses",
    "batch_pair_positives",
    "check_pair_batch",
    "check_required_parts",
    "fused_text_cls",
    "itc_similarity",
    "itm_step",
]
