"""FeatureQueue wrap-around against a one-row-at-a-time ring buffer."""

from __future__ import annotations

import pytest
import torch

from maskmm.losses import FeatureQueue


def _push_one_by_one(size, dim, batches):
    img = torch.zeros(size, dim)
    txt = torch.zeros(size, dim)
    ids = torch.full((size,), -1)
    valid = torch.zeros(size, dtype=torch.bool)
    ptr = 0
    for bi, bt, bid in batches:
        for r in range(bi.shape[0]):
            img[ptr], txt[ptr], ids[ptr], valid[ptr] = bi[r], bt[r], bid[r], True
            ptr = (ptr + 1) % size
    return img, txt, ids, valid, ptr


@pytest.mark.parametrize("sizes", [[3, 3, 3, 3], [4, 7, 2], [12], [25, 5], [1, 30, 6], [0, 5]])
def test_enqueue_wraps_for_any_batch_size(sizes) -> None:
    size, dim = 10, 3
    g = torch.Generator().manual_seed(0)
    counter = 0
    batches = []
    for n in sizes:
        batches.append(
            (
                torch.randn(n, dim, generator=g),
                torch.randn(n, dim, generator=g),
                torch.arange(counter, counter + n),
            )
        )
        counter += n
    queue = FeatureQueue(dim, size)
    for bi, bt, bid in batches:
        queue.enqueue(bi, bt, bid)
    img, txt, ids, valid, ptr = _push_one_by_one(size, dim, batches)
    assert torch.equal(queue.image, img) and torch.equal(queue.text, txt)
    assert torch.equal(queue.ids, ids) and torch.equal(queue.valid, valid)
    assert int(queue.ptr) == ptr


def test_batch_larger_than_queue_keeps_newest() -> None:
    queue = FeatureQueue(2, 4)
    x = torch.arange(18.0).reshape(9, 2)
    queue.enqueue(x, -x, torch.arange(9))
    assert set(queue.ids.tolist()) == {5, 6, 7, 8}
    for slot in range(4):
        i = int(queue.ids[slot])
        assert torch.equal(queue.image[slot], x[i]) and torch.equal(queue.text[slot], -x[i])


def test_state_dict_round_trip_and_missing_ids() -> None:
    q = FeatureQueue(3, 5)
    q.enqueue(torch.randn(4, 3), torch.randn(4, 3))
    assert torch.equal(q.ids, torch.full((5,), -1))
    q2 = FeatureQueue(3, 5)
    q2.load_state_dict(q.state_dict())
    for name in ("image", "text", "ids", "valid", "ptr"):
        assert torch.equal(getattr(q, name), getattr(q2, name))


def test_bad_inputs_raise() -> None:
    q = FeatureQueue(3, 5)
    with pytest.raises(ValueError, match="text"):
        q.enqueue(torch.randn(4, 3), torch.randn(3, 3))
    with pytest.raises(ValueError, match="image"):
        q.enqueue(torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(TypeError, match="ids"):
        q.enqueue(torch.randn(4, 3), torch.randn(4, 3), torch.arange(4.0))
    with pytest.raises(ValueError, match="size"):
        FeatureQueue(3, 0)


def test_non_floating_dtype_raises() -> None:
    with pytest.raises(TypeError, match="dtype"):
        FeatureQueue(3, 5, dtype=torch.long)
    with pytest.raises(TypeError, match="dim"):
        FeatureQueue(3.0, 5)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_enqueue_leaves_queue_untouched_by_a_non_finite_batch(bad) -> None:
    g = torch.Generator().manual_seed(1)
    queue, ref = FeatureQueue(3, 10), FeatureQueue(3, 10)
    first = (torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), torch.arange(4))
    queue.enqueue(*first)
    ref.enqueue(*first)
    poisoned = torch.randn(5, 3, generator=g)
    poisoned[2, 1] = bad
    queue.enqueue(poisoned, torch.randn(5, 3, generator=g), torch.arange(4, 9))
    queue.enqueue(torch.randn(3, 3, generator=g), poisoned[:3], torch.arange(9, 12))
    for name, value in ref.state_dict().items():
        assert torch.equal(queue.state_dict()[name], value), name
    # a finite batch after the bad ones is written where the pointer was left
    last = (torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g), torch.arange(20, 22))
    queue.enqueue(*last)
    ref.enqueue(*last)
    for name, value in ref.state_dict().items():
        assert torch.equal(queue.state_dict()[name], value), name
    assert int(queue.ptr) == 6
