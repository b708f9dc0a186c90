"""Recipes: what the one trainer and evaluator need to know of a pretraining method.

A **recipe** is a config dataclass (deriving from :class:`~maskmm.training.config.RunConfig`), a
builder (config + tokenizer ids -> objective module) and a folder of YAML presets. The **objective**
is an ``nn.Module`` with the small protocol :class:`Objective`; the trainer calls nothing else.

Recipes are found by name (the built-in ones below, imported only when asked for, so this package
never imports :mod:`maskmm.models`), by import path ``"package.module:attribute"`` (the package must
be importable: installed or on ``PYTHONPATH``) or by file ``"path/to/file.py:attribute"``, where the
attribute is a :class:`Recipe` or a function returning one. A user's method plugs in without
editing maskmm; checkpoints store the recipe's import path (a file's absolute path), so
``maskmm-eval`` finds it again::

    maskmm-train --recipe mypkg.flip:RECIPE --config path/to/flip.yaml
    maskmm-train --recipe examples/flip_recipe.py:RECIPE --config examples/flip_tiny.yaml
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .config import RunConfig, config_from_dict, load_config

__all__ = [
    "BUILTIN_RECIPES",
    "Objective",
    "Recipe",
    "StepOutput",
    "TokenizerIds",
    "get_recipe",
]

#: Built-in recipes by name, as import paths (resolved lazily by :func:`get_recipe`).
BUILTIN_RECIPES: dict[str, str] = {
    "mamo": "maskmm.models.mamo.recipe:RECIPE",
    "maskvlm": "maskmm.models.maskvlm.recipe:RECIPE",
    "semmim": "maskmm.models.semmim.recipe:RECIPE",
    "albef": "maskmm.models.albef.recipe:RECIPE",
    "clip": "maskmm.models.clip.recipe:RECIPE",
}


class StepOutput(NamedTuple):
    """One training step of an objective: ``loss`` (fp32 scalar, attached to the graph) and
    ``stats`` (name -> detached scalar tensor; no host sync has happened)."""

    loss: Tensor
    stats: dict[str, Tensor]


class TokenizerIds(NamedTuple):
    """What a builder needs of the tokenizer."""

    vocab_size: int
    pad_id: int
    mask_id: int
    special_ids: tuple[int, ...]

    @classmethod
    def of(cls, tokenizer: Any) -> TokenizerIds:
        return cls(
            int(tokenizer.vocab_size),
            int(tokenizer.pad_id),
            int(tokenizer.mask_id),
            tuple(int(i) for i in tokenizer.special_ids),
        )


@runtime_checkable
class Objective(Protocol):
    """The protocol of a recipe's objective module (an ``nn.Module``).

    - ``forward(batch, *, step, generator) -> StepOutput``: ``batch`` holds ``images float [B, 3, H, W]``,
      ``input_ids long [B, L]``, ``text_valid bool [B, L]`` (``True`` = real token) and
      ``image_ids long [B]`` (pairs sharing an id are positives of each other); ``step`` is the
      0-based optimiser step (schedules read it); every random draw uses ``generator``, which is
      the same on every rank (draws are made for the global batch).
    - ``after_optimizer_step(step)``: called after each optimiser step (EMA teachers update here).
    - ``encode_image(images) -> (states [N, 1 + P, D], feat [N, E] | None)`` and
      ``encode_text(input_ids, valid) -> (states [N, L, D], feat [N, E] | None)``: the evaluation's
      encoders (``feat`` is the ITC feature, ``None`` without ITC).
    - ``itm_logits(image_states, text_states, text_valid) -> [N, 2]`` where ``has_itm`` is true.
    - ``has_itc``, ``has_itm``: which scorers the evaluation may use.
    - ``find_unused_parameters``: whether DDP must look for parameters without gradient (a loss
      that joins the objective later).
    """

    has_itc: bool
    has_itm: bool
    find_unused_parameters: bool

    def __call__(self, batch: Mapping[str, Tensor], *, step: int, generator: torch.Generator) -> Any: ...

    def after_optimizer_step(self, step: int) -> None: ...

    def encode_image(self, images: Tensor) -> tuple[Tensor, Tensor | None]: ...

    def encode_text(self, input_ids: Tensor, valid: Tensor) -> tuple[Tensor, Tensor | None]: ...


@dataclass(frozen=True)
class Recipe:
    """A pretraining method as the trainer sees it.

    Args:
        name: the recipe's name (stored in checkpoints; a built-in name or an import path).
        config: its config dataclass (a :class:`RunConfig`).
        build: ``build(cfg, ids: TokenizerIds) -> nn.Module`` implementing :class:`Objective`.
        preset_dirs: folders of ``<name>.yaml`` presets (``--config tiny``).
    """

    name: str
    config: type[RunConfig]
    build: Callable[[Any, TokenizerIds], nn.Module]
    preset_dirs: tuple[Path, ...] = field(default_factory=tuple)

    def load_config(self, source: str | Path | None = None, overrides: Sequence[str] = ()) -> Any:
        """Defaults <- preset ``source`` (a name in :attr:`preset_dirs` or a YAML path) <- ``overrides``."""
        return load_config(self.config, source, overrides, preset_dirs=self.preset_dirs)

    def config_from_dict(self, data: dict[str, Any], overrides: Sequence[str] = ()) -> Any:
        return config_from_dict(self.config, data, overrides)

    def presets(self) -> list[str]:
        return sorted({p.stem for d in self.preset_dirs for p in Path(d).glob("*.yaml")})


def _import_file(path: str, file: str) -> Any:
    p = Path(file).resolve()
    if not p.is_file():
        raise ValueError(f"recipe {path!r}: no such file {str(p)!r}")
    name = f"maskmm_user_recipe_{abs(hash(str(p)))}"
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # dataclasses and pickling look classes up by module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _resolve(path: str) -> Any:
    module_name, _, attr = path.rpartition(":")
    if not module_name or not attr:
        raise ValueError(
            f"recipe {path!r} must be a built-in name, 'package.module:attribute' or 'file.py:attribute'"
        )
    try:
        if module_name.endswith(".py"):
            module = _import_file(path, module_name)
        else:
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"recipe {path!r}: cannot import {module_name!r} ({e})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"recipe {path!r}: module {module_name!r} has no attribute {attr!r}") from None


def get_recipe(name: str | Recipe, extra: Iterable[tuple[str, str]] = ()) -> Recipe:
    """The :class:`Recipe` called ``name``: a built-in name (:data:`BUILTIN_RECIPES`), or an import path
    ``"package.module:attribute"`` naming a :class:`Recipe` or a function that returns one."""
    if isinstance(name, Recipe):
        return name
    if not isinstance(name, str) or not name:
        raise TypeError(f"recipe must be a name or an import path, got {name!r}")
    table = {**BUILTIN_RECIPES, **dict(extra)}
    if ":" not in name and name not in table:
        raise ValueError(
            f"unknown recipe {name!r}; built-in recipes: {sorted(table)} (or package.module:attr)"
        )
    path = table.get(name, name)
    found = _resolve(path)
    if not isinstance(found, Recipe) and callable(found):
        found = found()
    if not isinstance(found, Recipe):
        raise TypeError(f"recipe {name!r} resolves to {type(found).__name__}, not a maskmm.training.Recipe")
    if name not in table:  # a user's recipe: remember where it came from (checkpoints store the name)
        module, _, attr = name.rpartition(":")
        where = f"{Path(module).resolve()}:{attr}" if module.endswith(".py") else name
        found = dataclasses.replace(found, name=where)
    return found
