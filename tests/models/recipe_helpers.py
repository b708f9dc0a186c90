"""Batches, settings and run checks shared by the recipe tests (MaskVLM, SemMIM)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

VOCAB = 1024  # vocabulary of the test batches
SPECIALS = (0, 1, 2, 3, 4)  # [PAD], [CLS], [SEP], [MASK], [UNK]

#: Overrides of a ``tiny`` preset: one layer per encoder, width 64, 32 px images in 4 x 4 patches of 8 px.
SMALL = [
    "model.image_size=32",
    "data.image_size=32",
    "model.patch_size=8",
    "model.vision_dim=64",
    "model.text_dim=64",
    "model.vision_depth=1",
    "model.text_depth=1",
    "model.fusion_depth=1",
    "model.mlp_ratio=2.0",
    "model.embed_dim=64",
]

#: Overrides that make a ``tiny`` run a few seconds long (on top of a small model).
RUN = [
    "model.image_size=32",
    "data.image_size=32",
    "model.patch_size=8",
    "model.vision_dim=32",
    "model.text_dim=32",
    "model.vision_depth=1",
    "model.text_depth=1",
    "model.fusion_depth=1",
    "model.vision_heads=2",
    "model.text_heads=2",
    "model.fusion_heads=2",
    "model.embed_dim=16",
    "train.batch_size=4",
    "train.steps=4",
    "train.log_every=1",
    "train.save_every=2",
    "train.eval_every=0",
    "train.threads=1",
    "data.train_size=64",
    "optim.warmup_steps=1",
    "itm.easy_steps=1",
    "itm.ramp_steps=2",
    "log.progress=false",
    "log.plot=false",
    "eval.num_candidates=6",
    "eval.rerank_k=2",
    "eval.finegrained_samples=3",
    "eval.grounding_samples=2",
    "eval.splits=[heldout]",
]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Tiny matmuls run fastest single-threaded on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def pair_batch(
    b: int = 5, length: int = 11, size: int = 32, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images [B, 3, size, size], input_ids long [B, L], text_valid bool [B, L])``: captions
    ``[CLS] words [SEP] [PAD]...`` of random lengths in ``[4, L]`` (the first one full)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, size, size, generator=g)
    ids = torch.randint(len(SPECIALS), VOCAB, (b, length), generator=g)
    ids[:, 0] = 1
    lengths = torch.randint(4, length + 1, (b,), generator=g)
    lengths[0] = length
    valid = torch.arange(length)[None] < lengths[:, None]
    ids[torch.arange(b), lengths - 1] = 2
    ids[~valid] = 0
    return images, ids, valid


def gen(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def step_losses(run: Path) -> list[tuple]:
    """``(step, loss, loss_<name>...)`` of every logged training row of a run folder."""
    from maskmm.training import read_metrics

    rows = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    return [
        (r["step"], r["loss"], *sorted((k, v) for k, v in r.items() if k.startswith("loss_"))) for r in rows
    ]


def same_state(a: dict, b: dict) -> bool:
    """Two state dicts hold the same keys and bit-identical values."""
    if a.keys() != b.keys():
        return False
    return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def check_cli_train_resume_eval(recipe: str, tmp: Path, sets: list[str]) -> dict:
    """Train ``recipe`` with ``maskmm-train`` for ``train.steps`` (4) steps; train the same run again,
    stopped after 2 steps, and continue it with ``maskmm-train --resume``: the resumed steps' losses
    and the final state must equal the uninterrupted run's. Then ``maskmm-eval`` the run; returns
    its JSON results."""
    import json

    from maskmm.training import Trainer
    from maskmm.training.checkpoint import load_checkpoint
    from maskmm.training.cli import eval_main, train_main
    from maskmm.training.recipe import get_recipe

    args = [x for o in sets for x in ("--set", o)]
    full, part = tmp / "full", tmp / "part"
    assert train_main(["--recipe", recipe, *args, "--out-dir", str(full), "--quiet"]) == 0
    ref = step_losses(full)
    assert [r[0] for r in ref] == [1, 2, 3, 4]

    r = get_recipe(recipe)
    first = Trainer(r, r.load_config("tiny", [*sets, f"train.out_dir={part}"]), device="cpu")
    first.fit(steps=2)  # an interrupted run: its last checkpoint is step_2.pt
    first.close()
    assert (part / "step_2.pt").is_file() and not (part / "step_4.pt").exists()
    assert train_main(["--recipe", recipe, *args, "--resume", str(part), "--quiet"]) == 0
    assert step_losses(part) == ref  # rows 1-2 from the first part, 3-4 from the resumed run
    a = load_checkpoint(full / "model.pt")["model"]
    b = load_checkpoint(part / "model.pt")["model"]
    assert same_state(a, b)  # every weight, buffer, teacher and centre

    out = tmp / "eval.json"
    assert eval_main(["--checkpoint", str(part), "--json", str(out)]) == 0
    return json.loads(out.read_text())


#: Overrides of a one-step data-parallel check (on top of :data:`RUN`): a global batch of 8 (4 pairs
#: per rank), hard ITM negatives from the first step, and an update large enough to compare.
DDP = [
    "train.batch_size=8",
    "train.steps=1",
    "data.train_size=16",
    "itm.easy_steps=0",
    "itm.ramp_steps=0",
    "optim.warmup_steps=0",
    # eps >> |g|: the first AdamW update is ~ lr * g (not lr * sign(g), which would amplify
    # rounding noise in near-zero gradients to full-size differences)
    "optim.eps=1.0",
    "optim.lr=0.1",
]


def _ddp_worker(rank: int, port: int, out: str, recipe: str, sets: list[str]) -> None:
    import os

    from maskmm.training import Trainer
    from maskmm.training.recipe import get_recipe

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    r = get_recipe(recipe)
    tr = Trainer(r, r.load_config("tiny", [*sets, f"train.out_dir={out}"]), device="cpu", log=False)
    batch = tr.next_batch()
    stats = tr.train_step(batch)
    torch.save(
        {
            "state": tr.model.state_dict(),
            "stats": {k: v.detach().clone() for k, v in stats.items()},
            "text_len": batch["input_ids"].shape[1],
        },
        f"{out}/rank{rank}.pt",
    )
    torch.distributed.destroy_process_group()


def check_ddp_step_equals_single_process(
    recipe: str, tmp: Path, sets: list[str], losses: tuple[str, ...]
) -> None:
    """One training step of ``recipe`` on two gloo ranks of 4 pairs equals the step of one process on
    their 8 pairs: every floating state entry (student, teacher, temperature, queue, centres) and the
    mean of the ranks' ``losses``. The ranks' captions differ in padded length and masked-token
    count, so the common padding, the global-batch draws and the global-count means are exercised.
    (Unset ``WORLD_SIZE`` first.)"""
    from spawn_helpers import free_port, run_ranks

    from maskmm.training import Trainer
    from maskmm.training.recipe import get_recipe

    r = get_recipe(recipe)
    sets = [*sets, f"train.out_dir={tmp}"]
    single = Trainer(r, r.load_config("tiny", sets), device="cpu", log=False)
    init = {k: v.clone() for k, v in single.model.state_dict().items() if isinstance(v, torch.Tensor)}
    # the single run's first batch is the ranks' batches in rank order
    ref_stats = single.train_step(single.next_batch())
    ref = single.model.state_dict()

    run_ranks(_ddp_worker, (free_port(), str(tmp), recipe, sets))
    got = [torch.load(tmp / f"rank{i}.pt", weights_only=True) for i in range(2)]
    assert got[0]["text_len"] != got[1]["text_len"]
    for rank in range(2):
        state = got[rank]["state"]
        assert state.keys() == ref.keys()
        for k, v in ref.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                assert torch.allclose(state[k], v, atol=2e-6, rtol=1e-5), (rank, k)
    for name in losses:
        mean = (got[0]["stats"][f"loss_{name}"] + got[1]["stats"][f"loss_{name}"]) / 2
        assert torch.allclose(mean, ref_stats[f"loss_{name}"], atol=1e-5, rtol=1e-5), name
    changed = [k for k, v in init.items() if v.is_floating_point() and not torch.equal(v, ref[k])]
    assert changed  # the step moved the weights: the comparison is not vacuous
