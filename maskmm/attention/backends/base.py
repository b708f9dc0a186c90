"""What every attention backend provides, and helpers they share.

A backend is an object with

- ``name: str``
- ``unsupported_reasons(q, k, v, mask, dropout_p, *, scale, generator) -> list[str]``: why it
  cannot run this call (empty = it can). Must be cheap, must not raise for valid inputs and
  must not import optional dependencies eagerly at module import time.
- ``__call__(q, k, v, mask, *, dropout_p, scale, generator) -> Tensor``: ``q [B, H, Lq, D]``,
  ``k [B, H, Lk, D]``, ``v [B, H, Lk, Dv]`` -> ``[B, H, Lq, Dv]`` in ``q.dtype``; rows that are
  invalid (query invalid or no valid key) are zeros with zero gradient.
- optionally ``varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
  dropout_p, scale, generator)`` for a native packed path (otherwise the dispatcher pads). The
  ``cu_seqlens`` values reach it unchecked when the caller passed ``check_values=False``: it
  must keep every read and write inside its tensors whatever they hold.

Inputs reach backends already validated by the dispatcher.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..mask import AttentionMask

__all__ = [
    "AttentionBackend",
    "dropout_seed",
    "forked_rng",
    "run_seeded",
    "seed_from_generator",
    "zero_invalid_rows",
]


class AttentionBackend(Protocol):
    name: str

    def unsupported_reasons(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: AttentionMask | None,
        dropout_p: float,
        *,
        scale: float | None,
        generator: torch.Generator | None,
    ) -> list[str]: ...

    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: AttentionMask | None,
        *,
        dropout_p: float,
        scale: float | None,
        generator: torch.Generator | None,
    ) -> Tensor: ...


def zero_invalid_rows(out: Tensor, mask: AttentionMask | None) -> Tensor:
    """Zero the rows of ``out [B, H, Lq, Dv]`` with an invalid query or no valid key.

    ``masked_fill`` passes zero gradient to the filled rows, so whatever a kernel computed
    there (uniform attention, a fallback key) never reaches ``q``, ``k`` or ``v``.
    """
    if mask is None:
        return out
    return out.masked_fill(~mask.row_valid(out.shape[2]), 0.0)


def seed_from_generator(generator: torch.Generator | None, device: torch.device) -> int:
    """Draw a seed in ``[0, 2**31 - 1)`` from ``generator`` (or the default generator of ``device``).

    The draw is made on the generator's device; for a CUDA generator reading it back is a
    host sync (documented cost of seeded dropout on the ``sdpa``/``triton``/``xformers``
    backends). With ``generator=None`` and a CPU tensor the draw is CPU-only.
    """
    gen_device = generator.device if generator is not None else torch.device(device.type)
    if gen_device.type not in ("cpu", "cuda"):
        gen_device = torch.device("cpu")
    seed = torch.randint(0, 2**31 - 1, (1,), generator=generator, device=gen_device)
    return int(seed.item())


@contextlib.contextmanager
def forked_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Run the body with ``device``'s default generator seeded with ``seed``, then restore it.

    Only that device's generator is touched (CPU, or the one CUDA device).
    """
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index], device_type="cuda"):
            torch.cuda.default_generators[index].manual_seed(seed)
            yield
    else:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield


def dropout_seed(dropout_p: float, generator: torch.Generator | None, device: torch.device) -> int | None:
    """A seed drawn from ``generator`` when the call has dropout and a generator, else ``None``."""
    if dropout_p > 0.0 and generator is not None:
        return seed_from_generator(generator, device)
    return None


def run_seeded(
    run: Callable[[], Tensor], dropout_p: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """``run()``, under ``device``'s default generator re-seeded from ``generator`` (see
    :func:`forked_rng`) when the call has dropout and a generator; plainly otherwise."""
    seed = dropout_seed(dropout_p, generator, device)
    if seed is None:
        return run()
    with forked_rng(device, seed):
        return run()
