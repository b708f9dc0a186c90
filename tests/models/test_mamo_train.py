from __future__ import annotations

import json

import pytest
import torch
from mamo_helpers import SMALL_MODEL
from maskmm.models.mamo.config import load_config

from maskmm.training import Inference as MAMOInference
from maskmm.training import Trainer, read_metrics
from maskmm.training.cli import eval_main, train_main

TINY = [
    *SMALL_MODEL,
    "model.mlp_ratio=2.0",
    "itc.queue_size=8",
    "losses.mim_decoder_depth=0",
    "train.batch_size=4",
    "train.steps=4",
    "train.log_every=1",
    "train.save_every=2",
    "data.train_size=64",
    "optim.warmup_steps=1",
    "itc.alpha_warmup_steps=3",
    "log.progress=false",
    "log.plot=false",
    "eval.num_candidates=6",
    "eval.rerank_k=2",
    "eval.finegrained_samples=3",
    "eval.grounding_samples=2",
    "eval.splits=[heldout]",
]


def _losses(history):
    return [(r["step"], r["loss"], r["loss_itc"], r["loss_mrm"]) for r in history if "loss" in r]


def test_resume_reproduces_uninterrupted_run_exactly(tmp_path):
    full = Trainer("mamo", load_config("tiny", [*TINY, f"train.out_dir={tmp_path / 'a'}"]), device="cpu")
    ref = full.fit()
    full.close()
    assert ref.step == 4 and len(_losses(ref.history)) == 4

    part = Trainer("mamo", load_config("tiny", [*TINY, f"train.out_dir={tmp_path / 'b'}"]), device="cpu")
    part.fit(steps=2)
    part.close()
    assert (tmp_path / "b" / "step_2.pt").is_file()

    again = Trainer(
        "mamo",
        load_config("tiny", [*TINY, f"train.out_dir={tmp_path / 'b'}"]),
        device="cpu",
        resume=tmp_path / "b",
    )
    assert again.step == 2
    res = again.fit()
    again.close()
    assert _losses(res.history) == _losses(ref.history)[2:]
    # teacher and queue are part of the state and match too
    a, b = full.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)
    rows = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_cli_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    sets = [x for o in TINY for x in ("--set", o)]
    assert train_main([*sets, "--set", "train.steps=2", "--out-dir", str(out), "--quiet"]) == 0
    assert (out / "model.pt").is_file() and (out / "config.yaml").is_file()
    assert eval_main(["--checkpoint", str(out), "--json", str(tmp_path / "e.json")]) == 0
    table = capsys.readouterr().out
    assert "heldout (6 candidates)" in table and "ITM re-rank" in table
    res = json.loads((tmp_path / "e.json").read_text())
    r = res["heldout"]["retrieval"]
    assert all(0.0 <= r[k] <= 100.0 for k in ("itc_tr_r1", "itc_ir_r1", "itm_tr_r1", "itm_ir_r10"))
    assert set(res["heldout"]["finegrained"]) >= {"colour", "shape", "mean"}
    assert set(res["heldout"]["finegrained_itc"]) == set(res["heldout"]["finegrained"])
    assert "fine-grained ITM acc" in table and "fine-grained ITC acc" in table
    assert {"pointing", "energy", "box_fraction"} <= set(res["heldout"]["grounding"])
    with pytest.raises(SystemExit) as exc:
        eval_main(["--checkpoint", str(out), "--set", "train.steps=3"])
    assert exc.value.code == 2 and "only overrides eval.* fields" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        train_main(["--set", "train.nope=1"])
    assert exc.value.code == 2 and "config field 'train.nope'" in capsys.readouterr().err


def test_inference_api(tmp_path):
    cfg = load_config("tiny", [*TINY, f"train.out_dir={tmp_path}", "train.steps=1"])
    tr = Trainer("mamo", cfg, device="cpu")
    tr.fit()
    tr.close()
    inf = MAMOInference.load(tmp_path)
    images = torch.rand(3, 3, 32, 32)
    img = inf.encode_images(images)
    txt = inf.encode_texts(["a red circle", "a small blue square on the left", "two stars"])
    assert img.states.shape[:2] == (3, 17) and txt.feat.shape == (3, 16)
    assert torch.allclose(txt.feat.norm(dim=-1), torch.ones(3), atol=1e-5)
    sims = inf.itc_scores(img, txt)
    assert sims.shape == (3, 3) and sims.abs().max() <= 1.0 + 1e-5
    probs = inf.itm_scores(img, txt)
    assert probs.shape == (3,) and ((probs >= 0) & (probs <= 1)).all()
    # the model's own outputs agree with a direct computation
    direct = tr.model.eval().itm_logits(img.states, txt.states, txt.valid).softmax(-1)[:, 1]
    assert torch.allclose(probs, direct, atol=1e-6)
    order, scores = inf.rank(images[0], ["a red circle", "a green star", "a blue cross"], k=2)
    assert sorted(order.tolist()) == [0, 1, 2] and (scores[:-1] >= scores[1:]).all()
    with pytest.raises(ValueError, match="does not exist"):
        MAMOInference.load(tmp_path / "missing.pt")


def test_losses_join_at_their_start_steps_in_the_loop(tmp_path):
    sets = [*TINY, f"train.out_dir={tmp_path}", "losses.itm_start_step=2", "losses.masked_start_step=3"]
    res = Trainer("mamo", load_config("tiny", sets), device="cpu", log=False).fit()
    seen = {r["step"]: {k[5:] for k in r if k.startswith("loss_")} for r in res.history}
    assert seen[1] == seen[2] == {"itc"}  # steps are logged 1-based: step 2 ran at 0-based step 1
    assert seen[3] == {"itc", "itm"}
    assert seen[4] == {"itc", "itm", "mlm", "mrm", "mim"}
    assert "itm/hardness" not in res.history[0]  # ITM not active yet
    assert [r["itm/hardness"] for r in res.history[2:]] == [0.0, 0.0]  # easy phase
