"""Maintenance of JSON-lines metrics files (as written by :class:`~maskmm.training.MetricsLogger`)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

__all__ = ["truncate_metrics"]


def _row_step(line: bytes) -> float | None:
    """The ``"step"`` of one JSON-lines row, or ``None`` if the line is not a row with a numeric step."""
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(row, dict):
        return None
    step = row.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        return None
    return step


def truncate_metrics(path: str | os.PathLike, step: int) -> int:
    """Keep only the rows of metrics file ``path`` logged at or before ``step``; return how many were dropped.

    Meant for resuming from the checkpoint of ``step``: the rows a previous run logged after it
    would otherwise appear twice once training repeats those steps.

    A row is kept if it is a JSON object whose ``"step"`` is a number ``<= step``; kept lines are
    copied byte for byte. Everything else is dropped and counted: rows of later steps, rows
    without a ``"step"``, and malformed lines such as the partial last line a killed writer
    leaves behind. Empty lines are dropped without being counted.

    The file is rewritten atomically (temporary file in the same folder, fsync, ``os.replace``,
    folder fsync) keeping its permission bits, so a crash leaves either the old or the new file.
    It is not rewritten when nothing is dropped. A missing file is not an error: nothing to drop,
    ``0`` is returned.

    Raises:
        TypeError: ``step`` is not an int.
        ValueError: ``step < 0``, or ``path`` exists but is not a regular file.
        OSError: reading or rewriting the file failed (the original is then left unchanged).
    """
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    path = Path(path)
    if not path.exists():
        return 0
    if not path.is_file():
        raise ValueError(f"metrics file {str(path)!r} is not a regular file")
    data = path.read_bytes()
    kept: list[bytes] = []
    dropped = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        s = _row_step(line)
        if s is not None and s <= step:
            kept.append(line.rstrip(b"\r"))
        else:
            dropped += 1
    if dropped == 0:
        return 0
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(line + b"\n" for line in kept))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return dropped
