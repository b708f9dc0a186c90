"""Run a test's worker function on several spawned processes (gloo process groups on one machine)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for the process group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(fn: Callable[..., None], args: tuple[Any, ...], nprocs: int = 2, timeout: float = 150) -> None:
    """Call ``fn(rank, *args)`` in ``nprocs`` spawned processes and wait for all of them.

    An exception in a worker is raised here (``torch.multiprocessing.ProcessRaisedException``);
    workers still running after ``timeout`` seconds are killed and the test fails.
    """
    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.kill()
            pytest.fail(f"the {nprocs}-process run did not finish within {timeout:g} s")
