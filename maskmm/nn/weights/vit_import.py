"""Import ViT / DeiT checkpoints in the timm key layout or the Hugging Face ``ViTModel`` /
``DeiTModel`` layout, resampling the position table to the target grid.

timm layout (``P`` = prefix, e.g. ``""`` or ``"visual_encoder."``)::

    P cls_token, P pos_embed, P dist_token (DeiT, unused), P patch_embed.proj.*,
    P blocks.{i}.norm1.*, .attn.qkv.*, .attn.proj.*, .norm2.*, .mlp.fc1.*, .mlp.fc2.*, P norm.*

Hugging Face layout (``P`` e.g. ``""``, ``"vit."``, ``"deit."``)::

    P embeddings.cls_token, .position_embeddings, .mask_token, .distillation_token (unused),
    P embeddings.patch_embeddings.projection.*,
    P encoder.layer.{i}.layernorm_before.*, .attention.attention.{query,key,value}.*,
    .attention.output.dense.*, .layernorm_after.*, .intermediate.dense.*, .output.dense.*,
    P layernorm.*

as saved in checkpoint files; the renamed in-memory layout of ``transformers>=5``
(``layers.{i}.attention.{q,k,v,o}_proj.*``, ``layers.{i}.mlp.fc{1,2}.*``) is read as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ..pos_embed import resample_pos_embed
from ..vit import VisionTransformer
from .io import LoadReport, apply_weights, read_source

__all__ = ["detect_vit_layout", "import_vit"]

_TIMM_PATCH = "patch_embed.proj.weight"
_HF_PATCH = "embeddings.patch_embeddings.projection.weight"


def detect_vit_layout(sd: Mapping[str, Tensor]) -> tuple[str, str]:
    """``(layout, prefix)`` of a ViT state dict: layout ``"timm"`` or ``"hf"``."""
    for layout, marker in (("timm", _TIMM_PATCH), ("hf", _HF_PATCH)):
        prefixes = sorted((k[: -len(marker)] for k in sd if k.endswith(marker)), key=len)
        if prefixes:
            return layout, prefixes[0]
    raise ValueError(
        f"the checkpoint has no ViT patch embedding (no key ending in {_TIMM_PATCH!r} or {_HF_PATCH!r})"
    )


def _take(sd: Mapping[str, Tensor], used: set[str], key: str) -> Tensor | None:
    if key not in sd:
        return None
    used.add(key)
    return sd[key]


def import_vit(
    source: str | Path | Mapping[str, Tensor],
    vit: VisionTransformer,
    *,
    layout: Literal["auto", "timm", "hf"] = "auto",
    prefix: str | None = None,
    source_grid: tuple[int, int] | None = None,
) -> LoadReport:
    """Load ViT/DeiT weights into ``vit``.

    The source position table (prefix tokens, then a row-major grid) is resampled bicubically
    to ``vit``'s grid when they differ (``source_grid`` for a non-square source grid; square
    assumed otherwise). A DeiT distillation token and its position entry are dropped (and
    reported unexpected). Classification heads and poolers are reported unexpected. The
    patch size must match (``ValueError`` naming the key otherwise).

    Args:
        source: a state dict, or a local file/folder.
        layout: ``"timm"``, ``"hf"`` or ``"auto"`` (detected from the patch-embedding key).
        prefix: key prefix (auto-detected when ``None``).
    Returns:
        :class:`LoadReport` (``pos_embed`` listed in ``resampled_keys`` when resampled).
    """
    if not isinstance(vit, VisionTransformer):
        raise TypeError(f"vit must be a VisionTransformer, got {type(vit).__name__}")
    if layout not in ("auto", "timm", "hf"):
        raise ValueError(f"layout must be 'auto', 'timm' or 'hf', got {layout!r}")
    sd = read_source(source)
    found, found_prefix = detect_vit_layout(sd)
    if layout == "auto":
        layout = found
    elif layout != found:
        raise ValueError(f"layout={layout!r} but the checkpoint looks like the {found!r} layout")
    p = found_prefix if prefix is None else prefix
    used: set[str] = set()
    out: dict[str, Tensor] = {}

    def put(dst: str, src: str) -> None:
        t = _take(sd, used, p + src)
        if t is not None:
            out[dst] = t

    def put_cat(dst: str, srcs: list[str]) -> None:
        if all(p + s in sd for s in srcs):
            out[dst] = torch.cat([_take(sd, used, p + s) for s in srcs], dim=0)

    if layout == "timm":
        put("cls_token", "cls_token")
        pos_key, dist_key = "pos_embed", "dist_token"
        names = ("patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias")
        for n in names:
            put(n, n)
        for i in range(vit.depth):
            for n in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                for w in ("weight", "bias"):
                    put(f"blocks.{i}.{n}.{w}", f"blocks.{i}.{n}.{w}")
    else:
        put("cls_token", "embeddings.cls_token")
        if vit.mask_token is not None:
            put("mask_token", "embeddings.mask_token")
        pos_key, dist_key = "embeddings.position_embeddings", "embeddings.distillation_token"
        # checkpoint files: encoder.layer.{i}.attention.attention.query ...; transformers>=5 in-memory
        # state dicts: layers.{i}.attention.q_proj ...
        legacy = any(k.startswith(p + "encoder.layer.") for k in sd)
        blk, qkv, out_proj, fc1, fc2 = (
            (
                "encoder.layer.",
                ("attention.attention.query", "attention.attention.key", "attention.attention.value"),
                "attention.output.dense",
                "intermediate.dense",
                "output.dense",
            )
            if legacy
            else (
                "layers.",
                ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
                "attention.o_proj",
                "mlp.fc1",
                "mlp.fc2",
            )
        )
        for w in ("weight", "bias"):
            put(f"patch_embed.proj.{w}", f"embeddings.patch_embeddings.projection.{w}")
            put(f"norm.{w}", f"layernorm.{w}")
            for i in range(vit.depth):
                s, d = f"{blk}{i}.", f"blocks.{i}."
                put(f"{d}norm1.{w}", f"{s}layernorm_before.{w}")
                put_cat(f"{d}attn.qkv.{w}", [f"{s}{n}.{w}" for n in qkv])
                put(f"{d}attn.proj.{w}", f"{s}{out_proj}.{w}")
                put(f"{d}norm2.{w}", f"{s}layernorm_after.{w}")
                put(f"{d}mlp.fc1.{w}", f"{s}{fc1}.{w}")
                put(f"{d}mlp.fc2.{w}", f"{s}{fc2}.{w}")

    resampled: list[str] = []
    pos = _take(sd, used, p + pos_key)
    if pos is not None:
        if pos.dim() == 2:
            pos = pos.unsqueeze(0)
        n_prefix = 2 if p + dist_key in sd else 1
        if n_prefix == 2:  # keep CLS, drop the distillation position
            pos = torch.cat([pos[:, :1], pos[:, 2:]], dim=1)
        grid = vit.config.grid_size
        try:
            new = resample_pos_embed(pos, grid, old_grid=source_grid, num_prefix_tokens=1)
        except ValueError as err:
            raise ValueError(f"weight {p + pos_key!r}: {err}") from err
        if new is not pos:
            resampled.append("pos_embed")
        out["pos_embed"] = new
    report = apply_weights(vit, out, resampled=resampled)
    report.unexpected_keys = [k for k in sd if k not in used]
    return report
