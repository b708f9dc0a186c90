"""Real-data paths end to end on an export of the built-in data: ALBEF JSON (one or several files) and a
local tokenizer folder through the trainer, the in-training evaluation on the user's test file, and
``maskmm-eval --test-file`` (the same R@1 as the built-in evaluation of the same images and captions)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from mamo_helpers import SMALL_MODEL
from maskmm.models.mamo.config import load_config

from maskmm.data import ShapesConfig, ShapesDataset, WordTokenizer, named_normalize
from maskmm.data.export import export_albef_json, export_word_tokenizer, quantize_8bit
from maskmm.evaluation.builtin import EvalSet, retrieval_set
from maskmm.evaluation.files import load_retrieval_file
from maskmm.evaluation.run import evaluate, evaluate_retrieval
from maskmm.training import TokenizerIds, get_recipe, read_metrics
from maskmm.training.cli import eval_main, train_main

pytest.importorskip("tokenizers", reason="the tokenizer folder is written with the tokenizers package")
pytest.importorskip("PIL", reason="image files are written and read with Pillow")

SIZE = 32
RUN = [
    *SMALL_MODEL,
    "model.mlp_ratio=2.0",
    "itc.queue_size=0",
    "losses.mim_decoder_depth=0",
    "train.batch_size=4",
    "train.log_every=1",
    "optim.warmup_steps=1",
    "log.progress=false",
    "log.plot=false",
    "eval.num_candidates=12",
    "eval.rerank_k=3",
    "eval.finegrained_samples=0",
    "eval.grounding_samples=0",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    raw = ShapesDataset("train", 24, seed=0, config=ShapesConfig(image_size=SIZE))
    train_a, _ = export_albef_json(raw, range(0, 12), root, name="a", captions_per_image=2)
    train_b, _ = export_albef_json(raw, range(12, 24), root, name="b", captions_per_image=2)
    val = ShapesDataset("val", 12, seed=0, config=ShapesConfig(image_size=SIZE))
    _, test = export_albef_json(val, range(12), root, name="val", captions_per_image=1)
    export_word_tokenizer(WordTokenizer(ShapesConfig(image_size=SIZE)), root / "tok")
    return root, [train_a, train_b], test


def _model(cfg):
    tok = WordTokenizer(ShapesConfig(image_size=SIZE))
    return get_recipe("mamo").build(cfg, TokenizerIds.of(tok)).eval(), tok


def test_exported_test_file_scores_exactly_as_the_builtin_evaluation(exported):
    root, _, test = exported
    cfg = load_config("tiny", [*RUN, "eval.splits=[val]"])
    model, tok = _model(cfg)
    # the built-in evaluation of the same images (as 8-bit files hold them) and captions
    builtin = retrieval_set(cfg, "val", 12)
    raw = ShapesDataset("val", 12, seed=0, config=ShapesConfig(image_size=SIZE))
    images = torch.stack([named_normalize("imagenet")(quantize_8bit(raw[i]["image"])) for i in range(12)])
    same = EvalSet(images, builtin.captions, builtin.image_ids, builtin.text_image_ids, builtin.positives, [])
    want = evaluate_retrieval(model, tok, cfg, "val", data=same)
    data = load_retrieval_file(test, root, image_size=SIZE, normalize="imagenet")
    assert data.captions == builtin.captions
    assert torch.equal(data.images, images)
    got = evaluate_retrieval(model, tok, cfg, "file", data=data)
    for k in ("tr_r1", "tr_r5", "ir_r1", "ir_r5"):
        assert got[f"itc_{k}"] == want[f"strict_itc_{k}"], k  # own caption = the file's positives
    assert got["itm_tr_r1"] == want["strict_itm_tr_r1"] and got["itm_ir_r1"] == want["strict_itm_ir_r1"]


def test_json_training_with_a_tokenizer_folder_and_test_file_evaluation(
    exported, tmp_path, monkeypatch, capsys
):
    root, train_files, test = exported
    tok_copy = tmp_path / "tok"
    shutil.copytree(root / "tok", tok_copy)
    run = tmp_path / "run"
    sets = [
        *RUN,
        "data.kind=json",
        f"data.ann_file=[{train_files[0]},{train_files[1]}]",
        f"data.image_root={root}",
        f"data.tokenizer={tok_copy}",
        f"data.image_size={SIZE}",
        f"eval.test_files=[{test}]",
        f"eval.image_root={root}",
        "train.steps=4",
        "train.eval_every=2",
    ]
    args = [x for o in sets for x in ("--set", o)]
    assert train_main([*args, "--out-dir", str(run), "--quiet"]) == 0
    rows = read_metrics(run / "metrics.jsonl")
    evals = [r for r in rows if "eval/itc_tr_r1" in r]
    assert [r["step"] for r in evals] == [2] and evals[0]["eval/candidates"] == 12.0
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    shutil.rmtree(tok_copy)  # the run keeps its own copy: evaluation does not need the original
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "res.json"
    assert eval_main(["--checkpoint", str(run), "--test-file", str(test), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert list(res) == [f"file:{test}"]  # only the user's test set: never the built-in data unasked
    assert 0.0 <= res[f"file:{test}"]["retrieval"]["itc_tr_r1"] <= 100.0
    assert "file:" in capsys.readouterr().out


def test_eval_refuses_files_it_cannot_read_and_never_scores_other_data_silently(exported, tmp_path, capsys):
    root, train_files, test = exported
    run = tmp_path / "run"
    sets = [
        *RUN,
        "data.kind=json",
        f"data.ann_file={train_files[0]}",
        f"data.image_root={root}",
        f"data.tokenizer={root / 'tok'}",
        "train.steps=1",
    ]
    assert train_main([*(x for o in sets for x in ("--set", o)), "--out-dir", str(run), "--quiet"]) == 0
    with pytest.raises(SystemExit) as e:
        eval_main(["--checkpoint", str(run)])
    assert e.value.code == 2 and "--test-file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as e:
        eval_main(["--checkpoint", str(run), "--test-file", str(bad)])
    assert e.value.code == 2 and str(bad) in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        eval_main(["--checkpoint", str(run), "--test-file", str(test), "--image-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and str(test) in err
    # asked for explicitly, the built-in data is scored, under its own name
    cfg = load_config("tiny", [*RUN, "eval.splits=[val]"])
    model, tok = _model(cfg)
    assert list(evaluate(model, tok, cfg, ["val"], test_files=[])) == ["val"]


def test_json_train_size_draws_a_seeded_subset(exported):
    from maskmm.training.data import build_train_dataset

    root, train_files, _ = exported
    base = [
        *RUN,
        "data.kind=json",
        f"data.ann_file=[{train_files[0]},{train_files[1]}]",
        f"data.image_root={root}",
    ]
    full = build_train_dataset(load_config("tiny", [*base, "data.train_size=0"]))
    assert len(full) == 48
    a = build_train_dataset(load_config("tiny", [*base, "data.train_size=10", "data.seed=1"]))
    b = build_train_dataset(load_config("tiny", [*base, "data.train_size=10", "data.seed=2"]))
    assert len(a) == len(b) == 10 and a.indices != b.indices


def test_retrieval_finetuning_starts_from_a_pretrained_run_at_a_higher_resolution(exported, tmp_path, capsys):
    root, train_files, _ = exported
    pre = tmp_path / "pre"
    sets = [*RUN, "train.steps=2"]
    assert train_main([*(x for o in sets for x in ("--set", o)), "--out-dir", str(pre), "--quiet"]) == 0
    capsys.readouterr()
    # fine-tuning: ITC (positives by image id) + ITM (same-id pairs never negatives) at 48 px
    ft = [
        *RUN,
        "model.image_size=48",
        "data.image_size=48",
        "losses.mlm=false",
        "losses.mrm=false",
        "losses.mim=false",
        "data.kind=json",
        f"data.ann_file={train_files[0]}",
        f"data.image_root={root}",
        f"data.tokenizer={root / 'tok'}",
        f"train.init_from={pre}",
        "train.steps=2",
    ]
    assert (
        train_main([*(x for o in ft for x in ("--set", o)), "--out-dir", str(tmp_path / "ft"), "--quiet"])
        == 0
    )
    err = capsys.readouterr().err
    assert f"train.init_from: {pre / 'model.pt'}" in err and "pos_embed" in err
    # the fine-tuned student starts from the pretrained one: a tensor that did not change size
    from maskmm.training import load_checkpoint

    a = load_checkpoint(pre / "model.pt")["model"]
    name = next(k for k in a if k.endswith("text.embeddings.word_embeddings.weight") and "student" in k)
    b = load_checkpoint(tmp_path / "ft" / "model.pt")["model"]
    assert a[name].shape == b[name].shape and not torch.equal(a[name], torch.zeros_like(a[name]))
    assert (a[name] - b[name]).abs().max() < 0.1  # two small steps away from the pretrained weights


def test_bad_records_are_skipped_counted_logged_and_summarised(exported, tmp_path, capsys):
    root, train_files, _ = exported
    records = json.loads(Path(train_files[0]).read_text())
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    records.append({"image": str(broken), "caption": "a red circle", "image_id": "broken"})
    text = json.dumps(records)[:-1] + ', {"image": "images/a_0.png", "caption": "a red \\ud800 circle"}]'
    ann = tmp_path / "ann.json"
    ann.write_text(text, encoding="utf-8")
    sets = [
        *RUN,
        "data.kind=json",
        f"data.ann_file={ann}",
        f"data.image_root={root}",
        f"data.tokenizer={root / 'tok'}",
        "train.steps=8",
    ]
    run = tmp_path / "run"
    assert train_main([*(x for o in sets for x in ("--set", o)), "--out-dir", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    last = read_metrics(run / "metrics.jsonl")[-1]
    assert last.get("skipped/bad_text", 0) >= 1 and last.get("skipped/bad_image", 0) >= 1, last
    assert "skipped bad records" in err and "bad_text" in err and "bad_image" in err
