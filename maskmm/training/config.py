"""One configuration system for every recipe: structured dataclass configs, YAML presets and dotted
command-line overrides, parsed, merged and type-checked by OmegaConf.

A recipe's config is a dataclass deriving from :class:`RunConfig` (the sections every run has:
``optim``, ``train``, ``data``, ``eval``, ``log``) and adding the sections its parts own (e.g.
``model``: :class:`maskmm.nn.EncodersConfig`, ``itc``: :class:`maskmm.losses.ITCConfig`). Each
section is a dataclass owned by the component it configures and checks its own values
(``check(prefix)``); the recipe's ``validate()`` adds the cross-section checks.

:func:`load_config` layers the schema's defaults, a YAML preset (a name looked up in the recipe's
preset folder, or a path) and ``section.field=value`` overrides (YAML syntax: ``1e-4``, ``true``,
``[val, heldout]``). Unknown fields, wrong types and values outside a ``Literal`` raise a
``ValueError`` naming the field; so do non-finite floats anywhere in the tree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

__all__ = [
    "DataConfig",
    "LogConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "check_positive",
    "check_ratio_value",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "find_preset",
    "load_config",
]

C = TypeVar("C")


# --------------------------------------------------------------------------- value checks


def check_positive(path: str, v: float, *, zero_ok: bool = False) -> None:
    """``v > 0`` (``>= 0`` with ``zero_ok``), else ``ValueError`` naming ``path``."""
    if v < 0 or (v == 0 and not zero_ok):
        raise ValueError(f"config field {path!r} must be {'>= 0' if zero_ok else '> 0'}, got {v}")


def check_ratio_value(path: str, v: float, *, one_ok: bool = False) -> None:
    """``v`` in ``[0, 1)`` (``[0, 1]`` with ``one_ok``), else ``ValueError`` naming ``path``."""
    if not (0.0 <= v < 1.0 or (one_ok and v == 1.0)):
        raise ValueError(f"config field {path!r} must lie in [0, {'1]' if one_ok else '1)'}, got {v}")


def _check_finite(obj: Any, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{path}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"config field {path!r} must be a finite number, got {value!r}")


# --------------------------------------------------------------------------- shared sections


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay to ``min_lr_ratio * lr``; ``clip_grad = 0``: no clipping."""

    lr: float = 1e-4
    weight_decay: float = 0.02
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    clip_grad: float = 0.0

    def check(self, p: str = "optim.") -> None:
        check_positive(f"{p}lr", self.lr)
        check_positive(f"{p}weight_decay", self.weight_decay, zero_ok=True)
        check_ratio_value(f"{p}beta1", self.beta1)
        check_ratio_value(f"{p}beta2", self.beta2)
        check_positive(f"{p}eps", self.eps)
        check_positive(f"{p}warmup_steps", self.warmup_steps, zero_ok=True)
        check_ratio_value(f"{p}min_lr_ratio", self.min_lr_ratio, one_ok=True)
        check_positive(f"{p}clip_grad", self.clip_grad, zero_ok=True)


@dataclass
class TrainConfig:
    """The run. ``max_seconds > 0`` stops training after the step during which the training
    wall-clock (without the periodic ``eval_every`` evaluations and checkpoint saves) passed
    ``max_seconds``; 0 means no limit. The learning-rate schedule keeps ``steps`` as its horizon,
    so with a time budget set ``steps`` to about the number of steps the budget allows.

    ``max_nonfinite_steps``: a step whose loss or gradient norm is NaN/inf is skipped (no update;
    counted and logged as ``nonfinite_steps``); this many skipped steps in a row stop the run with
    an error. ``dist_timeout``: seconds any collective may wait under DDP before the run fails
    (a frozen rank then ends the job instead of hanging it). ``init_from``: a run folder or checkpoint
    whose weights start this run (fine-tuning): tensors of matching names are loaded, ViT position
    tables resampled to a new resolution, the rest (e.g. a queue of another size) left as built and
    reported; optimiser, schedule and step start afresh."""

    batch_size: int = 64
    steps: int = 1000
    grad_accum: int = 1
    seed: int = 0
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"
    compile: bool = False
    device: str = "auto"
    num_workers: int = 0
    threads: int = 0
    out_dir: str = "runs/run"
    save_every: int = 0
    log_every: int = 10
    eval_every: int = 0
    max_seconds: float = 0.0
    max_nonfinite_steps: int = 10
    dist_timeout: float = 600.0
    init_from: str = ""

    def check(self, p: str = "train.") -> None:
        check_positive(f"{p}batch_size", self.batch_size)
        check_positive(f"{p}steps", self.steps, zero_ok=True)
        check_positive(f"{p}grad_accum", self.grad_accum)
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"config field '{p}grad_accum' ({self.grad_accum}) must divide "
                f"{p}batch_size ({self.batch_size})"
            )
        for name in ("num_workers", "threads", "save_every", "log_every", "eval_every", "seed"):
            check_positive(f"{p}{name}", getattr(self, name), zero_ok=True)
        check_positive(f"{p}max_seconds", self.max_seconds, zero_ok=True)
        check_positive(f"{p}max_nonfinite_steps", self.max_nonfinite_steps)
        check_positive(f"{p}dist_timeout", self.dist_timeout)
        if self.init_from and not Path(self.init_from).exists():
            raise ValueError(f"config field '{p}init_from' = {self.init_from!r}: no such run folder or file")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(
                f"config field '{p}device' must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}"
            )


