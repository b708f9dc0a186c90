from __future__ import annotations

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp
from maskmm.models.mamo.config import load_config
from maskmm.models.mamo.train import Trainer

pytestmark = pytest.mark.distributed

SETS = [
    "model.image_size=32",
    "data.image_size=32",
    "model.patch_size=8",
    "model.vision_dim=32",
    "model.text_dim=32",
    "model.vision_depth=1",
    "model.text_depth=1",
    "model.fusion_depth=1",
    "losses.mrm_top_k=1",
    "model.vision_heads=2",
    "model.text_heads=2",
    "model.fusion_heads=2",
    "model.embed_dim=16",
    "itc.queue_size=8",
    "losses.itm=false",
    "losses.mlm=false",
    "losses.mrm=false",
    "losses.mim=false",
    "train.batch_size=4",
    "train.steps=1",
    "data.train_size=16",
    "optim.warmup_steps=0",
    # eps >> |g|: the first AdamW update is ~ lr * g (not lr * sign(g), which would amplify
    # rounding noise in near-zero gradients to full-size differences)
    "optim.eps=1.0",
    "optim.lr=0.1",
    "log.progress=false",
    "log.plot=false",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    tr = Trainer(load_config("tiny", [*SETS, f"train.out_dir={out}"]), device="cpu", log=False)
    tr.fit(progress=False)
    torch.save({k: v for k, v in tr.model.state_dict().items() if "queue" not in k}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_gloo_step_equals_single_process(tmp_path, monkeypatch):
    """ITC with features gathered across 2 ranks + DDP gradient averaging == one process on the
    concatenated batch: identical student, temperature and teacher after one step."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    single = Trainer(load_config("tiny", [*SETS, f"train.out_dir={tmp_path}"]), device="cpu", log=False)
    single.fit(progress=False)
    ref = {k: v for k, v in single.model.state_dict().items() if "queue" not in k}
    ctx = mp.start_processes(
        _worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 150
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the 2-process run did not finish within 150 s")
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got.keys() == ref.keys()
        for k, v in ref.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                assert torch.allclose(got[k], v, atol=2e-6, rtol=1e-5), k
    # the step did change the weights (the comparison is not vacuous)
    init = Trainer(load_config("tiny", [*SETS, f"train.out_dir={tmp_path}"]), device="cpu", log=False)
    w = "student.vision.blocks.0.attn.qkv.weight"
    assert not torch.equal(init.model.state_dict()[w], ref[w])
