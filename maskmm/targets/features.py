"""Feature targets at masked positions (MAMO's explicit MIM target).

The momentum image encoder sees the full patch sequence; the student predicts
its (layer-normalised) features at the masked patches. Masked positions are
taken in ascending patch order; rows are padded to a common length ``M`` with a
validity mask, so rows with different counts are handled exactly. With a
``PatchMasking`` (same count in every row) ``M`` comes from tensor shapes and
nothing is padded.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from maskmm._checks import check_choice, check_floating, check_int, check_positive_float, check_tensor

from ._common import layer_norm_features

__all__ = [
    "MaskedFeatureTargets",
    "MaskedFeatures",
    "gather_masked",
    "masked_feature_targets",
    "masked_positions",
    "select_by_mask",
]


class MaskedFeatures(NamedTuple):
    """Rows gathered at masked positions, padded per sample.

    features: ``[B, M, D]``; rows where ``valid`` is False are 0.
    valid: bool ``[B, M]``; True for the first ``count_b`` rows of sample ``b``.
    positions: long ``[B, M]``; patch index of each row (ascending), 0 where not valid.
    """

    features: torch.Tensor
    valid: torch.Tensor
    positions: torch.Tensor


def _mask_and_count(masking: Any, name: str) -> tuple[torch.Tensor, int | None]:
    """Accept a bool ``[B, N]`` tensor or a ``PatchMasking``-like object (``.mask``, ``.ids_keep``)."""
    if isinstance(masking, torch.Tensor):
        return check_tensor(name, masking, ndim=2, dtype=torch.bool), None
    mask = getattr(masking, "mask", None)
    ids_keep = getattr(masking, "ids_keep", None)
    if not isinstance(mask, torch.Tensor) or not isinstance(ids_keep, torch.Tensor):
        raise TypeError(
            f"{name} must be a bool [B, N] tensor or a PatchMasking, got {type(masking).__name__}"
        )
    mask = check_tensor(f"{name}.mask", mask, ndim=2, dtype=torch.bool)
    check_tensor(f"{name}.ids_keep", ids_keep, ndim=2)
    if ids_keep.shape[0] != mask.shape[0] or ids_keep.shape[1] > mask.shape[1]:
        raise ValueError(
            f"{name}.ids_keep has shape {list(ids_keep.shape)}, incompatible with mask {list(mask.shape)}"
        )
    return mask, mask.shape[1] - ids_keep.shape[1]


def masked_positions(mask: torch.Tensor, num_masked: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of masked positions per row, ascending, padded to ``M``.

    Args:
        mask: bool ``[B, N]``, True = masked.
        num_masked: ``M``; must be >= every row's count (rows beyond it are
            truncated). ``None`` uses the largest row count, which reads it on
            the host (a device sync on GPU).

    Returns:
        ``(positions long [B, M], valid bool [B, M])``; positions are 0 where not valid.
    """
    mask = check_tensor("mask", mask, ndim=2, dtype=torch.bool)
    b, n = mask.shape
    counts = mask.sum(dim=1)
    if num_masked is None:
        num_masked = int(counts.max()) if b > 0 and n > 0 else 0  # host sync, documented
    num_masked = check_int("num_masked", num_masked)
    if num_masked > n:
        raise ValueError(
            f"num_masked must be <= N = {n} (mask has shape {list(mask.shape)}), got {num_masked}"
        )
    # stable sort on "not masked" puts masked positions first, in ascending order
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices[:, :num_masked]
    valid = torch.arange(num_masked, device=mask.device).unsqueeze(0) < counts.unsqueeze(1)
    return torch.where(valid, order, torch.zeros_like(order)), valid


