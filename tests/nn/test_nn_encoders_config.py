"""The shared encoder section: pretrained initialisation from local Hugging Face folders via the config."""

from __future__ import annotations

import pytest
import torch
from maskmm.models.mamo.config import load_config

from maskmm.nn.encoders_config import EncodersConfig, build_encoders

transformers = pytest.importorskip(
    "transformers", reason="the reference checkpoints are written with transformers"
)

SMALL = dict(
    image_size=32,
    patch_size=8,
    vision_dim=32,
    vision_depth=2,
    vision_heads=2,
    text_dim=32,
    text_depth=1,
    text_heads=2,
    fusion_depth=1,
    fusion_heads=2,
    mlp_ratio=2.0,
    max_text_len=16,
    fusion="cross",
)


def _bert(folder):
    cfg = transformers.BertConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    model = transformers.BertModel(cfg, add_pooling_layer=False)
    model.save_pretrained(folder)
    return model


def _vit(folder):
    cfg = transformers.ViTConfig(
        image_size=16,  # a smaller grid than the model's: the position table is resampled
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    model = transformers.ViTModel(cfg, add_pooling_layer=False)
    model.save_pretrained(folder)
    return model


def test_config_loads_pretrained_encoders_and_reports_keys(tmp_path, capsys):
    bert, vit = _bert(tmp_path / "bert"), _vit(tmp_path / "vit")
    cfg = EncodersConfig(**SMALL, vision_init=str(tmp_path / "vit"), text_init=str(tmp_path / "bert"))
    cfg.check()
    vision, text, fusion = build_encoders(cfg, vocab_size=40)
    err = capsys.readouterr().err
    assert "model.vision_init: loaded" in err and "resampled 1 (pos_embed)" in err
    assert "model.text_init: loaded" in err and "missing" in err  # ALBEF: fresh cross-attention
    hf_word = bert.embeddings.word_embeddings.weight
    ours = [p for n, p in text.named_parameters() if p.shape == hf_word.shape]
    assert any(torch.equal(p, hf_word) for p in ours)
    sd = vit.state_dict()
    patch = next(v for k, v in sd.items() if k.endswith("patch_embeddings.projection.weight"))
    assert any(torch.equal(p, patch) for p in vision.parameters() if p.shape == patch.shape)
    # the fusion takes the source's second layer (text 0, fusion 1), as ALBEF splits BERT
    hf_ffn = next(v for k, v in bert.state_dict().items() if k.endswith("layer.1.intermediate.dense.weight"))
    assert any(torch.equal(p, hf_ffn) for p in fusion.parameters() if p.shape == hf_ffn.shape)


def test_missing_init_path_is_refused_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"model\.text_init"):
        load_config("tiny", [f"model.text_init={tmp_path / 'nope'}"])
