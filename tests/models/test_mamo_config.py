from __future__ import annotations

import dataclasses

import pytest
from maskmm.models.mamo.config import (
    PRESET_DIR,
    MAMOConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)


@pytest.mark.parametrize("name", ["tiny", "base"])
def test_presets_load_and_cover_every_field(name):
    import yaml

    cfg = load_config(name)
    assert cfg.name == name
    with open(PRESET_DIR / f"{name}.yaml") as f:
        raw = yaml.safe_load(f)
    # a preset spells out every field, so copying it gives a complete, editable file
    full = config_to_dict(MAMOConfig())
    for section, values in full.items():
        if isinstance(values, dict):
            assert set(raw[section]) == set(values), section


def test_defaults_match_design():
    cfg = load_config("tiny")
    assert (cfg.masking.image_ratio, cfg.masking.text_ratio) == (0.75, 0.25)
    assert cfg.ema.decay == 0.995 and cfg.itc.temperature == 0.07 and cfg.itc.alpha == 0.4
    assert all(getattr(cfg.losses, n) for n in ("itc", "itm", "mlm", "mrm", "mim"))
    assert cfg.eval.num_candidates == 1000


def test_overrides_parse_types():
    cfg = load_config(
        "tiny",
        [
            "train.steps=17",
            "optim.lr=3e-4",
            "losses.mrm=false",
            "model.fusion=cross",
            "eval.splits=[heldout]",
            "masking.mode=token",
            "optim.weight_decay=0",
        ],
    )
    assert cfg.train.steps == 17 and cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.losses.mrm is False and cfg.model.fusion == "cross" and cfg.masking.mode == "token"
    assert cfg.eval.splits == ["heldout"] and isinstance(cfg.optim.weight_decay, float)


@pytest.mark.parametrize(
    ("override", "exc", "match"),
    [
        ("train.stepz=3", ValueError, "stepz"),
        ("nosection.x=1", ValueError, "nosection"),
        ("train=3", ValueError, "train"),
        ("train.steps=abc", ValueError, "train.steps"),
        ("train.steps=1.5", ValueError, "train.steps"),
        ("losses.itc=maybe", ValueError, "losses.itc"),
        ("optim.lr=inf", ValueError, "optim.lr"),
        ("model.fusion=coattn", ValueError, "model.fusion"),
        ("masking.image_ratio=1.0", ValueError, "masking.image_ratio"),
        ("masking.text_ratio=-0.1", ValueError, "masking.text_ratio"),
        ("itc.temperature=0.9", ValueError, "itc.temperature"),
        ("itm.hardness=1.5", ValueError, "itm.hardness"),
        ("itm.easy_steps=-1", ValueError, "itm.easy_steps"),
        ("model.patch_size=7", ValueError, "model.image_size"),
        ("model.vision_heads=3", ValueError, "model.vision_heads"),
        ("losses.mrm_top_k=9", ValueError, "losses.mrm_top_k"),
        ("train.grad_accum=5", ValueError, "train.grad_accum"),
        ("data.image_size=96", ValueError, "data.image_size"),
        ("ema.schedule=cosine", ValueError, "ema.anneal_steps"),
        ("noequals", ValueError, "section.field=value"),
    ],
)
def test_override_errors_name_the_field(override, exc, match):
    with pytest.raises(exc, match=match):
        load_config("tiny", [override])


def test_itm_hardness_schedule():
    itm = load_config("tiny", ["itm.hardness=0.8", "itm.easy_steps=10", "itm.ramp_steps=20"]).itm
    assert [itm.hardness_at(s) for s in (0, 9, 10, 20, 30, 99)] == pytest.approx([0, 0, 0, 0.4, 0.8, 0.8])
    assert load_config("base").itm.hardness_at(0) == 1.0  # ALBEF: hard negatives from the first step


def test_losses_join_at_their_start_steps():
    L = load_config(
        "tiny", ["losses.itm_start_step=5", "losses.masked_start_step=8", "losses.mrm=false"]
    ).losses
    assert L.active_at(0) == ("itc",) and L.active_at(4) == ("itc",)
    assert L.active_at(5) == ("itc", "itm") and L.active_at(8) == ("itc", "itm", "mlm", "mim")
    with pytest.raises(ValueError, match="no loss at step 0"):
        load_config("tiny", ["losses.itc=false", "losses.itm_start_step=3", "losses.masked_start_step=3"])
    with pytest.raises(ValueError, match=r"losses\.masked_start_step"):
        load_config("tiny", ["losses.masked_start_step=-1"])


def test_all_losses_off_is_an_error():
    offs = [f"losses.{n}=false" for n in ("itc", "itm", "mlm", "mrm", "mim")]
    with pytest.raises(ValueError, match="every loss off"):
        load_config("tiny", offs)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("huge")
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_dump_and_reload_yaml_roundtrip(tmp_path):
    cfg = load_config("tiny", ["train.steps=5", "eval.splits=[val]"])
    dump_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_partial_yaml_uses_defaults(tmp_path):
    (tmp_path / "p.yaml").write_text("train:\n  steps: 3\nlosses:\n  mim: false\n")
    cfg = load_config(tmp_path / "p.yaml")
    assert cfg.train.steps == 3 and cfg.losses.mim is False
    assert cfg.model == dataclasses.replace(MAMOConfig().model)


def test_config_from_dict_applies_overrides_and_refuses_unknown_fields():
    cfg = config_from_dict({"ema": {"decay": 0.99}}, ["train.seed=4"])
    assert cfg.ema.decay == 0.99 and cfg.train.seed == 4
    with pytest.raises(ValueError, match=r"ema\.nope"):
        config_from_dict({"ema": {"nope": 1}})
