"""HFTokenizer: the tokenizer folder and the [CLS] ... [SEP] layout are checked, and a caption that is
not valid Unicode cannot fail a batch."""

from __future__ import annotations

import re

import pytest
import torch

from maskmm.data import HFTokenizer, ImageTextCollator

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is not installed")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle"]


def _word_level(post_processor: bool):
    core = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]")
    )
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    if post_processor:
        core.post_processor = tokenizers.processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


@pytest.fixture
def tok_dir(tmp_path):
    path = tmp_path / "tok"
    _word_level(True).save_pretrained(str(path))
    return path


@pytest.fixture
def no_post_dir(tmp_path):
    path = tmp_path / "tok_no_post"
    _word_level(False).save_pretrained(str(path))
    return path


def test_captions_that_are_not_unicode_do_not_fail_the_batch(tok_dir):
    tok = HFTokenizer(tok_dir)
    out = tok(["a red \ud800 circle", "a red circle"], max_len=8)
    assert out.input_ids[0].tolist() == [2, 5, 6, 1, 7, 3]  # the lone surrogate becomes [UNK]
    assert out.input_ids[1].tolist() == [2, 5, 6, 7, 3, 0]
    items = [
        {"image": torch.zeros(3, 2, 2), "caption": c, "image_id": 0, "index": i}
        for i, c in enumerate(["a \udfff", "red"])
    ]
    batch = ImageTextCollator(tok, 8)(items)
    assert batch["input_ids"].tolist() == [[2, 5, 1, 3], [2, 6, 3, 0]]


def test_folder_without_a_tokenizer_is_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=re.escape(repr(str(empty))) + r" holds no tokenizer") as e:
        HFTokenizer(empty)
    assert "tokenizer.json" in str(e.value) and "vocab.txt" in str(e.value) and "config.json" in str(e.value)
    with pytest.raises(ValueError, match=r"does not exist"):
        HFTokenizer(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"'.*file' is a file, not a local tokenizer directory"):
        HFTokenizer(tmp_path / "file")


def test_unloadable_tokenizer_file_is_named(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tokenizer.json").write_text("not json")
    with pytest.raises(ValueError, match=re.escape(repr(str(bad))) + " could not be loaded"):
        HFTokenizer(bad)


def test_tokenizer_without_cls_sep_post_processor_is_refused(no_post_dir):
    with pytest.raises(ValueError, match=r"does not wrap texts as \[CLS\] \.\.\. \[SEP\]") as e:
        HFTokenizer(no_post_dir)
    assert str(no_post_dir) in str(e.value) and "TemplateProcessing" in str(e.value)
    with pytest.raises(ValueError, match=r"^tokenizer \w+ does not wrap texts"):
        HFTokenizer.from_tokenizer(_word_level(False))
    assert HFTokenizer.from_tokenizer(_word_level(True)).cls_id == 2


def test_mamo_build_tokenizer_names_the_config_field(tmp_path, no_post_dir):
    from maskmm.models.mamo.config import load_config

    from maskmm.training.data import build_tokenizer

    (tmp_path / "empty").mkdir()
    cfg = load_config("tiny", data={"tokenizer": str(tmp_path / "empty")})
    with pytest.raises(ValueError, match=r"'data\.tokenizer': tokenizer folder .*holds no tokenizer"):
        build_tokenizer(cfg)
    cfg = load_config("tiny", data={"tokenizer": str(no_post_dir)})
    with pytest.raises(ValueError, match=r"config field 'data\.tokenizer': .*\[CLS\] \.\.\. \[SEP\]"):
        build_tokenizer(cfg)
