"""Loss / recall curves from metric rows or a JSON-lines metrics file, as a PNG (matplotlib optional)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .logger import read_metrics

__all__ = ["plot_metrics", "plot_rows", "select_plot_keys"]


def plot_metrics(
    metrics_path: str | os.PathLike,
    out_png: str | os.PathLike,
    *,
    keys: Sequence[str] | None = None,
) -> Path | None:
    """Plot the losses and the retrieval recalls of the JSON-lines file ``metrics_path`` into
    ``out_png``: :func:`plot_rows` on its rows."""
    return plot_rows(read_metrics(metrics_path), out_png, keys=keys)


def plot_rows(
    rows: Sequence[dict[str, Any]],
    out_png: str | os.PathLike,
    *,
    keys: Sequence[str] | None = None,
) -> Path | None:
    """Plot the losses and the retrieval recalls of metric rows against ``step`` into ``out_png``.

    Args:
        rows: metric dicts (rows without a ``"step"`` are skipped).
        keys: series to draw; default: :func:`select_plot_keys`.
    Returns:
        The PNG path, or ``None`` when matplotlib is missing or there is nothing to draw.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in rows if "step" in r]
    if keys is None:
        keys = select_plot_keys(rows)
    series = {k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    loss_keys = [k for k in series if "loss" in k.lower()]
    other_keys = [k for k in series if k not in loss_keys]
    panels = [p for p in (loss_keys, other_keys) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for k in panel:
            xs, ys = zip(*series[k])
            ax.plot(xs, ys, label=k, linewidth=1, marker="o" if len(xs) < 20 else None, markersize=3)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax, panel in zip(axes[0], panels):
        ax.set_title("losses" if panel is loss_keys else "retrieval recall (%)")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


_RECALL = re.compile(r"(^|[/_])(recall|r@?(1|5|10))($|_)", re.IGNORECASE)


def select_plot_keys(rows: Sequence[dict]) -> list[str]:
    """Numeric series worth plotting, in first-seen order: losses (``loss*``) and retrieval
    recalls (``..._r1``, ``r@5``, ``recall...``), leaving out the strict own-caption variants and
    bookkeeping values such as the candidate count."""
    found: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k in found or k in ("step", "time") or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            name = k.lower().rsplit("/", 1)[-1]
            if name.startswith("loss") or (_RECALL.search(name) and "strict" not in name):
                found.append(k)
    return found
