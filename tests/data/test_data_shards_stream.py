"""The resumable shard stream (``maskmm.data.shards``): every sample once per epoch over ranks and
workers, and after a kill + resume (same or other number of readers) nothing repeated, nothing lost,
skip counts not counted twice; a simulated training loop consumes the batches."""

from __future__ import annotations

import io
import os
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from maskmm.data.shards import STREAM_POSITION_KEY, ShardStream, StreamCollator, resolve_shards, shard_plan
from maskmm.data.skips import sum_item_skips

Image = pytest.importorskip("PIL.Image", reason="the shard readers need Pillow")

SIZES = [5, 3, 6, 4, 5, 3, 7]  # samples per shard (shard 5 is cut inside its last sample)
DIRTY, CUT = 2, 5  # shard 2: ordinal 1 has a blank caption, ordinal 3 an undecodable image
B = 3  # batch size per rank


def _png(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _write(path, samples) -> None:
    with tarfile.open(path, "w") as tar:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    for s, n in enumerate(SIZES):
        samples = [
            (f"{s}_{k:03d}", {"png": _png(100 * s + k), "txt": f"shard {s} sample {k}".encode()})
            for k in range(n)
        ]
        if s == DIRTY:
            samples[1][1]["txt"] = b"   "
            samples[3][1]["png"] = b"not a png"
        _write(root / f"part-{s:03d}.tar", samples)
    raw = (root / f"part-{CUT:03d}.tar").read_bytes()
    with tarfile.open(root / f"part-{CUT:03d}.tar") as t:
        cut = t.getmember(f"{CUT}_{SIZES[CUT] - 1:03d}.png").offset_data + 5
    (root / f"part-{CUT:03d}.tar").write_bytes(raw[:cut])
    return str(root / "part-{000..006}.tar")


def _usable() -> set[int]:
    out = set()
    for s, n in enumerate(SIZES):
        for k in range(n - (s == CUT)):
            if not (s == DIRTY and k in (1, 3)):
                out.add((s << 32) + k)
    return out


def _collate(items):
    return {
        "index": torch.tensor([it["index"] for it in items]),
        "epoch": torch.tensor([it["epoch"] for it in items]),
        "skipped": sum_item_skips(items),
    }


class Run:
    """A simulated training loop: ``world`` ranks, each with its stream and ``DataLoader``."""

    def __init__(self, pattern, world, workers, state=None, **kw):
        self.streams = [
            ShardStream(pattern, seed=3, num_workers=workers, rank=r, world_size=world, **kw)
            for r in range(world)
        ]
        if state is not None:
            for s in self.streams:
                s.load_state_dict(state)
        self.loaders = [
            iter(DataLoader(s, batch_size=B, collate_fn=StreamCollator(_collate), num_workers=workers))
            for s in self.streams
        ]
        self.batches: list[dict] = []  # in consumption order, rank by rank within a step

    def step(self):
        for stream, loader in zip(self.streams, self.loaders):
            batch = next(loader)
            stream.observe(batch)
            assert STREAM_POSITION_KEY not in batch
            self.batches.append(batch)

    def state(self):
        return ShardStream.merge_states([s.state_dict() for s in self.streams])

    def frontier(self) -> int:
        """The lowest epoch any reader is still in (every epoch below it is fully consumed)."""
        st = self.state()
        return min(min([p[0] for p in s["pending"]], default=s["plan_start"]) for s in st["streams"])


def _items(batches):
    return [(e, i) for b in batches for e, i in zip(b["epoch"].tolist(), b["index"].tolist())]


def _check_once_per_epoch(items, complete_below):
    per_epoch: dict[int, list[int]] = {}
    for e, i in items:
        per_epoch.setdefault(e, []).append(i)
    for e, idx in per_epoch.items():
        counts = Counter(idx)
        assert max(counts.values()) == 1, (
            f"epoch {e}: samples repeated {[i for i, c in counts.items() if c > 1]}"
        )
        assert set(idx) <= _usable()
        if e < complete_below:
            assert set(idx) == _usable(), f"epoch {e}: lost {sorted(_usable() - set(idx))}"
    assert complete_below >= 2


def _check_skips(batches):
    """Skips between two items of a reader are carried by the first one: with the bad records inside
    shards (not at their start), each is counted once per consumed item just before it."""
    items = _items(batches)
    want = {
        "empty_caption": sum(i == (DIRTY << 32) + 0 for _, i in items),
        "bad_image": sum(i == (DIRTY << 32) + 2 for _, i in items),
        "bad_shard": sum(i == (CUT << 32) + SIZES[CUT] - 2 for _, i in items),
    }
    got = Counter()
    for b in batches:
        got.update(b["skipped"])
    assert {k: got[k] for k in want} == want
    assert sum(got.values()) == sum(want.values())


def _drain(run, epochs=2, limit=200):
    for _ in range(limit):
        if run.frontier() >= epochs:
            return
        run.step()
    raise AssertionError("the stream did not get through the epochs")


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 0), (1, 2), (3, 1)])
def test_every_sample_once_per_epoch_over_ranks_and_workers(shards, world, workers):
    run = Run(shards, world, workers)
    _drain(run)
    _check_once_per_epoch(_items(run.batches), run.frontier())
    _check_skips(run.batches)
    assert all(b["index"].numel() == B for b in run.batches)


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["index"].tolist() == y["index"].tolist() and x["epoch"].tolist() == y["epoch"].tolist()
        assert x["skipped"] == y["skipped"]


