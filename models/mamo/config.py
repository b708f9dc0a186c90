"""Configuration of the reference MAMO model and its training run.

A :class:`MAMOConfig` is a tree of dataclasses. Presets live beside this file as YAML
(``tiny.yaml``, ``base.yaml``); copy one, edit it, and pass its path wherever a preset
name is accepted. Any field can be overridden from the command line with
``--set section.field=value`` (values are parsed as YAML scalars/lists, then checked
against the field's type). Every load ends with :meth:`MAMOConfig.validate`, which
raises ``ValueError``/``TypeError`` naming the offending field.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from maskmm.training.schedule import linear_ramp

__all__ = [
    "DataConfig",
    "EMAConfig",
    "EvalConfig",
    "ITCConfig",
    "ITMConfig",
    "LogConfig",
    "LossesConfig",
    "MAMOConfig",
    "MaskingConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "preset_path",
]

PRESET_DIR = Path(__file__).resolve().parent


@dataclass
class ModelConfig:
    """Encoder sizes. ``vocab_size = 0`` means: take it from the tokenizer.

    ``init``: ``"bert"`` = truncated normal with std 0.02 everywhere (BERT / ViT); ``"xavier"``
    re-initialises the ``Linear`` layers of the image, text and fusion encoders Xavier-uniform
    (:func:`maskmm.nn.init.init_linear_xavier`), which lets narrow encoders trained from scratch
    leave the initial plateau sooner (ITM especially).
    """

    image_size: int = 64
    patch_size: int = 8
    vision_dim: int = 128
    vision_depth: int = 4
    vision_heads: int = 4
    text_dim: int = 128
    text_depth: int = 2
    text_heads: int = 4
    fusion: Literal["merged", "cross"] = "merged"
    fusion_depth: int = 2
    fusion_heads: int = 4
    mlp_ratio: float = 4.0
    vocab_size: int = 0
    max_text_len: int = 32
    embed_dim: int = 64
    dropout: float = 0.0
    drop_path: float = 0.0
    attention_backend: str = "auto"
    grad_checkpointing: bool = False
    init: Literal["bert", "xavier"] = "bert"


@dataclass
class MaskingConfig:
    """Joint masking of the masked-modeling view (image patches and text tokens in one pass)."""

    image_ratio: float = 0.75
    text_ratio: float = 0.25
    mode: Literal["drop", "token"] = "drop"
    mask_prob: float = 0.8
    random_prob: float = 0.1


@dataclass
class LossesConfig:
    """Which losses run, their weights and their options.

    ``itm_start_step`` / ``masked_start_step``: ITM, and the masked view (MLM, MRM, MIM), join
    the objective at these 0-based steps (0 = from the first step, as MAMO). MAMO starts from
    pretrained unimodal encoders; a model trained from scratch on a small budget can stand in for
    that with a phase of ITC alone, whose steps cost a third of a full one (the ITM hard-negative
    schedule, ``itm.*``, counts from ``itm_start_step``).
    """

    itc: bool = True
    itm: bool = True
    mlm: bool = True
    mrm: bool = True
    mim: bool = True
    itc_weight: float = 1.0
    itm_weight: float = 1.0
    mlm_weight: float = 1.0
    mrm_weight: float = 1.0
    mim_weight: float = 1.0
    # MRM (implicit target): top-K teacher fusion layers, each normalised, averaged.
    mrm_top_k: int = 2
    mrm_kind: Literal["smooth_l1", "mse", "cosine"] = "smooth_l1"
    mrm_layer_norm: Literal["instance", "layer", "none"] = "layer"
    mrm_final_norm: Literal["none", "layer", "instance"] = "none"
    mrm_scale_by_dim: bool = True
    mrm_beta: float = 1.0
    # MIM (explicit target): teacher image-encoder features of the masked patches.
    mim_decoder_depth: int = 1
    mim_kind: Literal["smooth_l1", "mse", "cosine"] = "smooth_l1"
    mim_target_norm: bool = True
    mim_scale_by_dim: bool = True
    # MLM (explicit target) with optional distillation from the teacher.
    mlm_distill: bool = False
    # steps at which ITM and the masked view (MLM, MRM, MIM) join the objective
    itm_start_step: int = 0
    masked_start_step: int = 0

    def enabled(self) -> tuple[str, ...]:
        """Names of the enabled losses, in the order ITC, ITM, MLM, MRM, MIM."""
        return tuple(n for n in ("itc", "itm", "mlm", "mrm", "mim") if getattr(self, n))

    def active_at(self, step: int) -> tuple[str, ...]:
        """The enabled losses computed at the 0-based ``step``."""
        start = {"itm": self.itm_start_step, "mlm": self.masked_start_step}
        start["mrm"] = start["mim"] = self.masked_start_step
        return tuple(n for n in self.enabled() if step >= start.get(n, 0))


@dataclass
class ITCConfig:
    """ALBEF ITC. ``momentum_keys``: keys (and the queue) are the EMA teacher's features, with
    momentum distillation (ALBEF); ``False``: keys are the online features of the global batch
    (CLIP style, no distillation), which learns much faster from scratch. ``pool``: the ITC
    feature is the CLS state (ALBEF) or the mean of the valid non-CLS states.
    ``queue_size``: queued keys are meant for momentum keys; with online keys the queue holds
    stale features of a fast-moving encoder, whose common push collapses the features of a model
    trained from scratch (ITC at chance), so keep it 0 there (as MoCo without momentum).
    ``learnable_temperature``: ALBEF learns it (clamped to [0.001, 0.5]); with a high learning
    rate from scratch it can run to the lower clamp, so small runs may keep it fixed."""

    momentum_keys: bool = True
    pool: Literal["cls", "mean"] = "cls"
    queue_size: int = 1024
    temperature: float = 0.07
    learnable_temperature: bool = True
    alpha: float = 0.4
    alpha_warmup_steps: int = 0
    distill: bool = True


@dataclass
class ITMConfig:
    """ALBEF ITM negatives. Each image's negative text (and each text's negative image) is drawn
    from ``hardness * softmax(ITC similarity) + (1 - hardness) * uniform`` over the other pairs of
    the batch (:func:`maskmm.losses.sample_hard_negatives`). ``hardness`` is 0 for the first
    ``easy_steps`` steps, then ramps linearly to ``hardness`` over ``ramp_steps``. ALBEF draws hard
    negatives from the first step (``easy_steps = ramp_steps = 0``), with a pretrained text
    encoder; a matching head trained from scratch on hard negatives alone stays at the class prior
    (it answers "no match" to every pair), so small runs from scratch start with random ones."""

    hardness: float = 1.0
    easy_steps: int = 0
    ramp_steps: int = 0

    def hardness_at(self, step: int) -> float:
        """Hardness of the negatives drawn at the 0-based ``step``."""
        if step < self.easy_steps:
            return 0.0
        return linear_ramp(step - self.easy_steps, self.ramp_steps, self.hardness)


@dataclass
class EMAConfig:
    decay: float = 0.995
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    final_decay: float = 0.995
    anneal_steps: int = 0


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.02
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    clip_grad: float = 0.0


@dataclass
class TrainConfig:
    """The run. ``max_seconds > 0`` stops training after the step during which the training
    wall-clock (without the periodic ``eval_every`` evaluations and checkpoint saves) passed
    ``max_seconds``; 0 means no limit. The learning-rate schedule keeps ``steps`` as its horizon,
    so with a time budget set ``steps`` to about the number of steps the budget allows.

    ``max_nonfinite_steps``: a step whose loss or gradient norm is NaN/inf is skipped (no update;
    counted and logged as ``nonfinite_steps``); this many skipped steps in a row stop the run with
    an error. ``dist_timeout``: seconds any collective may wait under DDP before the run fails
    (a frozen rank then ends the job instead of hanging it)."""

    batch_size: int = 64
    steps: int = 1000
    grad_accum: int = 1
    seed: int = 0
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"
    compile: bool = False
    device: str = "auto"
    num_workers: int = 0
    threads: int = 0
    out_dir: str = "runs/mamo"
    save_every: int = 0
    log_every: int = 10
    eval_every: int = 0
    max_seconds: float = 0.0
    max_nonfinite_steps: int = 10
    dist_timeout: float = 600.0


@dataclass
class DataConfig:
    kind: Literal["shapes", "json"] = "shapes"
    image_size: int = 64
    max_text_len: int = 32
    normalize: Literal["imagenet", "clip", "none"] = "imagenet"
    seed: int = 0
    train_size: int = 100000
    ann_file: str = ""
    image_root: str = ""
    tokenizer: str = ""


@dataclass
class EvalConfig:
    splits: list[str] = field(default_factory=lambda: ["val", "heldout"])
    num_candidates: int = 1000
    rerank_k: int = 16
    batch_size: int = 128
    finegrained_samples: int = 200
    grounding_samples: int = 100
    itm: bool = True


@dataclass
class LogConfig:
    progress: bool = True
    plot: bool = True
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "maskmm"


@dataclass
class MAMOConfig:
    """Full configuration: model, masking, losses, teacher, optimiser, run, data, eval, logging."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    losses: LossesConfig = field(default_factory=LossesConfig)
    itc: ITCConfig = field(default_factory=ITCConfig)
    itm: ITMConfig = field(default_factory=ITMConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def validate(self) -> MAMOConfig:
        """Check value ranges and cross-field consistency; return ``self``."""
        _validate(self)
        return self


# --------------------------------------------------------------------------- dict <-> dataclass


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON serialisable) of a config dataclass."""
    return dataclasses.asdict(cfg)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(path: str, value: Any, tp: Any) -> Any:
    """Check/convert ``value`` against annotation ``tp``; raise naming ``path``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"config field {path!r} must be a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, path)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ValueError(f"config field {path!r} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(path, value, arg)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise TypeError(f"config field {path!r}: {value!r} matches none of {tp}: {errors}")
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"config field {path!r} must be a list, got {type(value).__name__}")
        return [_coerce(f"{path}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"config field {path!r} must be a bool, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise TypeError(f"config field {path!r} must be an int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise TypeError(f"config field {path!r} must be a float, got {value!r}") from None
            else:
                raise TypeError(f"config field {path!r} must be a float, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"config field {path!r} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"config field {path!r} must be a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = prefix or "top level"
        raise ValueError(f"unknown config field(s) {unknown} in {where}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(path, value, hints[key])
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> MAMOConfig:
    """Build and validate a :class:`MAMOConfig` from a nested dict (unknown keys are errors)."""
    if not isinstance(data, dict):
        raise TypeError(f"config must be a mapping, got {type(data).__name__}")
    return _from_dict(MAMOConfig, data).validate()


# --------------------------------------------------------------------------- presets, overrides


def preset_path(name_or_path: str | Path) -> Path:
    """Resolve a preset name (``"tiny"``, ``"base"``) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ValueError(f"config file {str(p)!r} does not exist")
        return p
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(q.stem for q in PRESET_DIR.glob("*.yaml"))
        raise ValueError(f"unknown preset {str(name_or_path)!r}; known presets: {known} (or a .yaml path)")
    return candidate


def _parse_scalar(text: str) -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is a core dependency
        import json

        try:
            return json.loads(text)
        except ValueError:
            return text
    return yaml.safe_load(text) if text.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``["a.b=value", ...]`` to a nested dict (in place) and return it.

    The path must name an existing field of :class:`MAMOConfig` (checked by the final
    :func:`config_from_dict`); the value is parsed as YAML (``1e-4``, ``true``, ``[a, b]``).
    """
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"override {item!r} must look like section.field=value")
        key, _, raw = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError(f"override {item!r} has an empty field path")
        node = data
        cls: Any = MAMOConfig
        for i, part in enumerate(parts):
            fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
            if part not in fields:
                where = ".".join(parts[:i]) or "top level"
                raise ValueError(
                    f"override {item!r}: unknown field {part!r} in {where}; known: {sorted(fields)}"
                )
            tp = _hints(cls)[part]
            if i == len(parts) - 1:
                if dataclasses.is_dataclass(tp):
                    raise ValueError(
                        f"override {item!r}: {key.strip()!r} is a section; set one of its fields"
                    )
                node[part] = _parse_scalar(raw)
            else:
                if not dataclasses.is_dataclass(tp):
                    raise ValueError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
                node = node.setdefault(part, {})
                cls = tp
    return data


def load_config(
    preset: str | Path = "tiny", overrides: list[str] | tuple[str, ...] = (), **sections: dict[str, Any]
) -> MAMOConfig:
    """Load a preset (name or YAML path), apply ``--set`` style overrides, validate.

    Example::

        cfg = load_config("tiny", ["train.steps=50", "losses.mrm=false"])
    """
    import yaml

    path = preset_path(preset)
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping at the top level")
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    apply_overrides(data, list(overrides))
    return config_from_dict(data)


def dump_config(cfg: MAMOConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML (loadable again by :func:`load_config`)."""
    import yaml

    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)


# --------------------------------------------------------------------------- validation


def _positive(path: str, v: float, *, zero_ok: bool = False) -> None:
    if v < 0 or (v == 0 and not zero_ok):
        raise ValueError(f"config field {path!r} must be {'>= 0' if zero_ok else '> 0'}, got {v}")


def _ratio(path: str, v: float, *, one_ok: bool = False) -> None:
    if not (0.0 <= v < 1.0 or (one_ok and v == 1.0)):
        raise ValueError(f"config field {path!r} must lie in [0, {'1]' if one_ok else '1)'}, got {v}")


def _validate(c: MAMOConfig) -> None:
    m = c.model
    for name in (
        "image_size",
        "patch_size",
        "vision_dim",
        "vision_depth",
        "vision_heads",
        "text_dim",
        "text_depth",
        "text_heads",
        "fusion_depth",
        "fusion_heads",
        "max_text_len",
        "embed_dim",
    ):
        _positive(f"model.{name}", getattr(m, name))
    _positive("model.vocab_size", m.vocab_size, zero_ok=True)
    _positive("model.mlp_ratio", m.mlp_ratio)
    _ratio("model.dropout", m.dropout)
    _ratio("model.drop_path", m.drop_path)
    if m.image_size % m.patch_size:
        raise ValueError(
            f"config field 'model.image_size' ({m.image_size}) must be divisible by "
            f"'model.patch_size' ({m.patch_size})"
        )
    for prefix, dim, heads in (
        ("vision", m.vision_dim, m.vision_heads),
        ("text", m.text_dim, m.text_heads),
        ("fusion", m.text_dim, m.fusion_heads),
    ):
        if dim % heads:
            raise ValueError(f"config field 'model.{prefix}_heads' ({heads}) must divide the width ({dim})")
    k = c.masking
    _ratio("masking.image_ratio", k.image_ratio)
    _ratio("masking.text_ratio", k.text_ratio)
    _ratio("masking.mask_prob", k.mask_prob, one_ok=True)
    _ratio("masking.random_prob", k.random_prob, one_ok=True)
    if k.mask_prob + k.random_prob > 1.0 + 1e-9:
        raise ValueError(
            "config fields 'masking.mask_prob' + 'masking.random_prob' must be <= 1, got "
            f"{k.mask_prob} + {k.random_prob}"
        )
    L = c.losses
    if not any((L.itc, L.itm, L.mlm, L.mrm, L.mim)):
        raise ValueError("config section 'losses' turns every loss off; enable at least one")
    for name in ("itc", "itm", "mlm", "mrm", "mim"):
        _positive(f"losses.{name}_weight", getattr(L, f"{name}_weight"), zero_ok=True)
    _positive("losses.itm_start_step", L.itm_start_step, zero_ok=True)
    _positive("losses.masked_start_step", L.masked_start_step, zero_ok=True)
    if not L.active_at(0):
        raise ValueError(
            "config section 'losses' computes no loss at step 0 (every enabled loss starts later); "
            "enable itc or set losses.itm_start_step / losses.masked_start_step to 0"
        )
    if L.mrm_top_k < 1 or L.mrm_top_k > m.fusion_depth:
        raise ValueError(
            f"config field 'losses.mrm_top_k' must lie in [1, model.fusion_depth={m.fusion_depth}], "
            f"got {L.mrm_top_k}"
        )
    _positive("losses.mrm_beta", L.mrm_beta)
    _positive("losses.mim_decoder_depth", L.mim_decoder_depth, zero_ok=True)
    i = c.itc
    _positive("itc.queue_size", i.queue_size, zero_ok=True)
    if not (0.001 <= i.temperature <= 0.5):
        raise ValueError(f"config field 'itc.temperature' must lie in [0.001, 0.5], got {i.temperature}")
    _ratio("itc.alpha", i.alpha, one_ok=True)
    _positive("itc.alpha_warmup_steps", i.alpha_warmup_steps, zero_ok=True)
    _ratio("itm.hardness", c.itm.hardness, one_ok=True)
    _positive("itm.easy_steps", c.itm.easy_steps, zero_ok=True)
    _positive("itm.ramp_steps", c.itm.ramp_steps, zero_ok=True)
    e = c.ema
    _ratio("ema.decay", e.decay, one_ok=True)
    _ratio("ema.final_decay", e.final_decay, one_ok=True)
    _positive("ema.anneal_steps", e.anneal_steps, zero_ok=True)
    if e.schedule != "constant" and e.anneal_steps == 0:
        raise ValueError(f"config field 'ema.anneal_steps' must be > 0 with ema.schedule={e.schedule!r}")
    o = c.optim
    _positive("optim.lr", o.lr)
    _positive("optim.weight_decay", o.weight_decay, zero_ok=True)
    _ratio("optim.beta1", o.beta1)
    _ratio("optim.beta2", o.beta2)
    _positive("optim.eps", o.eps)
    _positive("optim.warmup_steps", o.warmup_steps, zero_ok=True)
    _ratio("optim.min_lr_ratio", o.min_lr_ratio, one_ok=True)
    _positive("optim.clip_grad", o.clip_grad, zero_ok=True)
    t = c.train
    _positive("train.batch_size", t.batch_size)
    if t.batch_size < 2 and L.itm:
        raise ValueError(
            "config field 'train.batch_size' must be >= 2 when losses.itm is on (hard negatives)"
        )
    _positive("train.steps", t.steps, zero_ok=True)
    _positive("train.grad_accum", t.grad_accum)
    if t.batch_size % t.grad_accum:
        raise ValueError(
            f"config field 'train.grad_accum' ({t.grad_accum}) must divide train.batch_size ({t.batch_size})"
        )
    for name in ("num_workers", "threads", "save_every", "log_every", "eval_every", "seed"):
        _positive(f"train.{name}", getattr(t, name), zero_ok=True)
    _positive("train.max_nonfinite_steps", t.max_nonfinite_steps)
    _positive("train.dist_timeout", t.dist_timeout)
    if not math.isfinite(t.max_seconds):
        raise ValueError(f"config field 'train.max_seconds' must be finite, got {t.max_seconds}")
    _positive("train.max_seconds", t.max_seconds, zero_ok=True)
    if t.device not in ("auto", "cpu") and not t.device.startswith("cuda"):
        raise ValueError(f"config field 'train.device' must be 'auto', 'cpu' or 'cuda[:i]', got {t.device!r}")
    d = c.data
    if d.image_size != m.image_size:
        raise ValueError(
            f"config fields 'data.image_size' ({d.image_size}) and 'model.image_size' ({m.image_size}) differ"
        )
    if d.max_text_len > m.max_text_len:
        raise ValueError(
            f"config field 'data.max_text_len' ({d.max_text_len}) exceeds "
            f"model.max_text_len ({m.max_text_len})"
        )
    _positive("data.train_size", d.train_size)
    if d.kind == "json" and not d.ann_file:
        raise ValueError("config field 'data.ann_file' is required with data.kind='json'")
    v = c.eval
    for s in v.splits:
        if s not in ("train", "val", "heldout"):
            raise ValueError(f"config field 'eval.splits' entries must be train/val/heldout, got {s!r}")
    _positive("eval.num_candidates", v.num_candidates)
    _positive("eval.rerank_k", v.rerank_k, zero_ok=True)
    _positive("eval.batch_size", v.batch_size)
    _positive("eval.finegrained_samples", v.finegrained_samples, zero_ok=True)
    _positive("eval.grounding_samples", v.grounding_samples, zero_ok=True)