def gather_masked(x: torch.Tensor, mask: torch.Tensor, num_masked: int | None = None) -> MaskedFeatures:
    """Rows of ``x [B, N, D]`` at masked positions -> :class:`MaskedFeatures` (``[B, M, D]``).

    Differentiable in ``x`` (padded rows get zero gradient); keeps ``x``'s dtype.
    See :func:`masked_positions` for ``num_masked``.
    """
    x = check_tensor("x", x, ndim=3)
    mask = check_tensor("mask", mask, shape=(x.shape[0], x.shape[1]), dtype=torch.bool)
    if mask.device != x.device:
        raise ValueError(f"mask is on {mask.device} but x is on {x.device}; they must share a device")
    positions, valid = masked_positions(mask, num_masked)
    rows = torch.gather(x, 1, positions.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    rows = rows * valid.unsqueeze(-1).to(rows.dtype)
    return MaskedFeatures(rows, valid, positions)


def select_by_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flat selection ``x[mask]``: ``[B, N, ...]`` -> ``[num_masked_total, ...]``, row-major order.

    Boolean indexing sizes its output from the data: one host sync on GPU. Use
    :func:`gather_masked` where a fixed shape is wanted.
    """
    x = check_tensor("x", x)
    if x.dim() < 2:
        raise ValueError(f"x must have shape [B, N, ...], got {list(x.shape)}")
    check_tensor("mask", mask, shape=(x.shape[0], x.shape[1]), dtype=torch.bool)
    if mask.device != x.device:
        raise ValueError(f"mask is on {mask.device} but x is on {x.device}; they must share a device")
    return x[mask]


def masked_feature_targets(
    features: torch.Tensor,
    masking: Any,
    *,
    norm: Literal["layer", "none"] = "layer",
    eps: float = 1e-6,
    has_cls: bool | None = None,
    num_masked: int | None = None,
) -> MaskedFeatures:
    """Teacher features at masked patches, as detached fp32 targets.

    Args:
        features: teacher image-encoder output for the FULL patch sequence,
            ``[B, N, D]`` or ``[B, 1 + N, D]`` (CLS first).
        masking: bool ``[B, N]`` (True = masked) or a ``PatchMasking``.
        norm: ``"layer"`` (over ``D``, no affine, fp32; the default MIM target)
            or ``"none"``.
        eps: layer-norm epsilon.
        has_cls: whether ``features`` starts with a CLS token; ``None`` infers it
            from the length (``1 + N`` -> True, ``N`` -> False).
        num_masked: padded length ``M`` for a bool mask (see
            :func:`masked_positions`); ignored for a ``PatchMasking``, whose
            count comes from its shapes (no host sync).

    Returns:
        :class:`MaskedFeatures` with fp32 ``features [B, M, D]`` (0 where not
        valid). No masked position gives ``[B, 0, D]``.
    """
    features = check_floating("features", features, ndim=3)
    mask, count = _mask_and_count(masking, "masking")
    check_choice("norm", norm, ("layer", "none"))
    eps = check_positive_float("eps", eps)
    b, n = mask.shape
    if features.shape[0] != b:
        raise ValueError(f"features has batch {features.shape[0]} but the mask has batch {b}")
    if has_cls is None:
        if features.shape[1] not in (n, n + 1):
            raise ValueError(
                f"features must have shape [B, N, D] or [B, 1 + N, D] with N = {n} from the mask, "
                f"got {list(features.shape)}"
            )
        has_cls = features.shape[1] == n + 1
    elif not isinstance(has_cls, bool):
        raise TypeError(f"has_cls must be a bool or None, got {type(has_cls).__name__}")
    expected = n + 1 if has_cls else n
    if features.shape[1] != expected:
        raise ValueError(
            f"features must have shape [{b}, {expected}, D] (has_cls={has_cls}), got {list(features.shape)}"
        )
    if mask.device != features.device:
        raise ValueError(f"masking is on {mask.device} but features are on {features.device}")
    if count is not None:
        num_masked = count
    with torch.no_grad():
        patches = features[:, 1:] if has_cls else features
        out = gather_masked(patches.detach(), mask, num_masked)
        rows = layer_norm_features(out.features, eps) if norm == "layer" else out.features.float()
        rows = rows * out.valid.unsqueeze(-1)
    return MaskedFeatures(rows, out.valid, out.positions)


class MaskedFeatureTargets(nn.Module):
    """Module form of :func:`masked_feature_targets` (no parameters)."""

    def __init__(self, *, norm: Literal["layer", "none"] = "layer", eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = check_choice("norm", norm, ("layer", "none"))
        self.eps = check_positive_float("eps", eps)

    def forward(
        self,
        features: torch.Tensor,
        masking: Any,
        *,
        has_cls: bool | None = None,
        num_masked: int | None = None,
    ) -> MaskedFeatures:
        """``features [B, (1+)N, D]``, mask ``[B, N]`` -> :class:`MaskedFeatures` ``[B, M, D]``."""
        return masked_feature_targets(
            features, masking, norm=self.norm, eps=self.eps, has_cls=has_cls, num_masked=num_masked
        )

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, eps={self.eps}"
