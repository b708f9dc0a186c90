"""maskmm.distributed.pad_to_common_length / rescale_to_global_mean: single process and 2 gloo ranks."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from spawn_helpers import free_port, run_ranks

from maskmm.distributed import pad_to_common_length, rescale_to_global_mean

# ---------------------------------------------------------------------------- single process


def test_single_process_is_the_identity():
    ids, valid = torch.arange(6).view(2, 3), torch.ones(2, 3, dtype=torch.bool)
    out = pad_to_common_length([ids, valid], [0, False])
    assert out[0] is ids and out[1] is valid
    loss = torch.tensor(2.5, requires_grad=True)
    assert rescale_to_global_mean(loss, torch.tensor(3)) is loss


def test_rescale_with_a_known_global_count():
    """With world = 1 the share is ``loss * local / global`` (a mean over a subset of the items)."""
    x = torch.tensor([1.0, 2.0, 3.0, 6.0], requires_grad=True)
    local = x[:2].mean()  # 2 of the 4 items
    got = rescale_to_global_mean(local, torch.tensor(2), torch.tensor(4.0))
    torch.testing.assert_close(got, x[:2].sum() / 4)
    (g,) = torch.autograd.grad(got, (x,))
    torch.testing.assert_close(g, torch.tensor([0.25, 0.25, 0.0, 0.0]))
    # nothing anywhere: the graph-connected zero stays zero (no 0 / 0)
    zero = x.sum() * 0.0
    out = rescale_to_global_mean(zero, torch.tensor(0), torch.tensor(0))
    assert out.item() == 0.0 and out.requires_grad
    half = rescale_to_global_mean(torch.tensor(1.0, dtype=torch.bfloat16), torch.tensor(1), torch.tensor(2))
    assert half.dtype == torch.bfloat16 and half.item() == 0.5


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        (dict(loss=torch.ones(2), local_count=torch.tensor(1)), ValueError, "loss must have shape"),
        (dict(loss=torch.tensor(1), local_count=torch.tensor(1)), TypeError, "loss must be a floating"),
        (dict(loss=torch.tensor(1.0), local_count=torch.ones(1)), ValueError, "local_count must have"),
        (dict(loss=torch.tensor(1.0), local_count=3), TypeError, "local_count must be a torch.Tensor"),
        (
            dict(loss=torch.tensor(1.0), local_count=torch.tensor(1), global_count=torch.ones(2)),
            ValueError,
            "global_count must have",
        ),
    ],
)
def test_rescale_errors_name_the_argument(kwargs, err, match):
    with pytest.raises(err, match=match):
        rescale_to_global_mean(**kwargs)


@pytest.mark.parametrize(
    ("tensors", "values", "err", "match"),
    [
        ([], [], TypeError, "tensors must be a non-empty sequence"),
        (torch.ones(2, 3), [0], TypeError, "tensors must be a non-empty sequence"),
        ([torch.ones(2, 3)], [0, 1], ValueError, "values must give one fill value per tensor"),
        ([torch.ones(2, 3)], "0", ValueError, "values must give one fill value per tensor"),
        ([torch.ones(3)], [0], ValueError, r"tensors\[0\] must have shape \[B, L, ...\]"),
        ([torch.ones(2, 3), torch.ones(2, 4)], [0, 0], ValueError, r"tensors\[1\] must have shape \[2, 3"),
        ([torch.ones(2, 3), "x"], [0, 0], TypeError, r"tensors\[1\] must be a torch.Tensor"),
    ],
)
def test_pad_errors_name_the_argument(tensors, values, err, match):
    with pytest.raises(err, match=match):
        pad_to_common_length(tensors, values)


# ---------------------------------------------------------------------------- two gloo ranks


def _worker(rank: int, port: int) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=30)
    )
    try:
        # rank 0: length 3, rank 1: length 5 -> both padded to 5 with the given values
        length = 3 + 2 * rank
        ids = torch.full((2, length, 2), 7 + rank)
        valid = torch.ones(2, length, dtype=torch.bool)
        p_ids, p_valid = pad_to_common_length([ids, valid], [-1, False])
        assert p_ids.shape == (2, 5, 2) and p_valid.shape == (2, 5)
        assert torch.equal(p_ids[:, :length], ids) and (p_ids[:, length:] == -1).all()
        assert p_valid[:, :length].all() and not p_valid[:, length:].any()
        if rank == 1:
            assert p_ids is ids  # already the longest: returned as is
        # different batch sizes are refused on every rank (before any gather could hang)
        with pytest.raises(ValueError, match="same batch size, got sizes from 2 to 3"):
            pad_to_common_length([torch.ones(2 + rank, 4)], [0])

        # items: rank 0 holds [1, 2, 3], rank 1 holds [10]; global mean = 16 / 4 = 4
        x = torch.tensor([1.0, 2.0, 3.0] if rank == 0 else [10.0], requires_grad=True)
        share = rescale_to_global_mean(x.mean(), torch.tensor(x.numel()))  # count all-reduced
        avg = share.detach().clone()
        dist.all_reduce(avg)
        torch.testing.assert_close(avg / 2, torch.tensor(4.0))
        (g,) = torch.autograd.grad(share, (x,))  # / world (DDP averaging) = 1 / global count
        torch.testing.assert_close(g / 2, torch.full_like(x, 0.25))
        known = rescale_to_global_mean(x.mean(), torch.tensor(x.numel()), torch.tensor(4))
        torch.testing.assert_close(known, share)
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_gloo_ranks():
    run_ranks(_worker, (free_port(),), timeout=90)
