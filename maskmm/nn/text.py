"""BERT-style text encoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from maskmm._checks import check_same_device, check_tensor
from maskmm.attention import AttentionMask

from .blocks import post_norm_stack, run_blocks, set_attention_backend
from .config import TextConfig
from .init import init_transformer_weights
from .layers import resolve_layers
from .outputs import EncoderOutput

__all__ = ["TextEmbeddings", "TextEncoder", "check_text_inputs"]

_ID_DTYPES = (torch.int64, torch.int32)


def check_text_inputs(
    input_ids: Tensor, valid: Tensor, token_type_ids: Tensor | None, max_position: int
) -> None:
    """Validate ``input_ids [B, L]`` (integer), ``valid bool [B, L]`` and optional ``token_type_ids``."""
    check_tensor("input_ids", input_ids, ndim=2, dtype=_ID_DTYPES)
    b, length = input_ids.shape
    if length > max_position:
        raise ValueError(
            f"input_ids has length {length}, longer than the position table (max_position={max_position})"
        )
    check_tensor("valid", valid, shape=(b, length), dtype=torch.bool)
    if token_type_ids is not None:
        check_tensor("token_type_ids", token_type_ids, shape=(b, length), dtype=_ID_DTYPES)
    check_same_device(input_ids=input_ids, valid=valid, token_type_ids=token_type_ids)


class TextEmbeddings(nn.Module):
    """``LN(word[ids] + position[0..L) + token_type[types])`` then dropout: ``[B, L] -> [B, L, D]``."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position, config.dim)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.dim)
        self.norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(x))


class TextEncoder(nn.Module):
    """BERT encoder: :class:`TextEmbeddings` then ``config.depth`` post-norm blocks. Padding keys
    (``valid`` False) are never attended; states at padded positions are computed (they attend
    to the valid tokens) but carry no meaning.

    Attributes: ``embeddings``, ``layers``; ``word_embeddings`` for weight tying.
    """

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        if not isinstance(config, TextConfig):
            raise TypeError(f"config must be a TextConfig, got {type(config).__name__}")
        self.config = config
        self.embeddings = TextEmbeddings(config)
        self.layers = post_norm_stack(config)
        self.grad_checkpointing = config.grad_checkpointing
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.apply(init_transformer_weights)
        with torch.no_grad():
            self.embeddings.word_embeddings.weight[self.config.pad_token_id].zero_()

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_attention_backend(self, backend: str) -> None:
        set_attention_backend(self, backend)

    def forward(
        self,
        input_ids: Tensor,
        valid: Tensor,
        *,
        token_type_ids: Tensor | None = None,
        return_layers: Sequence[int] = (),
    ) -> EncoderOutput:
        """Encode ``input_ids [B, L]`` (``L <= max_position``) with key validity ``valid bool [B, L]``.

        Returns :class:`EncoderOutput` with ``last_hidden [B, L, D]``, the block outputs named in
        ``return_layers`` and ``valid`` passed through. A row without any valid token gives
        attention outputs of zero (defined, not an error); ``B = 0`` or ``L = 0`` give empty
        outputs. Shapes, dtypes and devices are checked; id *values* are not (that would need a
        host sync): ids outside ``[0, vocab_size)`` / ``[0, type_vocab_size)`` raise an indexing
        error on the CPU and a device-side assert on CUDA.
        """
        check_text_inputs(input_ids, valid, token_type_ids, self.config.max_position)
        layers = resolve_layers("return_layers", return_layers, self.depth)
        mask = AttentionMask.from_key_valid(valid)
        x = self.embeddings(input_ids, token_type_ids)
        x, hidden = run_blocks(
            self.layers,
            x,
            mask,
            return_layers=layers,
            checkpointing=self.grad_checkpointing and self.training,
        )
        return EncoderOutput(x, hidden, valid)
