"""Plain reference math for the maskmm.nn tests (independent of maskmm's own forward code).

Each function reads the parameters of a maskmm module and recomputes its output with
explicit matrix products, softmax and layer norms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def attention(q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor | None) -> Tensor:
    """q [B,H,Lq,D], k/v [B,H,Lk,D]; rows with no valid key are zero."""
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if key_valid is None:
        return torch.softmax(s, dim=-1) @ v
    allowed = key_valid[:, None, None, :]
    s = s.masked_fill(~allowed, float("-inf"))
    has = key_valid.any(-1)[:, None, None, None]
    p = torch.softmax(torch.where(has, s, torch.zeros_like(s)), dim=-1) * has
    return p @ v


def split_heads(x: Tensor, h: int) -> Tensor:
    b, length, d = x.shape
    return x.reshape(b, length, h, d // h).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    b, h, length, dh = x.shape
    return x.transpose(1, 2).reshape(b, length, h * dh)


def mha(attn, x: Tensor, key_valid: Tensor | None, context: Tensor | None = None) -> Tensor:
    h = attn.num_heads
    d = x.shape[-1]
    if context is None:
        w, b = attn.qkv.weight, attn.qkv.bias
        q = F.linear(x, w[:d], None if b is None else b[:d])
        k = F.linear(x, w[d : 2 * d], None if b is None else b[d : 2 * d])
        v = F.linear(x, w[2 * d :], None if b is None else b[2 * d :])
    else:
        q = F.linear(x, attn.q.weight, attn.q.bias)
        w, b = attn.kv.weight, attn.kv.bias
        k = F.linear(context, w[:d], None if b is None else b[:d])
        v = F.linear(context, w[d:], None if b is None else b[d:])
    o = attention(split_heads(q, h), split_heads(k, h), split_heads(v, h), key_valid)
    return F.linear(merge_heads(o), attn.proj.weight, attn.proj.bias)


def ln(mod, x: Tensor) -> Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias


def gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def mlp(m, x: Tensor) -> Tensor:
    return F.linear(gelu(F.linear(x, m.fc1.weight, m.fc1.bias)), m.fc2.weight, m.fc2.bias)


def pre_norm_block(blk, x, key_valid=None, context=None, context_valid=None):
    x = x + mha(blk.attn, ln(blk.norm1, x), key_valid)
    if context is not None:
        x = x + mha(blk.cross_attn, ln(blk.norm_cross, x), context_valid, context)
    return x + mlp(blk.mlp, ln(blk.norm2, x))


def post_norm_block(blk, x, key_valid=None, context=None, context_valid=None):
    x = ln(blk.norm1, x + mha(blk.attn, x, key_valid))
    if context is not None:
        x = ln(blk.norm_cross, x + mha(blk.cross_attn, x, context_valid, context))
    return ln(blk.norm2, x + mlp(blk.mlp, x))


def vit(model, images: Tensor, *, keep: Tensor | None = None, token_mask: Tensor | None = None):
    """Returns (final states, [block outputs])."""
    p = model.patch_embed.patch_size
    b, c, hh, ww = images.shape
    gh, gw = hh // p, ww // p
    # patchify + linear == the conv
    patches = images.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * p * p)
    w = model.patch_embed.proj.weight.reshape(model.dim, -1)
    x = patches @ w.T + model.patch_embed.proj.bias
    pos = model.pos_embed
    cfg_grid = model.config.grid_size
    if (gh, gw) != cfg_grid:
        g = pos[:, 1:].reshape(1, cfg_grid[0], cfg_grid[1], -1).permute(0, 3, 1, 2)
        g = F.interpolate(g, size=(gh, gw), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:, :1], g.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)
    if token_mask is not None:
        x = torch.where(token_mask[..., None], model.mask_token.expand_as(x), x)
    x = x + pos[:, 1:]
    if keep is not None:
        x = torch.stack([x[i, keep[i]] for i in range(b)])
    x = torch.cat([(model.cls_token + pos[:, :1]).expand(b, -1, -1), x], dim=1)
    outs = []
    for blk in model.blocks:
        x = pre_norm_block(blk, x)
        outs.append(x)
    return ln(model.norm, x), outs


def text(model, ids: Tensor, valid: Tensor, types: Tensor | None = None):
    e = model.embeddings
    length = ids.shape[1]
    x = e.word_embeddings.weight[ids] + e.position_embeddings.weight[:length][None]
    x = x + e.token_type_embeddings.weight[torch.zeros_like(ids) if types is None else types]
    x = ln(e.norm, x)
    outs = []
    for blk in model.layers:
        x = post_norm_block(blk, x, valid)
        outs.append(x)
    return x, outs


def merged_fusion(model, image, image_valid, txt, text_valid):
    if model.image_proj is not None:
        image = F.linear(image, model.image_proj.weight, model.image_proj.bias)
    if model.modality_embed is not None:
        image = image + model.modality_embed[0]
        txt = txt + model.modality_embed[1]
    if image_valid is None:
        image_valid = torch.ones(image.shape[:2], dtype=torch.bool)
    x = torch.cat([image, txt], 1)
    kv = torch.cat([image_valid, text_valid], 1)
    outs = []
    for blk in model.layers:
        x = post_norm_block(blk, x, kv)
        outs.append(x)
    li = image.shape[1]
    return x[:, li:], x[:, :li], outs


def cross_fusion(model, image, image_valid, txt, text_valid):
    x = txt
    outs = []
    for blk in model.layers:
        x = post_norm_block(blk, x, text_valid, image, image_valid)
        outs.append(x)
    return x, outs


def co_fusion(model, image, image_valid, txt, text_valid):
    """Two streams updated in parallel; returns (text, image, [(text, image) per layer])."""
    if model.image_proj is not None:
        image = F.linear(image, model.image_proj.weight, model.image_proj.bias)
    t, v = txt, image
    outs = []
    for tb, ib in zip(model.text_layers, model.image_layers):
        t, v = (
            post_norm_block(tb, t, text_valid, v, image_valid),
            post_norm_block(ib, v, image_valid, t, text_valid),
        )
        outs.append((t, v))
    return t, v, outs
