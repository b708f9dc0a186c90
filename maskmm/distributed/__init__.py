"""Cross-rank collectives with explicit gradient semantics (identity in a single process)."""

from __future__ import annotations

from maskmm.distributed.gather import all_gather_no_grad, all_gather_with_grad, world_info
from maskmm.distributed.global_batch import pad_to_common_length, rescale_to_global_mean

__all__ = [
    "all_gather_no_grad",
    "all_gather_with_grad",
    "pad_to_common_length",
    "rescale_to_global_mean",
    "world_info",
]
