"""Skip optimiser updates whose loss or gradient norm is not finite, and stop after too many in a row.

A step whose loss or global gradient norm is NaN or infinite changes nothing the optimiser owns
(parameters and optimiser state); the step still counts (schedule, data position). The check is
folded into the clip-norm result: with a fused optimiser (``torch.optim.AdamW(fused=True)``, the
default on CUDA) the skip happens on the device through the optimiser's ``found_inf`` input, as
``torch.amp.GradScaler`` does, so no host synchronisation is added; otherwise (CPU, where a host
read costs nothing) the flag is read on the host.

The run stops with :class:`NonFiniteError` once ``max_consecutive`` steps in a row were skipped.
The consecutive count lives on the device; :meth:`NonFiniteGuard.check_limit` reads it, which the
trainer does where it synchronises anyway (log steps, saves) and on every step on CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["NonFiniteError", "NonFiniteGuard", "first_non_finite"]


class NonFiniteError(RuntimeError):
    """Training cannot go on: too many non-finite steps in a row, or non-finite state to be saved."""


def first_non_finite(named: dict[str, Tensor]) -> str | None:
    """Name of the first floating-point tensor of ``named`` holding a NaN or infinity, or ``None``.

    One fused reduction over all tensors and one host read (meant for checkpoint time, not per step).
    """
    items = [(k, v) for k, v in named.items() if isinstance(v, Tensor) and v.is_floating_point()]
    if not items:
        return None
    flags = torch.stack([torch.isfinite(v).all().to(items[0][1].device) for _, v in items])
    bad = (~flags).nonzero()
    return items[int(bad[0])][0] if bad.numel() else None


class NonFiniteGuard:
    """Gate an optimiser step on the finiteness of the step's loss and gradient norm.

    Args:
        max_consecutive: stop (:class:`NonFiniteError`) after this many skipped steps in a row (>= 1).
        device: where the counters live (the model's device).

    Attributes: ``total`` (``float32 []``, skipped steps so far) and ``consecutive`` (``float32 []``,
    skipped steps in a row), both on ``device``; :meth:`state_dict` / :meth:`load_state_dict` keep
    them across a resume.
    """

    def __init__(self, max_consecutive: int, device: torch.device | str) -> None:
        if isinstance(max_consecutive, bool) or not isinstance(max_consecutive, int) or max_consecutive < 1:
            raise ValueError(f"max_consecutive must be an int >= 1, got {max_consecutive!r}")
        self.max_consecutive = max_consecutive
        self.total = torch.zeros((), device=device)
        self.consecutive = torch.zeros((), device=device)

    def step(self, optimizer: torch.optim.Optimizer, loss: Tensor, grad_norm: Tensor) -> Tensor:
        """Run ``optimizer.step()`` unless ``loss`` or ``grad_norm`` is non-finite; update the counts.

        Returns the ``bool []`` finiteness flag (on the device).
        """
        finite = torch.isfinite(loss.detach()).all() & torch.isfinite(grad_norm.detach()).all()
        if getattr(optimizer, "_step_supports_amp_scaling", False) and _is_fused(optimizer):
            optimizer.found_inf = (~finite).to(torch.float32)  # type: ignore[attr-defined]
            try:
                optimizer.step()
            finally:
                del optimizer.found_inf  # type: ignore[attr-defined]
        elif bool(finite):
            optimizer.step()
        bad = (~finite).to(self.total.dtype)
        self.total.add_(bad)
        self.consecutive.add_(bad).mul_(bad)  # +1 on a skipped step, 0 after a good one
        return finite

    def check_limit(self, step: int) -> None:
        """Raise :class:`NonFiniteError` when ``max_consecutive`` steps in a row were skipped (host read)."""
        run = int(self.consecutive.item())
        if run >= self.max_consecutive:
            raise NonFiniteError(
                f"stopped at step {step}: the last {run} steps had a non-finite loss or gradient norm "
                f"({int(self.total.item())} skipped in all; limit train.max_nonfinite_steps = "
                f"{self.max_consecutive}); parameters and optimiser state were left unchanged by them. "
                "Lower optim.lr, check the data for NaN/inf values, or enable optim.clip_grad."
            )

    def state_dict(self) -> dict[str, Tensor]:
        return {"total": self.total.clone(), "consecutive": self.consecutive.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.total.copy_(state["total"])
        self.consecutive.copy_(state["consecutive"])


def _is_fused(optimizer: torch.optim.Optimizer) -> bool:
    return all(bool(g.get("fused")) for g in optimizer.param_groups)