@dataclass
class DataConfig:
    """Training data. ``kind``: ``"shapes"`` (the built-in procedural set), ``"json"`` (ALBEF-style
    annotation files ``ann_file``, one path or a list, with images under ``image_root``) or
    ``"shards"`` (WebDataset tar shards ``shards``: a brace pattern such as
    ``/data/cc3m/{00000..00331}.tar``, a glob, or a list of them; read as a resumable stream, see
    :class:`maskmm.data.shards.ShardStream`). ``tokenizer``: a local Hugging Face tokenizer folder
    (empty: the built-in word-level tokenizer of the shapes data; required for files and shards).
    ``train_size``: the built-in set's size; for JSON files, ``0`` uses every pair and ``n > 0`` a
    random subset of ``n`` pairs drawn with ``seed``; unused for shards. ``seed`` also seeds the
    per-epoch shard order and the per-item augmentation draws.

    ``train_transform`` (real data only; the built-in images are rendered at their size and never
    transformed): ``"crop_flip"`` = random resized crop to ``image_size`` keeping an area fraction in
    ``[crop_scale_min, 1]`` + horizontal flip; ``"randaugment"`` adds ``randaugment_ops`` RandAugment
    operations at ``randaugment_magnitude`` (0-10); ``"none"`` squashes each image to ``image_size``.
    See :mod:`maskmm.data.real_transforms`.

    ``pair_facts``: batches carry what each caption asserts and what each image shows
    (:mod:`maskmm.data.facts`: the scene's facts for the built-in data, the normalised caption text
    for any other), and the recipes treat a caption that is true of another image of the (global)
    batch as a positive of that image in ITC and never draw it as its ITM negative. ``False``: every
    other pair of the batch is a negative (only ``image_ids`` are positives)."""

    kind: Literal["shapes", "json", "shards"] = "shapes"
    image_size: int = 64
    max_text_len: int = 32
    normalize: Literal["imagenet", "clip", "none"] = "imagenet"
    seed: int = 0
    train_size: int = 100000
    ann_file: str | list[str] = ""
    image_root: str = ""
    shards: str | list[str] = ""
    tokenizer: str = ""
    train_transform: Literal["none", "crop_flip", "randaugment"] = "crop_flip"
    crop_scale_min: float = 0.2
    randaugment_ops: int = 2
    randaugment_magnitude: int = 7
    pair_facts: bool = True

    def check(self, p: str = "data.") -> None:
        check_positive(f"{p}image_size", self.image_size)
        check_positive(f"{p}max_text_len", self.max_text_len)
        check_positive(f"{p}train_size", self.train_size, zero_ok=self.kind != "shapes")
        if self.kind == "json" and not self.ann_file:
            raise ValueError(
                f"config field '{p}ann_file' (a file or a list of files) is required with {p}kind='json'"
            )
        if self.kind == "shards" and not self.shards:
            raise ValueError(
                f"config field '{p}shards' (a shard pattern such as /data/cc3m/{{00000..00331}}.tar, a glob "
                f"or a list of them) is required with {p}kind='shards'"
            )
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ValueError(
                f"config field '{p}crop_scale_min' must lie in (0, 1], got {self.crop_scale_min}"
            )
        check_positive(f"{p}randaugment_ops", self.randaugment_ops)
        if not 0 <= self.randaugment_magnitude <= 10:
            raise ValueError(
                f"config field '{p}randaugment_magnitude' must lie in [0, 10], "
                f"got {self.randaugment_magnitude}"
            )