def test_resume_in_one_process_is_exact_at_every_step(shards):
    total = 16
    ref = Run(shards, 1, 0)
    for _ in range(total):
        ref.step()
    for cut in range(total + 1):
        first = Run(shards, 1, 0)
        for _ in range(cut):
            first.step()
        state = first.state()
        del first  # the "killed" run
        second = Run(shards, 1, 0, state=state)
        for _ in range(total - cut):
            second.step()
        _same(ref.batches[cut:], second.batches)


@pytest.mark.parametrize("world,workers", [(1, 0), (1, 2)])
def test_resuming_again_and_again_is_exact(shards, world, workers):
    chunks = [3, 5, 1, 4, 2, 3]
    ref = Run(shards, world, workers)
    for _ in range(sum(chunks)):
        ref.step()
    state, got = None, []
    for n in chunks:
        run = Run(shards, world, workers, state=state)
        for _ in range(n):
            run.step()
        state, got = run.state(), got + run.batches
    _same(ref.batches, got)


@pytest.mark.parametrize("world,workers,cuts", [(1, 2, (3, 6)), (2, 2, (5,)), (2, 1, (4,))])
def test_resume_with_the_same_readers_is_exact(shards, world, workers, cuts):
    """Workers take turns batch by batch: the resumed loader starts with the worker whose turn it is."""
    total = 10
    ref = Run(shards, world, workers)
    for _ in range(total):
        ref.step()
    for cut in cuts:
        first = Run(shards, world, workers)
        for _ in range(cut):
            first.step()
        second = Run(shards, world, workers, state=first.state())
        for _ in range(total - cut):
            second.step()
        _same(ref.batches[cut * world :], second.batches)


@pytest.mark.parametrize("before,after", [((1, 0), (2, 2)), ((2, 2), (1, 0)), ((3, 0), (1, 2))])
def test_resume_with_other_readers_repeats_and_loses_nothing(shards, before, after):
    first = Run(shards, *before)
    for _ in range(7):  # some readers into epoch 1, others still in epoch 0
        first.step()
    state = first.state()
    with pytest.warns(UserWarning, match="order differs"):
        second = Run(shards, *after, state=state)
    _drain(second, epochs=3)
    batches = first.batches + second.batches
    _check_once_per_epoch(_items(batches), second.frontier())
    _check_skips(batches)


def test_state_round_trips_and_is_plain_data(shards):
    run = Run(shards, 1, 0)
    fresh = run.state()
    assert fresh["streams"] == [{"pending": [], "plan_start": 0}] and fresh["rotation"] == 0
    for _ in range(4):
        run.step()
    state = run.state()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True) == state
    again = ShardStream(shards, seed=3)
    again.load_state_dict(state)
    assert again.state_dict()["streams"] == state["streams"]


