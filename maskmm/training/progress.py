"""A progress bar: tqdm when installed, else a plain periodic line on stderr."""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """``update(n)`` / ``set_postfix(dict)`` / ``close()``; silent when ``enabled=False``.

    Args:
        total: number of steps.
        initial: steps already done (resume).
        enabled: ``False`` on non-zero ranks or when asked for quiet output.
        use_tqdm: ``None`` picks tqdm if it can be imported.
        every: plain mode prints one line every ``every`` updates.
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str = "",
        initial: int = 0,
        enabled: bool = True,
        use_tqdm: bool | None = None,
        every: int = 10,
        stream: Any = None,
    ) -> None:
        self.total, self.n, self.desc, self.enabled = total, initial, desc, enabled
        self.every = max(int(every), 1)
        self.stream = stream if stream is not None else sys.stderr
        self.postfix: dict[str, Any] = {}
        self._bar = None
        self._t0 = time.time()
        self._start = initial
        if not enabled:
            return
        if use_tqdm is None or use_tqdm:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(
                    total=total, initial=initial, desc=desc, dynamic_ncols=True, file=self.stream
                )
            except ImportError:
                if use_tqdm:
                    raise

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
        elif self.n % self.every == 0 or self.n == self.total:
            rate = (self.n - self._start) / max(time.time() - self._t0, 1e-9)
            post = " ".join(f"{k}={_fmt(v)}" for k, v in self.postfix.items())
            print(f"{self.desc} {self.n}/{self.total} ({rate:.2f} it/s) {post}".strip(), file=self.stream)

    def set_postfix(self, values: dict[str, Any]) -> None:
        self.postfix = dict(values)
        if self.enabled and self._bar is not None:
            self._bar.set_postfix({k: _fmt(v) for k, v in values.items()}, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