@dataclass
class LogConfig:
    progress: bool = True
    plot: bool = True
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "maskmm"

    def check(self, p: str = "log.") -> None:
        return None


def _eval_config() -> Any:
    from maskmm.evaluation.config import EvalConfig

    return EvalConfig()


@dataclass
class RunConfig:
    """The sections every recipe's config has. Recipes derive from it and add their own sections;
    ``validate()`` runs every section's ``check`` and the recipe's cross-section checks
    (:meth:`check_recipe`, which a recipe overrides)."""

    name: str = "custom"
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: Any = field(default_factory=_eval_config)  # maskmm.evaluation.EvalConfig
    log: LogConfig = field(default_factory=LogConfig)

    def validate(self: C) -> C:
        """Check every section and the cross-section rules; return ``self``."""
        _check_finite(self)
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "check"):
                section.check(f"{f.name}.")
        self.check_recipe()
        return self

    def check_recipe(self) -> None:
        """Cross-section checks of a recipe (override in a recipe's config)."""
        return None


# --------------------------------------------------------------------------- loading


def find_preset(name_or_path: str | Path, preset_dirs: Iterable[Path] = ()) -> Path:
    """A YAML path as given, or ``<dir>/<name>.yaml`` from the first of ``preset_dirs`` that has it."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ValueError(f"config file {str(p)!r} does not exist")
        return p
    dirs = list(preset_dirs)
    for d in dirs:
        candidate = d / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted({q.stem for d in dirs for q in d.glob("*.yaml")})
    raise ValueError(f"unknown preset {str(name_or_path)!r}; known presets: {known} (or a .yaml path)")


def _merge(schema: type[C], layers: Sequence[Any], overrides: Sequence[str] = ()) -> C:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), *layers, *(_dotlist([o]) for o in overrides))
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        msg = str(e).split("\n")[0]
        if not key:  # e.g. a value for a whole section: name the override that did it
            key = next((o for o in overrides if not _merges(schema, layers, o)), None)
        raise ValueError(f"config field {key!r}: {msg}" if key else f"config: {msg}") from None
    return obj.validate() if hasattr(obj, "validate") else obj  # type: ignore[return-value]


def _merges(schema: type, layers: Sequence[Any], override: str) -> bool:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.merge(OmegaConf.structured(schema), *layers, _dotlist([override]))
    except OmegaConfBaseException:
        return False
    return True


def _dotlist(overrides: Sequence[str]) -> Any:
    from omegaconf import OmegaConf

    for item in overrides:
        if not isinstance(item, str) or "=" not in item or not item.partition("=")[0].strip():
            raise ValueError(f"override {item!r} must look like section.field=value")
    return OmegaConf.from_dotlist([o.strip() for o in overrides])


def load_config(
    schema: type[C],
    source: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    preset_dirs: Iterable[Path] = (),
) -> C:
    """Defaults of ``schema`` <- the YAML ``source`` (preset name or path) <- ``overrides``; validated.

    Example::

        cfg = load_config(MAMOConfig, "tiny", ["train.steps=50", "losses.mrm=false"], preset_dirs=[...])
    """
    from omegaconf import OmegaConf

    layers = []
    if source is not None:
        path = find_preset(source, preset_dirs)
        loaded = OmegaConf.load(path)
        if not OmegaConf.is_dict(loaded):
            raise ValueError(f"config file {str(path)!r} must hold a mapping at the top level")
        layers.append(loaded)
    return _merge(schema, layers, list(overrides))


def config_from_dict(schema: type[C], data: dict[str, Any], overrides: Sequence[str] = ()) -> C:
    """Build and validate a ``schema`` config from a nested dict (e.g. one saved in a checkpoint)."""
    from omegaconf import OmegaConf

    if not isinstance(data, dict):
        raise TypeError(f"config must be a mapping, got {type(data).__name__}")
    return _merge(schema, [OmegaConf.create(data)], list(overrides))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON serialisable) of a config dataclass."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Any, path: str | Path) -> None:
    """Write ``cfg`` as YAML (loadable again by :func:`load_config`)."""
    import yaml

    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)