def test_fewer_shards_than_readers_split_the_samples_of_a_shard(tmp_path):
    for s in range(2):
        _write(
            tmp_path / f"x-{s}.tar", [(f"{s}_{k}", {"png": _png(k), "txt": b"a caption"}) for k in range(8)]
        )
    pattern = str(tmp_path / "x-{0..1}.tar")
    assert [p.stride for r in range(4) for p in shard_plan(0, r, 4, 2, 0)] == [2, 2, 2, 2]
    ref = Run(pattern, 2, 2)
    for _ in range(8):
        ref.step()
    per_epoch = Counter(e for e, _ in _items(ref.batches))
    assert per_epoch[0] == 16  # all samples of epoch 0 (4 readers x 4), each once
    assert len({i for e, i in _items(ref.batches) if e == 0}) == 16
    first = Run(pattern, 2, 2)
    for _ in range(3):
        first.step()
    second = Run(pattern, 2, 2, state=first.state())
    for _ in range(5):
        second.step()
    _same(ref.batches[6:], second.batches)


def test_a_reader_without_samples_fails_instead_of_stalling(tmp_path):
    _write(tmp_path / "one.tar", [(f"k{k}", {"png": _png(k), "txt": b"caption"}) for k in range(2)])
    ds = ShardStream(str(tmp_path / "one.tar"), rank=2, world_size=3)
    with pytest.raises(
        RuntimeError, match=r"reader 2 of 3 found no usable sample.*fewer shards than readers"
    ):
        next(iter(ds))


def test_shard_patterns_and_refusals(shards, tmp_path):
    root = shards.rsplit("/", 1)[0]
    names = resolve_shards(shards)
    assert len(names) == 7 and names == sorted(names)
    assert resolve_shards(f"{root}/part-*.tar") == names
    assert resolve_shards([f"{root}/part-00{{0,1}}.tar", f"{root}/part-00[5-6].tar"]) == [
        names[i] for i in (0, 1, 5, 6)
    ]
    with pytest.raises(ValueError, match="no file matches"):
        resolve_shards(f"{root}/nothing-*.tar")
    with pytest.raises(ValueError, match="non-empty"):
        resolve_shards([])
    with pytest.raises(ValueError, match="do not exist"):
        ShardStream(f"{root}/part-{{000..009}}.tar")
    with pytest.raises(ValueError, match="num_workers"):
        ShardStream(shards, num_workers=-1)
    ds = ShardStream(shards, seed=3)
    state = ds.state_dict()
    with pytest.raises(ValueError, match="shard list differs"):
        ShardStream(names[:6], seed=3).load_state_dict(state)
    with pytest.raises(ValueError, match="seed differs"):
        ShardStream(shards, seed=4).load_state_dict(state)
    with pytest.raises(ValueError, match="not a ShardStream state"):
        ds.load_state_dict({"streams": []})
    with pytest.raises(TypeError, match="no set_epoch"):
        ds.set_epoch(1)
    with pytest.raises(KeyError, match="StreamCollator"):
        ds.observe({"index": torch.zeros(3)})
    with pytest.raises(ValueError, match="reader 5 of 7"):
        ds.observe({STREAM_POSITION_KEY: torch.tensor([7, 5, 0, 0, 0, 0])})
    with pytest.raises(RuntimeError, match="num_workers=0 but is read by a DataLoader with num_workers=2"):
        next(iter(DataLoader(ds, batch_size=2, num_workers=2)))


def _ddp_worker(rank: int, port: int, pattern: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        seen = []
        stream = ShardStream(pattern, seed=3)  # rank and world size from the process group
        loader = iter(DataLoader(stream, batch_size=B, collate_fn=StreamCollator(_collate)))
        for _ in range(4):
            batch = next(loader)
            stream.observe(batch)
            seen.append(batch["index"].tolist())
        state = stream.gather_state()  # a collective: every rank calls it
        resumed = ShardStream(pattern, seed=3)
        resumed.load_state_dict(state)
        loader = iter(DataLoader(resumed, batch_size=B, collate_fn=StreamCollator(_collate)))
        for _ in range(3):
            batch = next(loader)
            resumed.observe(batch)
            seen.append(batch["index"].tolist())
        torch.save({"state": state, "seen": seen}, f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_gather_state_collects_every_rank_and_resumes_under_ddp(shards, tmp_path):
    from spawn_helpers import free_port, run_ranks

    run_ranks(_ddp_worker, (free_port(), shards, str(tmp_path)))
    ref = Run(shards, 2, 0)
    for _ in range(4):
        ref.step()
    want_state = ref.state()
    for _ in range(3):
        ref.step()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["state"]["streams"] == want_state["streams"]
        assert got["seen"] == [b["index"].tolist() for b in ref.batches[rank::2]]
