"""Start a model from another run's weights (fine-tuning): load what matches, resample what must be."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from maskmm.nn import resample_pos_embed

__all__ = ["InitReport", "load_matching"]


@dataclass
class InitReport:
    """What :func:`load_matching` did: ``loaded`` / ``resampled`` / ``skipped`` (name -> reason) /
    ``missing`` (target tensors the source has no entry for) key lists."""

    loaded: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        def some(keys: list[str]) -> str:
            return f"{len(keys)}" + (
                f" ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})" if keys else ""
            )

        return (
            f"loaded {len(self.loaded)} tensors; resampled {some(self.resampled)}; "
            f"skipped {some([f'{k}: {r}' for k, r in self.skipped.items()])}; missing {some(self.missing)}"
        )


def _is_pos_embed(name: str, t: Tensor) -> bool:
    return name.endswith("pos_embed") and t.dim() == 3 and t.shape[0] == 1


def load_matching(model: nn.Module, state: Mapping[str, Tensor]) -> InitReport:
    """Copy every tensor of ``state`` into ``model``'s state of the same name and shape. A ViT
    position table (``*pos_embed [1, 1 + N, D]``) of another square grid is resampled bicubically
    (:func:`maskmm.nn.resample_pos_embed`), so a model pretrained at 224 px fine-tunes at 384 px.
    Anything else that differs in shape is skipped and reported, never broadcast or truncated."""
    own = model.state_dict()
    report = InitReport()
    new: dict[str, Tensor] = {}
    for name, value in state.items():
        if name not in own or not isinstance(value, Tensor):
            report.skipped[name] = "not in the model"
            continue
        target = own[name]
        if value.shape == target.shape:
            new[name] = value
            report.loaded.append(name)
        elif _is_pos_embed(name, value) and _is_pos_embed(name, target) and value.shape[2] == target.shape[2]:
            side = round((target.shape[1] - 1) ** 0.5)
            if side * side != target.shape[1] - 1:
                report.skipped[name] = f"target grid of {target.shape[1] - 1} patches is not square"
                continue
            new[name] = resample_pos_embed(value.to(target.dtype), (side, side))
            report.resampled.append(name)
        else:
            report.skipped[name] = f"shape {list(value.shape)} vs {list(target.shape)}"
    report.missing = [k for k in own if k not in new and isinstance(own[k], Tensor)]
    with torch.no_grad():
        model.load_state_dict({**own, **new}, strict=True)
    return report
