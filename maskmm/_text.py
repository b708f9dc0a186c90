"""Small text helpers for reports."""

from __future__ import annotations

from collections.abc import Sequence


def key_summary(keys: Sequence[str], limit: int = 5) -> str:
    """``"0"``, or the count and the first ``limit`` names: ``"7 (a, b, c, d, e, ...)"``."""
    if not keys:
        return "0"
    more = ", ..." if len(keys) > limit else ""
    return f"{len(keys)} ({', '.join(keys[:limit])}{more})"
