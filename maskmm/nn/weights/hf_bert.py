"""Import Hugging Face BERT checkpoints (``bert-base`` key layout) into the text encoder, a
fusion encoder and the masked-token head.

Layout read (``P`` = detected prefix, e.g. ``""`` for ``BertModel`` or ``"bert."`` for
``BertForMaskedLM``)::

    P embeddings.{word,position,token_type}_embeddings.weight, P embeddings.LayerNorm.*
    P encoder.layer.{i}.attention.self.{query,key,value}.*      -> attn.qkv (concatenated)
    P encoder.layer.{i}.attention.output.dense.* / .LayerNorm.*  -> attn.proj / norm1
    P encoder.layer.{i}.crossattention.self.{query,key,value}.*  -> cross_attn.q / cross_attn.kv
    P encoder.layer.{i}.crossattention.output.dense.* / .LayerNorm.* -> cross_attn.proj / norm_cross
    P encoder.layer.{i}.intermediate.dense.*, output.dense.*, output.LayerNorm.* -> mlp.fc1, mlp.fc2, norm2
    cls.predictions.transform.dense.*, .transform.LayerNorm.*, .bias, .decoder.weight -> MaskedTokenHead

Old TensorFlow-converted names (``LayerNorm.gamma`` / ``LayerNorm.beta``) are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from ..coattention import CoAttentionFusion
from ..fusion import CrossAttentionFusion, MergedFusion
from ..heads import MaskedTokenHead
from ..text import TextEncoder
from .io import LoadReport, apply_weights, read_source

__all__ = ["bert_layer_count", "import_bert"]

_WORD = "embeddings.word_embeddings.weight"
_IGNORED_SUFFIXES = ("embeddings.position_ids",)


def _normalise_names(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for k, v in sd.items():
        if k.endswith("LayerNorm.gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith("LayerNorm.beta"):
            k = k[: -len("beta")] + "bias"
        out[k] = v
    return out


def _detect_prefix(sd: Mapping[str, Tensor]) -> str:
    if _WORD in sd:
        return ""
    candidates = sorted((k[: -len(_WORD)] for k in sd if k.endswith(_WORD)), key=len)
    if not candidates:
        raise ValueError(f"the checkpoint has no BERT embeddings (no key ending in {_WORD!r})")
    return candidates[0]


def bert_layer_count(sd: Mapping[str, Tensor], prefix: str = "") -> int:
    """Number of ``encoder.layer.{i}`` entries under ``prefix``."""
    head = prefix + "encoder.layer."
    idx = {int(k[len(head) :].split(".", 1)[0]) for k in sd if k.startswith(head)}
    return max(idx) + 1 if idx else 0


class _Reader:
    """Tracks which source keys were consumed."""

    def __init__(self, sd: dict[str, Tensor]) -> None:
        self.sd = sd
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.sd

    def get(self, key: str) -> Tensor:
        self.used.add(key)
        return self.sd[key]

    def put(self, out: dict[str, Tensor], dst: str, src: str) -> None:
        if src in self.sd:
            out[dst] = self.get(src)

    def put_cat(self, out: dict[str, Tensor], dst: str, srcs: list[str]) -> None:
        if all(s in self.sd for s in srcs):
            out[dst] = torch.cat([self.get(s) for s in srcs], dim=0)


def _map_layer(r: _Reader, src: str, dst: str, out: dict[str, Tensor], *, cross: str | None) -> None:
    """Map source layer ``src`` (``...encoder.layer.{i}.``) onto target block ``dst``."""
    for p in ("weight", "bias"):
        r.put_cat(
            out, f"{dst}attn.qkv.{p}", [f"{src}attention.self.{n}.{p}" for n in ("query", "key", "value")]
        )
        r.put(out, f"{dst}attn.proj.{p}", f"{src}attention.output.dense.{p}")
        r.put(out, f"{dst}norm1.{p}", f"{src}attention.output.LayerNorm.{p}")
        r.put(out, f"{dst}mlp.fc1.{p}", f"{src}intermediate.dense.{p}")
        r.put(out, f"{dst}mlp.fc2.{p}", f"{src}output.dense.{p}")
        r.put(out, f"{dst}norm2.{p}", f"{src}output.LayerNorm.{p}")
    if cross is None:
        return
    # cross = "crossattention" when the checkpoint has it, else "attention" (copy of self-attention)
    for p in ("weight", "bias"):
        r.put(out, f"{dst}cross_attn.q.{p}", f"{src}{cross}.self.query.{p}")
        r.put_cat(out, f"{dst}cross_attn.kv.{p}", [f"{src}{cross}.self.{n}.{p}" for n in ("key", "value")])
        r.put(out, f"{dst}cross_attn.proj.{p}", f"{src}{cross}.output.dense.{p}")
        r.put(out, f"{dst}norm_cross.{p}", f"{src}{cross}.output.LayerNorm.{p}")


def import_bert(
    source: str | Path | Mapping[str, Tensor],
    *,
    text_encoder: TextEncoder | None = None,
    fusion: CrossAttentionFusion | MergedFusion | CoAttentionFusion | None = None,
    mlm_head: MaskedTokenHead | None = None,
    fusion_start: int | None = None,
    prefix: str | None = None,
    cross_from_self: bool = False,
) -> LoadReport:
    """Load BERT weights into any of ``text_encoder``, ``fusion`` and ``mlm_head``.

    - ``text_encoder`` takes the embeddings and source layers ``0 .. depth-1``.
    - ``fusion`` takes source layers ``fusion_start .. fusion_start + depth - 1``;
      ``fusion_start`` defaults to ``text_encoder.depth`` when a text encoder is given, else to
      the last ``fusion.depth`` layers of the source (ALBEF: text 0-5, fusion 6-11).
      :class:`MergedFusion` maps the layers onto its self-attention blocks.
      :class:`CrossAttentionFusion` (and the text stream ``text_layers`` of
      :class:`CoAttentionFusion`) takes self-attention and MLP from them; cross-attention
      weights come from the checkpoint's ``crossattention`` entries when present. Otherwise
      they keep the module's fresh initialisation, as ALBEF does (its cross-attention layers
      are new, randomly initialised, on top of ``bert-base``), and are listed in
      ``missing_keys``. With ``cross_from_self=True`` they are copied instead from the same
      layer's self-attention (query/key/value/output and its LayerNorm); key/value copies
      need ``image_dim == dim`` (else they stay missing). The image stream of a
      :class:`CoAttentionFusion` has no BERT counterpart and is always reported missing.
    - ``mlm_head`` takes ``cls.predictions.*``; a head tied to ``text_encoder``'s embeddings
      does not load ``decoder.weight`` separately.

    Args:
        source: a state dict, or a local file/folder (see :func:`~maskmm.nn.weights.load_state_dict`).
        prefix: key prefix of the BERT model (auto-detected: ``""``, ``"bert."``, ...).
        cross_from_self: initialise absent cross-attention from self-attention (see above).
    Returns:
        :class:`LoadReport`: ``missing_keys`` prefixed ``text_encoder.`` / ``fusion.`` /
        ``mlm_head.``; ``unexpected_keys`` = source keys no target used (e.g. the pooler).
    Raises:
        ValueError: shapes that do not match (the key is named), or a source without BERT keys.
    """
    if text_encoder is None and fusion is None and mlm_head is None:
        raise ValueError("import_bert needs at least one of text_encoder, fusion, mlm_head")
    sd = _normalise_names(read_source(source))
    prefix = _detect_prefix(sd) if prefix is None else prefix
    r = _Reader(sd)
    report = LoadReport()
    layer = prefix + "encoder.layer."
    n_src = bert_layer_count(sd, prefix)

    if text_encoder is not None:
        if not isinstance(text_encoder, TextEncoder):
            raise TypeError(f"text_encoder must be a TextEncoder, got {type(text_encoder).__name__}")
        out: dict[str, Tensor] = {}
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            r.put(out, f"embeddings.{name}.weight", f"{prefix}embeddings.{name}.weight")
        for p in ("weight", "bias"):
            r.put(out, f"embeddings.norm.{p}", f"{prefix}embeddings.LayerNorm.{p}")
        for i in range(text_encoder.depth):
            _map_layer(r, f"{layer}{i}.", f"layers.{i}.", out, cross=None)
        report.extend(apply_weights(text_encoder, out), "text_encoder.")

    if fusion is not None:
        if not isinstance(fusion, CrossAttentionFusion | MergedFusion | CoAttentionFusion):
            raise TypeError(
                "fusion must be a CrossAttentionFusion, MergedFusion or CoAttentionFusion, "
                f"got {type(fusion).__name__}"
            )
        if fusion_start is None:
            fusion_start = text_encoder.depth if text_encoder is not None else max(n_src - fusion.depth, 0)
        if isinstance(fusion_start, bool) or not isinstance(fusion_start, int) or fusion_start < 0:
            raise ValueError(f"fusion_start must be a non-negative int, got {fusion_start!r}")
        out = {}
        has_cross = not isinstance(fusion, MergedFusion)
        dst_layers = "text_layers." if isinstance(fusion, CoAttentionFusion) else "layers."
        # the text stream of a co-attention fusion attends to projected image tokens of width dim
        kv_width = fusion.config.context_dim if isinstance(fusion, CrossAttentionFusion) else fusion.dim
        for j in range(fusion.depth):
            src, dst = f"{layer}{fusion_start + j}.", f"{dst_layers}{j}."
            cross = None
            if has_cross:
                if r.has(f"{src}crossattention.self.query.weight"):
                    cross = "crossattention"
                elif cross_from_self:
                    cross = "attention"
            _map_layer(r, src, dst, out, cross=cross)
            if cross == "attention" and kv_width != fusion.dim:
                out.pop(f"{dst}cross_attn.kv.weight", None)
                out.pop(f"{dst}cross_attn.kv.bias", None)
        report.extend(apply_weights(fusion, out), "fusion.")

    if mlm_head is not None:
        if not isinstance(mlm_head, MaskedTokenHead):
            raise TypeError(f"mlm_head must be a MaskedTokenHead, got {type(mlm_head).__name__}")
        root = prefix[: -len("bert.")] if prefix.endswith("bert.") else prefix
        head = f"{root}cls.predictions."
        out = {}
        for p in ("weight", "bias"):
            r.put(out, f"dense.{p}", f"{head}transform.dense.{p}")
            r.put(out, f"norm.{p}", f"{head}transform.LayerNorm.{p}")
        r.put(out, "bias", f"{head}bias")
        if r.has(f"{head}decoder.bias"):
            r.get(f"{head}decoder.bias")  # HF stores the same vector twice
        tied = text_encoder is not None and mlm_head.weight is text_encoder.word_embeddings.weight
        if tied:
            if r.has(f"{head}decoder.weight"):
                r.get(f"{head}decoder.weight")
        else:
            r.put(out, "decoder.weight", f"{head}decoder.weight")
        report.extend(
            apply_weights(mlm_head, out, ignore_missing=("decoder.weight",) if tied else ()), "mlm_head."
        )

    report.unexpected_keys = [
        k for k in sd if k not in r.used and not any(k.endswith(s) for s in _IGNORED_SUFFIXES)
    ]
    return report
