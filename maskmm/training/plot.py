"""Loss / recall curves from a JSON-lines metrics file, as a PNG (matplotlib optional)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .logger import read_metrics

__all__ = ["plot_metrics"]


def plot_metrics(
    metrics_path: str | os.PathLike,
    out_png: str | os.PathLike,
    *,
    keys: Sequence[str] | None = None,
    prefixes: Sequence[str] = ("loss", "recall", "r@", "eval/"),
) -> Path | None:
    """Plot every numeric series of ``metrics_path`` against ``step`` into ``out_png``.

    Args:
        keys: series to draw; default: keys starting with one of ``prefixes`` (case-insensitive).
    Returns:
        The PNG path, or ``None`` when matplotlib is missing or there is nothing to draw.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in read_metrics(metrics_path) if "step" in r]
    if keys is None:
        found: list[str] = []
        for r in rows:
            for k, v in r.items():
                numeric = isinstance(v, (int, float)) and k not in ("step", "time")
                if numeric and k not in found and any(k.lower().startswith(p) for p in prefixes):
                    found.append(k)
        keys = found
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
            ax.plot(xs, ys, label=k, linewidth=1)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_title("losses" if loss_keys else "metrics")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
