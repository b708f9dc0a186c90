"""JSON-lines metrics logging, with optional TensorBoard and Weights & Biases mirrors."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from maskmm._host import to_python

__all__ = ["MetricsLogger", "read_metrics", "to_python"]


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # "nan"/"inf": JSON has no literal for them
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


class MetricsLogger:
    """Append one JSON object per :meth:`log` call to ``path``.

    Args:
        path: the ``.jsonl`` file (parent folders are created). ``None`` disables the file.
        enabled: ``False`` on non-zero ranks: every call becomes a no-op.
        tensorboard: mirror scalars to a ``SummaryWriter`` in ``tb_dir`` if TensorBoard is installed.
        wandb_project: mirror to Weights & Biases if ``wandb`` is installed (``None``: off).
        config: run configuration passed to W&B.
    Tensor values are converted with a host sync at log time only; keep the log interval
    coarse on accelerators.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        *,
        enabled: bool = True,
        tensorboard: bool = False,
        tb_dir: str | os.PathLike | None = None,
        wandb_project: str | None = None,
        config: dict | None = None,
    ) -> None:
        self.enabled = enabled
        self.path = Path(path) if path is not None else None
        self._tb = None
        self._wandb = None
        self._t0 = time.time()
        if not enabled:
            return
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(tb_dir or (self.path.parent / "tb" if self.path else "tb")))
            except ImportError:
                self._tb = None
        if wandb_project:
            try:
                import wandb

                self._wandb = wandb.init(project=wandb_project, config=config or {})
            except ImportError:
                self._wandb = None

    @property
    def trackers(self) -> list[str]:
        """Names of the active mirrors (``"tensorboard"``, ``"wandb"``)."""
        return [n for n, t in (("tensorboard", self._tb), ("wandb", self._wandb)) if t is not None]

    def log(self, metrics: dict[str, Any], *, step: int | None = None) -> dict[str, Any] | None:
        """Write ``metrics`` (plus ``step`` and ``time`` in seconds since creation); return the row."""
        if not self.enabled:
            return None
        row: dict[str, Any] = {}
        if step is not None:
            row["step"] = int(step)
        row["time"] = round(time.time() - self._t0, 3)
        row.update(to_python(metrics))
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(_json_safe(row)) + "\n")
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in ("step", "time")}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, global_step=step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        return row

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a JSON-lines metrics file (a truncated last line is ignored)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
