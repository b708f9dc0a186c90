"""ViT image encoder with MAE-style patch dropping or mask-token replacement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from maskmm._checks import check_floating, check_tensor

from .blocks import PreNormBlock, run_blocks, set_attention_backend
from .config import VisionConfig
from .init import init_transformer_weights
from .layers import drop_path_rates, resolve_layers
from .outputs import EncoderOutput
from .patch_embed import PatchEmbed
from .pos_embed import resample_pos_embed

if TYPE_CHECKING:
    from maskmm.masking import PatchMasking

__all__ = ["VisionTransformer"]

_INDEX_DTYPES = (torch.int64, torch.int32)


def _gather_tokens(x: Tensor, ids: Tensor) -> Tensor:
    # x [B, N, D], ids [B, K] -> [B, K, D]
    return torch.gather(x, 1, ids.long().unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class VisionTransformer(nn.Module):
    """ViT: conv patch embedding, CLS token, learnable absolute position embeddings, pre-norm
    blocks and a final LayerNorm.

    Images of a size other than ``config.image_size`` (still divisible by the patch size) use
    the position table resampled bicubically to their grid.

    Attributes: ``patch_embed``, ``cls_token [1, 1, D]``, ``pos_embed [1, 1 + N, D]``,
    ``mask_token [1, 1, D]`` (``None`` when ``config.mask_token`` is False), ``blocks``, ``norm``.
    """

    num_prefix_tokens = 1

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        if not isinstance(config, VisionConfig):
            raise TypeError(f"config must be a VisionConfig, got {type(config).__name__}")
        self.config = config
        d = config.dim
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.num_patches, d))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d)) if config.mask_token else None
        self.pos_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            PreNormBlock(
                d,
                config.num_heads,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias,
                dropout=config.dropout,
                attn_dropout=config.attn_dropout,
                drop_path=rate,
                eps=config.layer_norm_eps,
                backend=config.attn_backend,
            )
            for rate in drop_path_rates(config.drop_path, config.depth)
        )
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.grad_checkpointing = config.grad_checkpointing
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.apply(init_transformer_weights)
        for p in (self.cls_token, self.pos_embed, self.mask_token):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=0.02, a=-0.04, b=0.04)
        nn.init.zeros_(self.patch_embed.proj.bias)

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def set_attention_backend(self, backend: str) -> None:
        set_attention_backend(self, backend)

    def pos_embed_for(self, grid: tuple[int, int]) -> Tensor:
        """Position table ``[1, 1 + gh*gw, D]`` for patch grid ``grid`` (CLS entry first)."""
        return resample_pos_embed(self.pos_embed, grid, old_grid=self.config.grid_size)

    def _check_masking(self, masking: PatchMasking, b: int, n: int, device: torch.device, need: str) -> None:
        for field in ("mask", "ids_keep", "ids_restore"):
            if not hasattr(masking, field):
                raise TypeError(
                    f"masking must be a PatchMasking (mask, ids_keep, ids_restore), got {masking!r}"
                )
        if need in ("mask", "restore"):
            check_tensor("masking.mask", masking.mask, shape=(b, n), dtype=torch.bool, device=device)
        if need in ("ids_keep", "restore"):
            ids = check_tensor(
                "masking.ids_keep", masking.ids_keep, ndim=2, dtype=_INDEX_DTYPES, device=device
            )
            if ids.shape[0] != b or ids.shape[1] > n:
                raise ValueError(
                    f"masking.ids_keep must have shape [{b}, K] with K <= {n}, got {list(ids.shape)}"
                )
        if need == "restore":
            check_tensor(
                "masking.ids_restore", masking.ids_restore, shape=(b, n), dtype=_INDEX_DTYPES, device=device
            )

    def forward(
        self,
        images: Tensor,
        *,
        masking: PatchMasking | None = None,
        mask_mode: Literal["drop", "token"] = "drop",
        return_layers: Sequence[int] = (),
    ) -> EncoderOutput:
        """Encode ``images [B, C, H, W]`` (``H``, ``W`` divisible by the patch size).

        Args:
            masking: patch masking over the ``N = (H/p)*(W/p)`` patches (``mask`` True = hidden).
            mask_mode: ``"drop"``: only the ``ids_keep`` patches are encoded (MAE style); output
                ``[B, 1 + N_keep, D]`` with CLS first and kept patches in ``ids_keep`` order.
                ``"token"``: masked patch embeddings are replaced by ``mask_token`` before the
                position embedding is added; output ``[B, 1 + N, D]``.
            return_layers: block indices (negative from the end) whose outputs to return.
        Returns:
            :class:`EncoderOutput` with ``valid=None`` (every token is real).

        The masking's shapes, dtypes and device are checked; its index *values* are not (that
        would need a host sync): ``ids_keep`` / ``ids_restore`` must hold patch indices in
        ``[0, N)`` as the maskers in :mod:`maskmm.masking` produce. Out-of-range indices raise
        an indexing error on the CPU and a device-side assert on CUDA. Keeping no patch
        (``N_keep = 0``) is allowed: the output is the CLS token alone. Empty batches give
        empty outputs.
        """
        grid = self.patch_embed.grid_size(images)
        layers = resolve_layers("return_layers", return_layers, self.depth)
        if mask_mode not in ("drop", "token"):
            raise ValueError(f"mask_mode must be 'drop' or 'token', got {mask_mode!r}")
        b, n = images.shape[0], grid[0] * grid[1]
        if masking is not None:
            if mask_mode == "token" and self.mask_token is None:
                raise ValueError(
                    "mask_mode='token' needs a mask token; build with VisionConfig(mask_token=True)"
                )
            self._check_masking(masking, b, n, images.device, "mask" if mask_mode == "token" else "ids_keep")
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)  # [B, N, D]
        pos = self.pos_embed_for(grid)
        if masking is not None and mask_mode == "token":
            x = torch.where(masking.mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = x + pos[:, 1:]
        if masking is not None and mask_mode == "drop":
            x = _gather_tokens(x, masking.ids_keep)
        cls = (self.cls_token + pos[:, :1]).to(x.dtype).expand(b, -1, -1)
        x = self.pos_drop(torch.cat([cls, x], dim=1))
        x, hidden = run_blocks(
            self.blocks,
            x,
            None,
            return_layers=layers,
            checkpointing=self.grad_checkpointing and self.training,
        )
        return EncoderOutput(self.norm(x), hidden, None)

    def encode_masked_full(
        self, images: Tensor, masking: PatchMasking, mask_mode: Literal["drop", "token"] = "drop"
    ) -> Tensor:
        """States ``[B, 1 + N, D]`` of masked ``images`` on the full patch grid, in either mode:
        ``"drop"`` encodes the kept patches only and then places ``mask_token`` (+ position) at the
        masked ones (:meth:`insert_mask_tokens`); ``"token"`` encodes every patch with the masked
        ones replaced by ``mask_token``. What a fusion or decoder of all positions reads."""
        x = self(images, masking=masking, mask_mode=mask_mode).last_hidden
        if mask_mode == "token":
            return x
        return self.insert_mask_tokens(x, masking, grid_size=self.patch_embed.grid_size(images))

    def insert_mask_tokens(
        self, x: Tensor, masking: PatchMasking, *, grid_size: tuple[int, int] | None = None
    ) -> Tensor:
        """Scatter kept states back to the full patch grid, with ``mask_token + pos_embed`` at the
        masked positions.

        Args:
            x: ``[B, 1 + N_keep, D]``: prefix (CLS) token then the kept patches in ``ids_keep``
                order (the output of ``forward(..., mask_mode="drop")``).
            masking: the masking that produced ``x``.
            grid_size: patch grid ``(gh, gw)`` with ``gh*gw = N``; default the configured grid.
        Returns:
            ``[B, 1 + N, D]``: CLS, then all ``N`` patches in raster order; kept positions hold
            ``x`` unchanged.

        Index values of ``masking`` are not range-checked (see :meth:`forward`).
        """
        if self.mask_token is None:
            raise ValueError(
                "insert_mask_tokens needs a mask token; build with VisionConfig(mask_token=True)"
            )
        check_floating("x", x, ndim=3)
        b = x.shape[0]
        grid = self.config.grid_size if grid_size is None else (int(grid_size[0]), int(grid_size[1]))
        n = grid[0] * grid[1]
        self._check_masking(masking, b, n, x.device, "restore")
        k = masking.ids_keep.shape[1]
        if x.shape[1] != 1 + k or x.shape[2] != self.dim:
            raise ValueError(
                f"x must have shape [{b}, {1 + k}, {self.dim}] (prefix token + the N_keep kept patches of "
                f"masking), got {list(x.shape)}"
            )
        pos = self.pos_embed_for(grid)[:, 1:].to(x.dtype)  # [1, N, D]
        fill = self.mask_token.to(x.dtype).expand(b, n - k, -1)
        full = _gather_tokens(torch.cat([x[:, 1:], fill], dim=1), masking.ids_restore)
        full = torch.where(masking.mask.unsqueeze(-1), full + pos, full)
        return torch.cat([x[:, :1], full], dim=1)
