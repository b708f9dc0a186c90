"""ITC of the tiny preset learns: a contrastive-only model overfits one fixed batch of real pairs."""

from __future__ import annotations

import torch
from maskmm.models.mamo.config import load_config
from maskmm.models.mamo.train import Trainer

SMALL = [
    "model.image_size=32",
    "data.image_size=32",
    "model.patch_size=8",
    "model.vision_dim=32",
    "model.text_dim=32",
    "model.vision_depth=1",
    "model.text_depth=1",
    "model.fusion_depth=2",
    "model.vision_heads=2",
    "model.text_heads=2",
    "model.fusion_heads=2",
    "model.embed_dim=16",
    "losses.itm=false",
    "losses.mlm=false",
    "losses.mrm=false",
    "losses.mim=false",
    "train.batch_size=8",
    "data.train_size=64",
    "optim.warmup_steps=0",
    "train.steps=80",
    "log.progress=false",
]


def test_tiny_preset_queues_only_momentum_keys():
    # a queue of online (non-momentum) keys collapses the ITC features from scratch
    itc = load_config("tiny").itc
    assert itc.momentum_keys or itc.queue_size == 0


def test_contrastive_only_overfits_a_fixed_batch(tmp_path):
    tr = Trainer(load_config("tiny", [*SMALL, f"train.out_dir={tmp_path}"]), device="cpu", log=False)
    batch = tr.next_batch()
    assert batch["image_ids"].unique().numel() == batch["image_ids"].numel()  # distinct positives
    m = tr.model.student
    frozen = [n for n, p in m.named_parameters() if not p.requires_grad]
    assert all(n.startswith(("fusion.", "vision.mask_token")) for n in frozen), frozen
    before = {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}
    for _ in range(80):
        stats = tr.train_step(batch)
    tr.close()
    for prefix in ("vision.", "text.", "vision_proj.", "text_proj."):
        moved = [
            not torch.equal(p, before[n])
            for n, p in m.named_parameters()
            if n in before and n.startswith(prefix)
        ]
        assert moved and all(moved), prefix
    assert stats["itc/i2t_acc"].item() == 1.0
    assert stats["itc/t2i_acc"].item() == 1.0
