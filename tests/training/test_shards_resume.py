"""Training on WebDataset shards through the trainer (``data.kind: shards``): a run stopped after a
checkpoint and resumed consumes exactly the batches of the uninterrupted run (no sample repeated,
none lost) and ends with the same weights, with and without ``DataLoader`` workers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from mamo_helpers import SMALL_MODEL
from maskmm.models.mamo.config import load_config

from maskmm.data import ShapesConfig, ShapesDataset, WordTokenizer
from maskmm.data.export import export_tar_shards, export_word_tokenizer
from maskmm.training import Trainer, read_metrics

pytest.importorskip("tokenizers", reason="the tokenizer folder is written with the tokenizers package")
pytest.importorskip("PIL", reason="image files are written and read with Pillow")

SIZE = 32
STEPS = 8
RUN = [
    *SMALL_MODEL,
    "model.mlp_ratio=2.0",
    "itc.queue_size=0",
    "losses.mim_decoder_depth=0",
    "train.batch_size=4",
    "train.log_every=1",
    f"train.steps={STEPS}",
    "optim.warmup_steps=1",
    "log.progress=false",
    "log.plot=false",
    "eval.finegrained_samples=0",
    "eval.grounding_samples=0",
    "data.kind=shards",
    f"data.image_size={SIZE}",
    "data.train_transform=crop_flip",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    raw = ShapesDataset("train", 26, seed=0, config=ShapesConfig(image_size=SIZE))
    export_tar_shards(raw, range(26), root, name="cc", per_shard=5)  # 6 shards, the last one short
    export_word_tokenizer(WordTokenizer(ShapesConfig(image_size=SIZE)), root / "tok")
    return root


def _run(cfg, steps, resume=None):
    trainer = Trainer("mamo", cfg, resume=resume)
    seen = []
    consume = trainer.next_batch

    def spy():
        batch = consume()
        seen.append(batch["index"].tolist())
        return batch

    trainer.next_batch = spy
    trainer.fit(steps)
    return seen, trainer


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_training_on_shards_consumes_the_uninterrupted_batches(exported, tmp_path, workers):
    sets = [
        *RUN,
        f"data.shards={exported}/cc-{{000000..000005}}.tar",
        f"data.tokenizer={exported / 'tok'}",
        f"train.num_workers={workers}",
    ]
    full_seen, full = _run(load_config("tiny", [*sets, f"train.out_dir={tmp_path / 'full'}"]), STEPS)
    cfg = load_config("tiny", [*sets, f"train.out_dir={tmp_path / 'cut'}"])
    first_seen, _ = _run(cfg, 3)  # stops after step 3 and its checkpoint: the "killed" run
    rest_seen, resumed = _run(cfg, STEPS, resume=tmp_path / "cut")
    assert first_seen + rest_seen == full_seen
    items = [i for batch in full_seen for i in batch]
    samples = {(s << 32) + k for s in range(6) for k in range(5 if s < 5 else 1)}
    assert len(items) == STEPS * 4 and set(items) == samples
    if workers == 0:  # one reader: epoch 0 first, each sample once
        assert sorted(items[:26]) == sorted(samples)
    torch.testing.assert_close(full.model.state_dict(), resumed.model.state_dict(), rtol=0, atol=0)
    loss = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl") if "loss" in r}
    again = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl") if "loss" in r}
    assert again == loss and len(loss) == STEPS
