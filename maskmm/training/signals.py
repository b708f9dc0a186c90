"""Graceful stop on SIGTERM / SIGINT: finish the step, save, exit with the conventional status.

Schedulers (Slurm, Kubernetes, torchrun's elastic agent) send SIGTERM some time before they kill
a job; Ctrl-C sends SIGINT. Inside :class:`GracefulStop` the first such signal only records the
request; the training loop polls :meth:`GracefulStop.should_stop` after each step, writes a
checkpoint and raises :class:`TrainingInterrupted`, whose :attr:`~TrainingInterrupted.exit_code`
is ``128 + signal number`` (143 for SIGTERM, 130 for SIGINT), as a shell reports a process killed
by that signal. A second signal ends the process at once with that status; checkpoints are written
atomically (temporary file, then rename), so the newest intact one is never damaged by it.

Under DDP every rank receives the signal at a slightly different point: :meth:`should_stop` takes
the maximum of the ranks' requests (one scalar all-reduce per step), so all ranks stop after the
same step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["GracefulStop", "TrainingInterrupted"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(Exception):
    """The run stopped on a signal after saving ``checkpoint`` at ``step``."""

    def __init__(self, signum: int, step: int, checkpoint: os.PathLike | str | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        saved = f"saved {checkpoint}" if checkpoint else "no checkpoint written by this process"
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}: {saved}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class GracefulStop:
    """Context manager that turns the first SIGTERM/SIGINT into a stop request.

    Outside the main thread (where Python cannot install handlers) it does nothing and
    :meth:`should_stop` only reflects other ranks' requests.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:  # second signal: leave now
            sys.stderr.write(f"\n{signal.Signals(signum).name} again: exiting at once\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        self.signum = signum
        sys.stderr.write(
            f"\n{signal.Signals(signum).name} received: finishing this step, then saving a checkpoint "
            "(send it again to exit at once)\n"
        )
        sys.stderr.flush()

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in _SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def should_stop(self, device: torch.device) -> int:
        """The signal number to stop on (0: go on), agreed by all ranks under DDP."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self.signum
        flag = torch.tensor([self.signum], device=device, dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())
