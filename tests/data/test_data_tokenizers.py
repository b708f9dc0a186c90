"""WordTokenizer and HFTokenizer: layout, round trip, word ids, truncation, errors."""

from __future__ import annotations

import pytest
import torch

from maskmm.data import HFTokenizer, ShapesDataset, WordTokenizer


def _reference_encode(tok: WordTokenizer, text: str, max_len: int) -> list[int]:
    words = text.lower().split()
    ids = [tok.vocab.get(w, 4) for w in words][: max_len - 2]
    return [1, *ids, 2]


def test_specials_and_vocab():
    tok = WordTokenizer()
    assert tok.itos[:5] == ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]
    assert (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.unk_id) == (0, 1, 2, 3, 4)
    assert tok.special_ids == [0, 1, 2, 3, 4]
    assert len(set(tok.itos)) == tok.vocab_size == len(tok)
    # every word the dataset can produce is in the vocabulary
    ds = ShapesDataset("train", 300, seed=1)
    words = {w for i in range(len(ds)) for w in ds.scene(i).caption.split()}
    assert words <= set(tok.vocab)


def test_encode_layout_matches_reference_and_round_trips():
    tok = WordTokenizer()
    ds = ShapesDataset("val", 17, seed=3)
    texts = [ds.scene(i).caption for i in range(17)] + ["A purple Zebra", ""]
    out = tok(texts, max_len=30)
    lengths = [len(t.split()) + 2 for t in texts]
    assert out.input_ids.shape == (19, max(lengths)) and out.input_ids.dtype == torch.long
    assert out.valid.dtype == torch.bool and out.word_ids.dtype == torch.long
    for i, t in enumerate(texts):
        ref = _reference_encode(tok, t, 30)
        n = len(ref)
        assert out.input_ids[i, :n].tolist() == ref
        assert out.input_ids[i, n:].eq(0).all()
        assert out.valid[i].tolist() == [True] * n + [False] * (out.valid.shape[1] - n)
        assert out.word_ids[i, :n].tolist() == [-1, *range(n - 2), -1]
        assert out.word_ids[i, n:].eq(-1).all()
        if i < 17:
            assert tok.decode(out.input_ids[i]) == t
    assert tok.decode(out.input_ids[17]) == "a purple [UNK]"
    assert tok.batch_decode(out.input_ids)[:17] == texts[:17]
    assert tok.decode(out.input_ids[0], skip_special=False).startswith("[CLS] ")


def test_truncation_and_fixed_padding():
    tok = WordTokenizer()
    text = "there is a large red circle left of a small blue square and a large green star at the top"
    out = tok([text, "a red"], max_len=7, padding="max_length")
    assert out.input_ids.shape == (2, 7)
    assert out.input_ids[0].tolist() == _reference_encode(tok, text, 7)
    assert out.input_ids[0, -1] == tok.sep_id and out.valid[0].all()
    assert out.input_ids[1].tolist() == [1, tok.vocab["a"], tok.vocab["red"], 2, 0, 0, 0]
    # a single string is a batch of one
    assert tok("a red", max_len=5).input_ids.shape == (1, 4)


def test_from_texts_save_load(tmp_path):
    tok = WordTokenizer.from_texts(["b a b", "c, b"], min_count=1)
    assert tok.itos[5:] == ["b", "a", "c", ","]
    assert WordTokenizer.from_texts(["b a b", "c b"], min_count=2).itos[5:] == ["b"]
    tok.save(tmp_path / "vocab.json")
    again = WordTokenizer.load(tmp_path / "vocab.json")
    assert again.itos == tok.itos
    assert torch.equal(again(["a c, b"], 8).input_ids, tok(["a c, b"], 8).input_ids)


def test_word_tokenizer_bad_input():
    tok = WordTokenizer()
    with pytest.raises(ValueError, match="max_len"):
        tok(["a"], max_len=1)
    with pytest.raises(TypeError, match="texts"):
        tok([1, 2], max_len=5)
    with pytest.raises(ValueError, match="padding"):
        tok(["a"], max_len=5, padding="right")
    with pytest.raises(ValueError, match="ids"):
        tok.decode(torch.tensor([1, 999]))
    with pytest.raises(TypeError, match="words"):
        WordTokenizer("abc")


def _local_bert_dir(tmp_path):
    """A BERT-like WordPiece tokenizer built offline and saved to a local directory."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is not installed")
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "a",
        "red",
        "circle",
        "left",
        "of",
        "square",
        "##s",
    ]
    core = tokenizers.Tokenizer(
        tokenizers.models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]")
    )
    core.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    core.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    core.decoder = tokenizers.decoders.WordPiece()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    out = tmp_path / "tok"
    tok.save_pretrained(str(out))
    return out, vocab


def test_hf_tokenizer_from_local_directory(tmp_path):
    path, vocab = _local_bert_dir(tmp_path)
    tok = HFTokenizer(path)
    assert (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 2, 3, 4)
    assert set(tok.special_ids) == {0, 1, 2, 3, 4}
    out = tok(["a red circle left of squares", "a Zebra"], max_len=16)
    ids = out.input_ids
    v = {w: i for i, w in enumerate(vocab)}
    assert ids[0].tolist() == [2, v["a"], v["red"], v["circle"], v["left"], v["of"], v["square"], v["##s"], 3]
    assert ids[1].tolist() == [2, v["a"], v["[UNK]"], 3, 0, 0, 0, 0, 0]
    assert out.valid[1].tolist() == [True] * 4 + [False] * 5
    # sub-word pieces share a word id (whole-word masking)
    assert out.word_ids[0].tolist() == [-1, 0, 1, 2, 3, 4, 5, 5, -1]
    assert tok.decode(ids[0]) == "a red circle left of squares"
    assert tok(["a red circle left of squares"], max_len=4).input_ids.tolist() == [[2, 5, 6, 3]]


def test_hf_tokenizer_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="local tokenizer directory"):
        HFTokenizer(tmp_path / "missing")
    with pytest.raises(TypeError, match="path"):
        HFTokenizer(3)
    with pytest.raises(TypeError, match="fast tokenizer"):
        HFTokenizer.from_tokenizer(object())
    import sys

    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "tokenizer.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)  # simulate a missing package
    with pytest.raises(ImportError, match="pip install transformers"):
        HFTokenizer(tmp_path / "dir")
