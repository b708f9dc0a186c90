"""A ring buffer of image features, text features and ids for contrastive losses."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maskmm._checks import check_floating, check_int, check_same_device, check_tensor

__all__ = ["FeatureQueue"]


class FeatureQueue(nn.Module):
    """Ring buffer of ``size`` (image feature, text feature, id) entries, held as buffers.

    Buffers (saved in ``state_dict``): ``image [size, dim]``, ``text [size, dim]``,
    ``ids long [size]`` (``-1`` where no id was given), ``valid bool [size]`` (entries
    written at least once) and ``ptr long []`` (next write position).

    :meth:`enqueue` behaves as if the ``n`` rows were pushed one at a time: any ``n``
    works (no divisibility requirement); writes wrap around the end; when
    ``n >= size`` only the newest ``size`` rows are kept. A batch holding any non-finite
    value is not written at all (the queue and its pointer stay as they were), so one bad
    step cannot poison the keys of the steps after it. All index arithmetic and that check
    stay on the device (no host synchronisation).
    """

    image: Tensor
    text: Tensor
    ids: Tensor
    valid: Tensor
    ptr: Tensor

    def __init__(self, dim: int, size: int, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        self.size = check_int("size", size, minimum=1)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        self.register_buffer("image", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("text", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("valid", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, image: Tensor, text: Tensor, ids: Tensor | None = None) -> None:
        """Push ``image [n, dim]``, ``text [n, dim]`` and ``ids long [n]`` (or ``None`` -> ``-1``)."""
        check_floating("image", image, shape=(None, self.dim))
        n = image.shape[0]
        check_floating("text", text, shape=(n, self.dim))
        if ids is not None:
            check_tensor("ids", ids, shape=(n,), dtype=torch.long)
        check_same_device(image=image, text=text, ids=ids, queue=self.image)
        if n == 0:
            return
        k = min(n, self.size)
        pos = (self.ptr + torch.arange(n - k, n, device=self.ptr.device)) % self.size
        image, text = image[n - k :].detach(), text[n - k :].detach()
        keep = torch.isfinite(image).all() & torch.isfinite(text).all()  # bool [], on the device
        self.image.index_copy_(0, pos, torch.where(keep, image.to(self.image.dtype), self.image[pos]))
        self.text.index_copy_(0, pos, torch.where(keep, text.to(self.text.dtype), self.text[pos]))
        new_ids = (
            ids[n - k :] if ids is not None else torch.full((k,), -1, device=pos.device, dtype=torch.long)
        )
        self.ids.index_copy_(0, pos, torch.where(keep, new_ids, self.ids[pos]))
        self.valid.index_copy_(0, pos, self.valid[pos] | keep)
        self.ptr.copy_((self.ptr + n * keep) % self.size)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, size={self.size}"
