"""``AttentionMask``: one padding description per batch, shared by every attention layer.

Conventions
- ``key_valid``: ``bool [B, Lk]``, ``True`` = the key may be attended.
- ``query_valid``: ``bool [B, Lq]`` or ``None`` (all queries valid). An invalid query's output
  row is zero and passes zero gradient.
- A query with no valid key also gets a zero row and zero gradient.

The mask is meant to be built once per batch (e.g. by an encoder's ``forward``) and passed
to every layer. Backend-specific objects (an SDPA boolean mask or additive bias, a
FlexAttention ``BlockMask``, an xformers bias tensor, row-validity masks) are created on
first use and cached on the instance, so every layer reuses them.

Prefix keys: when the mask comes from lengths (:meth:`from_key_lengths`,
:meth:`from_lengths`, :meth:`from_cu_seqlens`, :meth:`from_seqlens`), the keys are known to be
a prefix and :attr:`key_lengths` is available without any host synchronisation. For a mask
built from an arbitrary boolean ``key_valid``, :meth:`is_key_prefix` answers with one
documented host sync (cached); nothing on the attention hot path calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from maskmm._checks import check_int, check_tensor

__all__ = ["AttentionMask"]

_INT_DTYPES = (torch.int32, torch.int64)


def _lengths_to_valid(name: str, lengths: Tensor, max_len: int) -> Tensor:
    """``bool [B, max_len]`` with ``True`` at positions ``< lengths[b]`` (no host sync)."""
    check_tensor(name, lengths, ndim=1, dtype=_INT_DTYPES)
    pos = torch.arange(max_len, device=lengths.device)
    return pos[None, :] < lengths[:, None]


class AttentionMask:
    """Key (and optional query) validity for masked attention over a padded batch.

    Args:
        key_valid: ``bool [B, Lk]``, ``True`` = may be attended.
        query_valid: ``bool [B, Lq]`` or ``None``.
        key_lengths: optional ``int [B]``; pass it only when ``key_valid[b] == arange(Lk) <
            key_lengths[b]`` holds (the class methods built from lengths do this for you).

    Build with :meth:`from_key_valid`, :meth:`from_key_lengths`, :meth:`from_lengths`,
    :meth:`from_cu_seqlens`, :meth:`from_seqlens` (xformers ``BlockDiagonalMask`` style),
    :meth:`from_xformers_bias` or :meth:`from_block_mask` / :meth:`from_mask_mod`
    (FlexAttention style).
    """

    def __init__(
        self,
        key_valid: Tensor,
        query_valid: Tensor | None = None,
        *,
        key_lengths: Tensor | None = None,
    ) -> None:
        check_tensor("key_valid", key_valid, ndim=2, dtype=torch.bool)
        batch = key_valid.shape[0]
        if query_valid is not None:
            check_tensor(
                "query_valid", query_valid, shape=(batch, None), dtype=torch.bool, device=key_valid.device
            )
        if key_lengths is not None:
            check_tensor(
                "key_lengths", key_lengths, shape=(batch,), dtype=_INT_DTYPES, device=key_valid.device
            )
        self.key_valid: Tensor = key_valid
        self.query_valid: Tensor | None = query_valid
        self._key_lengths: Tensor | None = key_lengths
        self._cache: dict[Any, Any] = {}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_key_valid(cls, key_valid: Tensor, query_valid: Tensor | None = None) -> AttentionMask:
        """From ``key_valid bool [B, Lk]`` and optional ``query_valid bool [B, Lq]``."""
        return cls(key_valid, query_valid)

    @classmethod
    def from_key_lengths(
        cls, key_lengths: Tensor, max_len: int, query_valid: Tensor | None = None
    ) -> AttentionMask:
        """From ``key_lengths int [B]`` (keys ``0 .. len-1`` valid) padded to ``max_len``.

        Lengths are not range-checked (that would need a host sync): values above ``max_len``
        mean "all keys valid", values ``<= 0`` mean "no valid key" (zero output rows).
        """
        check_int("max_len", max_len)
        key_valid = _lengths_to_valid("key_lengths", key_lengths, max_len)
        return cls(key_valid, query_valid, key_lengths=key_lengths.clamp(0, max_len))

    @classmethod
    def from_lengths(
        cls,
        key_lengths: Tensor,
        max_key_len: int,
        query_lengths: Tensor | None = None,
        max_query_len: int | None = None,
    ) -> AttentionMask:
        """FlexAttention-style length description: keys (and queries) valid up to a length.

        ``key_lengths``/``query_lengths``: ``int [B]``. ``max_query_len`` is required with
        ``query_lengths``.
        """
        query_valid = None
        if query_lengths is not None:
            if max_query_len is None:
                raise ValueError("max_query_len must be given together with query_lengths")
            check_int("max_query_len", max_query_len)
            query_valid = _lengths_to_valid("query_lengths", query_lengths, max_query_len)
        return cls.from_key_lengths(key_lengths, max_key_len, query_valid)

    @classmethod
    def from_cu_seqlens(
        cls,
        cu_seqlens_k: Tensor,
        max_seqlen_k: int,
        cu_seqlens_q: Tensor | None = None,
        max_seqlen_q: int | None = None,
    ) -> AttentionMask:
        """Padded-layout mask equivalent to a packed ``cu_seqlens`` description (``int [B+1]``)."""
        check_tensor("cu_seqlens_k", cu_seqlens_k, ndim=1, dtype=_INT_DTYPES)
        if cu_seqlens_k.shape[0] < 1:
            raise ValueError("cu_seqlens_k must have shape [B + 1] with B >= 0, got [0]")
        q_lengths = None
        if cu_seqlens_q is not None:
            check_tensor("cu_seqlens_q", cu_seqlens_q, shape=cu_seqlens_k.shape, dtype=_INT_DTYPES)
            q_lengths = cu_seqlens_q[1:] - cu_seqlens_q[:-1]
        return cls.from_lengths(cu_seqlens_k[1:] - cu_seqlens_k[:-1], max_seqlen_k, q_lengths, max_seqlen_q)

    @classmethod
    def from_seqlens(
        cls,
        kv_seqlen: Sequence[int],
        q_seqlen: Sequence[int] | None = None,
        *,
        kv_padding: int | None = None,
        q_padding: int | None = None,
        device: torch.device | str | None = None,
    ) -> AttentionMask:
        """From per-sample length lists, as in xformers' ``BlockDiagonalMask.from_seqlens``.

        The result describes the *padded* layout (``Lk = kv_padding`` or ``max(kv_seqlen)``).
        Use :func:`maskmm.attention.cu_seqlens_from_seqlens` for the packed layout.
        """
        from .convert import mask_from_seqlens

        return mask_from_seqlens(
            cls, kv_seqlen, q_seqlen, kv_padding=kv_padding, q_padding=q_padding, device=device
        )

    @classmethod
    def from_xformers_bias(cls, bias: Any, *, device: torch.device | str | None = None) -> AttentionMask:
        """From an xformers ``BlockDiagonalMask`` (or ``BlockDiagonalPaddedKeysMask``) object.

        The object is read duck-typed (xformers need not be installed). See
        :func:`maskmm.attention.varlen_from_xformers_bias` for the packed layout.
        """
        from .convert import mask_from_xformers_bias

        return mask_from_xformers_bias(cls, bias, device=device)

    @classmethod
    def from_mask_mod(
        cls,
        mask_mod: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor],
        batch: int,
        q_len: int,
        kv_len: int,
        *,
        heads: int = 1,
        device: torch.device | str | None = None,
        check: bool = True,
    ) -> AttentionMask:
        """From a FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` describing padding.

        The mask is evaluated densely once. maskmm masks are *separable* (``allowed[b, i, j] =
        query_valid[b, i] & key_valid[b, j]``, same for every head); with ``check=True`` this is
        verified (one host sync) and a non-separable mask (causal, sliding window, ...) raises
        ``ValueError``.
        """
        from .convert import mask_from_mask_mod

        return mask_from_mask_mod(
            cls, mask_mod, batch, q_len, kv_len, heads=heads, device=device, check=check
        )

    @classmethod
    def from_block_mask(cls, block_mask: Any, *, check: bool = True) -> AttentionMask:
        """From a FlexAttention ``BlockMask`` whose ``mask_mod`` describes padding (see
        :meth:`from_mask_mod`). The block mask's own cache entry is reused for its shape."""
        from .convert import mask_from_block_mask

        return mask_from_block_mask(cls, block_mask, check=check)

    # ------------------------------------------------------------------ properties
    @property
    def batch_size(self) -> int:
        return self.key_valid.shape[0]

    @property
    def key_len(self) -> int:
        return self.key_valid.shape[1]

    @property
    def query_len(self) -> int | None:
        return None if self.query_valid is None else self.query_valid.shape[1]

    @property
    def device(self) -> torch.device:
        return self.key_valid.device

    @property
    def key_lengths(self) -> Tensor | None:
        """``int [B]`` when the keys are known to be a prefix (built from lengths), else ``None``.

        Never synchronises; see :meth:`is_key_prefix` for boolean masks.
        """
        return self._key_lengths

    def is_key_prefix(self) -> bool:
        """Whether every row of ``key_valid`` is a prefix ``[True]*n + [False]*(Lk-n)``.

        Free when built from lengths. Otherwise performs ONE host sync (cached), and on
        success makes :attr:`key_lengths` available.
        """
        if self._key_lengths is not None:
            return True
        if "is_prefix" not in self._cache:
            lengths = self.key_valid.sum(dim=-1)
            prefix = _lengths_to_valid("key_lengths", lengths, self.key_len)
            ok = bool(torch.equal(prefix, self.key_valid))  # host sync (documented)
            self._cache["is_prefix"] = ok
            if ok:
                self._key_lengths = lengths
        return self._cache["is_prefix"]

    def to(self, device: torch.device | str) -> AttentionMask:
        """The same mask on ``device`` (a new object with empty caches)."""
        qv = None if self.query_valid is None else self.query_valid.to(device)
        kl = None if self._key_lengths is None else self._key_lengths.to(device)
        return AttentionMask(self.key_valid.to(device), qv, key_lengths=kl)

    def __repr__(self) -> str:
        q = "None" if self.query_valid is None else f"bool{list(self.query_valid.shape)}"
        prefix = ", key_lengths" if self._key_lengths is not None else ""
        return f"AttentionMask(key_valid=bool{list(self.key_valid.shape)}, query_valid={q}{prefix})"

    # ------------------------------------------------------------------ cached backend objects
    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """Return ``self._cache[key]``, building it with ``build()`` on first use.

        While ``torch.compile`` traces, a missing entry is built without being stored: the
        compiled graph holds the built object itself, and a traced region (e.g. a checkpointed
        block) then mutates nothing outside it, so it compiles without a graph break."""
        if key not in self._cache:
            if torch.compiler.is_compiling():
                return build()
            self._cache[key] = build()
        return self._cache[key]

    def key_has_valid(self) -> Tensor:
        """``bool [B]``: the sample has at least one valid key."""
        return self.cached("key_any", lambda: self.key_valid.any(dim=-1))

    def row_valid(self, q_len: int) -> Tensor:
        """``bool [B, 1, Lq | 1, 1]``: output rows that are non-zero (valid query with a valid key).

        Broadcasts over heads and, without ``query_valid``, over queries.
        """

        def build() -> Tensor:
            rows = self.key_has_valid()[:, None, None, None]
            if self.query_valid is not None:
                rows = rows & self.query_valid[:, None, :, None]
            return rows

        return self.cached(("row_valid", q_len), build)

    def sdpa_mask(self) -> Tensor:
        """``bool [B, 1, 1, Lk]`` for SDPA: ``key_valid`` where a sample with no valid key may
        attend to key 0 instead (so SDPA produces no NaN); those rows are zeroed afterwards
        with :meth:`row_valid`. Query validity is applied to the output, not here."""

        def build() -> Tensor:
            first = torch.zeros_like(self.key_valid)
            if self.key_len > 0:
                first[:, 0] = True
            fixed = self.key_valid | (first & ~self.key_has_valid()[:, None])
            return fixed[:, None, None, :]

        return self.cached("sdpa_mask", build)

    def sdpa_bias(self, dtype: torch.dtype) -> Tensor:
        """Additive form of :meth:`sdpa_mask`: ``[B, 1, 1, Lk]`` of ``0`` / ``-inf`` in ``dtype``."""

        def build() -> Tensor:
            allowed = self.sdpa_mask()
            zero = torch.zeros((), dtype=dtype, device=self.device)
            return torch.where(allowed, zero, torch.full((), float("-inf"), dtype=dtype, device=self.device))

        return self.cached(("sdpa_bias", dtype), build)

    def flex_mask_mod(self) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
        """FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` equivalent to this mask (cached)."""

        def build() -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
            return _make_mask_mod(self.key_valid, self.query_valid)

        return self.cached("flex_mask_mod", build)

    def flex_block_mask(self, q_len: int, block_size: int | None = None) -> Any:
        """FlexAttention ``BlockMask`` for ``q_len`` queries over this mask's keys.

        Built ONCE per ``(q_len, block_size)`` and reused by every layer. Fully masked key
        and query blocks are absent from it, so the kernel skips them.
        """

        def build() -> Any:
            from torch.nn.attention.flex_attention import create_block_mask

            kwargs = {} if block_size is None else {"BLOCK_SIZE": block_size}
            return create_block_mask(
                self.flex_mask_mod(), self.batch_size, None, q_len, self.key_len, device=self.device, **kwargs
            )

        return self.cached(("flex_block_mask", q_len, block_size), build)


def _make_mask_mod(key_valid: Tensor, query_valid: Tensor | None) -> Callable[..., Tensor]:
    if query_valid is None:

        def key_mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return key_valid[b, kv_idx]

        return key_mask_mod

    def key_query_mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return key_valid[b, kv_idx] & query_valid[b, q_idx]

    return key_query_mask_mod
