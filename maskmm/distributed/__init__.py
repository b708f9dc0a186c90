"""Cross-rank collectives with explicit gradient semantics (identity in a single process)."""

from __future__ import annotations

from maskmm.distributed.gather import all_gather_no_grad, all_gather_with_grad, world_info

__all__ = ["all_gather_no_grad", "all_gather_with_grad", "world_info"]
