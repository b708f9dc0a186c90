"""Weight import: Hugging Face BERT / ViT / DeiT give the same outputs as the originals after
import; timm-layout round trip; position-table resampling; loading from files and folders."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from maskmm.nn import (
    CoAttentionFusion,
    CrossAttentionFusion,
    FusionConfig,
    MaskedTokenHead,
    MergedFusion,
    TextConfig,
    TextEncoder,
    VisionConfig,
    VisionTransformer,
    build_encoders,
)
from maskmm.nn.weights import import_bert, import_vit, load_state_dict

transformers = pytest.importorskip("transformers", reason="transformers is needed to build reference models")

H, HEADS, INTER, VOCAB, MAXPOS = 32, 4, 48, 97, 24


def _bert_config(layers: int, **kw):
    return transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=H,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        intermediate_size=INTER,
        max_position_embeddings=MAXPOS,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
        **kw,
    )


def _text_cfg(depth: int) -> TextConfig:
    return TextConfig(
        vocab_size=VOCAB,
        dim=H,
        depth=depth,
        num_heads=HEADS,
        intermediate_size=INTER,
        max_position=MAXPOS,
        dropout=0.0,
        attn_dropout=0.0,
    )


def _fusion_cfg(kind: str, depth: int = 2, **kw) -> FusionConfig:
    return FusionConfig(
        kind=kind,
        dim=H,
        depth=depth,
        num_heads=HEADS,
        intermediate_size=INTER,
        dropout=0.0,
        attn_dropout=0.0,
        **kw,
    )


def _randomise(model: torch.nn.Module) -> None:
    # HF initialises LayerNorms to identity and biases to zero; make every weight matter
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


def _text_batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (3, 13), generator=g)
    valid = torch.arange(13)[None] < torch.tensor([13, 8, 1])[:, None]
    ids = ids.masked_fill(~valid, 0)
    types = torch.randint(0, 2, (3, 13), generator=g)
    return ids, valid, types


def _additive(valid: torch.Tensor) -> torch.Tensor:
    return torch.zeros(valid.shape, dtype=torch.float32).masked_fill(~valid, torch.finfo(torch.float32).min)[
        :, None, None, :
    ]


@pytest.mark.parametrize("backend", ["sdpa", "reference"])
def test_hf_bert_text_encoder_matches_after_import(backend: str) -> None:
    hf = transformers.BertModel(_bert_config(2)).eval()
    _randomise(hf)
    ids, valid, types = _text_batch()
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=valid.long(), token_type_ids=types).last_hidden_state
    enc = TextEncoder(dataclasses.replace(_text_cfg(2), attn_backend=backend)).eval()
    report = import_bert(hf.state_dict(), text_encoder=enc)
    assert report.missing_keys == []
    assert report.unexpected_keys and all(k.startswith("pooler.") for k in report.unexpected_keys)
    got = enc(ids, valid, token_type_ids=types).last_hidden
    torch.testing.assert_close(got[valid], want[valid], atol=1e-5, rtol=1e-5)


def test_hf_bert_cross_fusion_matches_after_import() -> None:
    hf = transformers.BertModel(_bert_config(4, is_decoder=True, add_cross_attention=True)).eval()
    _randomise(hf)
    ids, valid, types = _text_batch()
    image = torch.randn(3, 6, H)
    image_valid = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 0, 1, 0, 1, 0]], dtype=torch.bool)
    with torch.no_grad():  # HF layers run bidirectionally with explicit additive masks
        h = hf.embeddings(input_ids=ids, token_type_ids=types)
        for i, layer in enumerate(hf.encoder.layer):
            kw = (
                {}
                if i < 2
                else dict(encoder_hidden_states=image, encoder_attention_mask=_additive(image_valid))
            )
            h = layer(h, _additive(valid), **kw)
            h = h[0] if isinstance(h, tuple) else h
    enc, fusion = TextEncoder(_text_cfg(2)).eval(), CrossAttentionFusion(_fusion_cfg("cross")).eval()
    report = import_bert(hf.state_dict(), text_encoder=enc, fusion=fusion)
    assert report.missing_keys == []
    # layers 0-1 of this HF model carry (unused) cross-attention; layers 2-3's is used
    assert not any(k.startswith(("encoder.layer.2.", "encoder.layer.3.")) for k in report.unexpected_keys)
    assert any(k.startswith("encoder.layer.0.crossattention.") for k in report.unexpected_keys)
    t = enc(ids, valid, token_type_ids=types).last_hidden
    got = fusion(image, image_valid, t, valid).text
    torch.testing.assert_close(got[valid], h[valid], atol=1e-5, rtol=1e-5)


def test_bert_without_cross_attention_keeps_fresh_cross_attention_as_albef() -> None:
    hf = transformers.BertModel(_bert_config(4)).eval()
    _randomise(hf)
    sd = {"bert." + k: v for k, v in hf.state_dict().items()}  # BertForMaskedLM-style prefix
    enc, fusion = TextEncoder(_text_cfg(2)), CrossAttentionFusion(_fusion_cfg("cross"))
    fresh = {k: v.clone() for k, v in fusion.state_dict().items() if ".cross_attn." in k or "norm_cross" in k}
    report = import_bert(sd, text_encoder=enc, fusion=fusion)
    # ALBEF: cross-attention is new on top of BERT, keeps its initialisation and is reported
    assert sorted(report.missing_keys) == sorted("fusion." + k for k in fresh)
    assert all(k.startswith("bert.pooler.") for k in report.unexpected_keys)
    for k, v in fresh.items():
        torch.testing.assert_close(fusion.state_dict()[k], v, rtol=0, atol=0)
    for j in range(2):
        src = hf.encoder.layer[2 + j]
        torch.testing.assert_close(fusion.layers[j].attn.qkv.weight[H : 2 * H], src.attention.self.key.weight)
        torch.testing.assert_close(fusion.layers[j].mlp.fc2.bias, src.output.dense.bias)


def test_bert_cross_attention_from_self_attention_on_request() -> None:
    hf = transformers.BertModel(_bert_config(4)).eval()
    _randomise(hf)
    sd = {"bert." + k: v for k, v in hf.state_dict().items()}
    enc, fusion = TextEncoder(_text_cfg(2)), CrossAttentionFusion(_fusion_cfg("cross"))
    report = import_bert(sd, text_encoder=enc, fusion=fusion, cross_from_self=True)
    assert report.missing_keys == []
    for j in range(2):
        src = hf.encoder.layer[2 + j].attention
        blk = fusion.layers[j]
        torch.testing.assert_close(blk.cross_attn.q.weight, src.self.query.weight)
        torch.testing.assert_close(blk.cross_attn.kv.weight[H:], src.self.value.weight)
        torch.testing.assert_close(blk.cross_attn.proj.bias, src.output.dense.bias)
        torch.testing.assert_close(blk.norm_cross.weight, src.output.LayerNorm.weight)
        torch.testing.assert_close(blk.attn.qkv.weight[:H], src.self.query.weight)
    # image width differing from the text width: key/value cannot be copied and are reported
    wide = CrossAttentionFusion(_fusion_cfg("cross", image_dim=16))
    report = import_bert(sd, fusion=wide, cross_from_self=True)
    assert sorted(report.missing_keys) == sorted(
        f"fusion.layers.{j}.cross_attn.kv.{p}" for j in (0, 1) for p in ("weight", "bias")
    )


def test_bert_into_co_attention_text_stream() -> None:
    hf = transformers.BertModel(_bert_config(4, is_decoder=True, add_cross_attention=True)).eval()
    _randomise(hf)
    fusion = CoAttentionFusion(_fusion_cfg("coattention", image_dim=16))
    report = import_bert(hf.state_dict(), fusion=fusion, fusion_start=2)
    assert report.missing_keys and all(
        k.startswith(("fusion.image_layers.", "fusion.image_proj.")) for k in report.missing_keys
    )
    assert {k for k in report.missing_keys if k.startswith("fusion.image_layers.")} == {
        "fusion." + k for k in fusion.state_dict() if k.startswith("image_layers.")
    }
    for j in range(2):
        src, blk = hf.encoder.layer[2 + j], fusion.text_layers[j]
        torch.testing.assert_close(blk.attn.qkv.weight[2 * H :], src.attention.self.value.weight)
        torch.testing.assert_close(blk.cross_attn.kv.weight[:H], src.crossattention.self.key.weight)
        torch.testing.assert_close(blk.norm_cross.bias, src.crossattention.output.LayerNorm.bias)
        torch.testing.assert_close(blk.norm2.weight, src.output.LayerNorm.weight)
    # one layer: the text stream is exactly the HF cross-attention layer over the image tokens
    one = CoAttentionFusion(_fusion_cfg("coattention", depth=1)).eval()
    import_bert(hf.state_dict(), fusion=one, fusion_start=3)
    _, valid, _ = _text_batch()
    text, image = torch.randn(3, 13, H), torch.randn(3, 6, H)
    image_valid = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [0, 1, 0, 1, 0, 1]], dtype=torch.bool)
    with torch.no_grad():
        h = hf.encoder.layer[3](
            text,
            _additive(valid),
            encoder_hidden_states=image,
            encoder_attention_mask=_additive(image_valid),
        )
        h = h[0] if isinstance(h, tuple) else h
    got = one(image, image_valid, text, valid).text
    torch.testing.assert_close(got[valid], h[valid], atol=1e-5, rtol=1e-5)


def test_merged_fusion_matches_hf_layers_over_concatenated_tokens() -> None:
    hf = transformers.BertModel(_bert_config(4)).eval()
    _randomise(hf)
    fusion = MergedFusion(_fusion_cfg("merged", modality_embedding=False)).eval()
    report = import_bert(hf.state_dict(), fusion=fusion)  # defaults to the last 2 layers
    assert report.missing_keys == []
    _, valid, _ = _text_batch()
    text, image = torch.randn(3, 13, H), torch.randn(3, 5, H)
    image_valid = torch.rand(3, 5) > 0.3
    kv = torch.cat([image_valid, valid], 1)
    with torch.no_grad():
        h = torch.cat([image, text], 1)
        for layer in hf.encoder.layer[2:]:
            h = layer(h, _additive(kv))
            h = h[0] if isinstance(h, tuple) else h
    out = fusion(image, image_valid, text, valid)
    torch.testing.assert_close(out.text[valid], h[:, 5:][valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.image[image_valid], h[:, :5][image_valid], atol=1e-5, rtol=1e-5)


def test_hf_masked_lm_head_matches_after_import() -> None:
    hf = transformers.BertForMaskedLM(_bert_config(2)).eval()
    _randomise(hf)
    ids, valid, types = _text_batch()
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=valid.long(), token_type_ids=types).logits
    enc = TextEncoder(_text_cfg(2)).eval()
    head = MaskedTokenHead(H, VOCAB, tie_to=enc.word_embeddings)
    report = import_bert(hf.state_dict(), text_encoder=enc, mlm_head=head)
    assert report.missing_keys == [] and report.unexpected_keys == []
    got = head(enc(ids, valid, token_type_ids=types).last_hidden)
    torch.testing.assert_close(got[valid], want[valid], atol=1e-5, rtol=1e-5)
    assert head.weight is enc.word_embeddings.weight


def _hf_vit(image_size: int = 32, layers: int = 2, **kw):
    cfg = transformers.ViTConfig(
        image_size=image_size,
        patch_size=8,
        num_channels=3,
        hidden_size=H,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
        **kw,
    )
    model = transformers.ViTModel(cfg, add_pooling_layer=False).eval()
    _randomise(model)
    return model


def _vit_cfg(image_size: int = 32, **kw) -> VisionConfig:
    return VisionConfig(
        image_size=image_size,
        patch_size=8,
        dim=H,
        depth=2,
        num_heads=HEADS,
        mlp_ratio=2.0,
        layer_norm_eps=1e-12,
        **kw,
    )


def _file_state_dict(model, folder) -> dict[str, torch.Tensor]:
    """The state dict as Hugging Face writes it to disk (the layout of published checkpoints)."""
    model.save_pretrained(folder)
    return load_state_dict(folder)


def _hf_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Independent key mapping of an on-disk Hugging Face ViT -> timm (as a timm checkpoint holds it)."""
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
        "head.weight": torch.zeros(10, H),
    }
    names = {
        "norm1": "layernorm_before",
        "attn.proj": "attention.output.dense",
        "norm2": "layernorm_after",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
    }
    for i in range(2):
        s = f"encoder.layer.{i}."
        for p in ("weight", "bias"):
            qkv = [sd[f"{s}attention.attention.{n}.{p}"] for n in ("query", "key", "value")]
            out[f"blocks.{i}.attn.qkv.{p}"] = torch.cat(qkv, 0)
            for t, h in names.items():
                out[f"blocks.{i}.{t}.{p}"] = sd[f"{s}{h}.{p}"]
    return out


@pytest.mark.parametrize("backend", ["sdpa", "reference"])
def test_hf_vit_matches_after_import_and_timm_round_trip(backend: str, tmp_path) -> None:
    hf = _hf_vit()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = hf(pixel_values=images).last_hidden_state
    disk = _file_state_dict(hf, tmp_path)
    outs = []
    for sd in (disk, hf.state_dict()):  # file layout, and the in-memory layout of this transformers
        vit = VisionTransformer(_vit_cfg(attn_backend=backend)).eval()
        report = import_vit(sd, vit)
        assert report.missing_keys == ["mask_token"]
        assert report.unexpected_keys == [] and report.resampled_keys == []
        outs.append(vit(images).last_hidden)
        torch.testing.assert_close(outs[-1], want, atol=1e-5, rtol=1e-5)
    vit2 = VisionTransformer(_vit_cfg(attn_backend=backend)).eval()
    timm_sd = {"visual_encoder." + k: v for k, v in _hf_to_timm(disk).items()}
    report2 = import_vit(timm_sd, vit2)
    assert report2.missing_keys == ["mask_token"]
    assert report2.unexpected_keys == ["visual_encoder.head.weight"]
    torch.testing.assert_close(vit2(images).last_hidden, outs[0], atol=1e-6, rtol=1e-6)


def test_vit_import_resamples_positions_to_a_larger_grid(tmp_path) -> None:
    hf = _hf_vit()
    small = VisionTransformer(_vit_cfg(32)).eval()
    large = VisionTransformer(_vit_cfg(48)).eval()
    import_vit(hf.state_dict(), small)
    report = import_vit(_hf_to_timm(_file_state_dict(hf, tmp_path)), large)
    assert report.resampled_keys == ["pos_embed"]
    src = hf.embeddings.position_embeddings.detach()
    grid = src[:, 1:].reshape(1, 4, 4, H).permute(0, 3, 1, 2)
    want = (
        F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
        .permute(0, 2, 3, 1)
        .reshape(1, 36, H)
    )
    torch.testing.assert_close(large.pos_embed[:, 1:], want)
    torch.testing.assert_close(large.pos_embed[:, :1], src[:, :1])
    images = torch.randn(2, 3, 48, 48)
    torch.testing.assert_close(small(images).last_hidden, large(images).last_hidden, atol=1e-5, rtol=1e-5)


def test_deit_distillation_token_is_dropped() -> None:
    cfg = transformers.DeiTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=H,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=64,
    )
    hf = transformers.DeiTModel(cfg, add_pooling_layer=False)
    _randomise(hf)
    sd = {"deit." + k: v for k, v in hf.state_dict().items()}
    vit = VisionTransformer(_vit_cfg(mask_token=False))
    report = import_vit(sd, vit)
    assert report.missing_keys == []
    assert report.unexpected_keys == ["deit.embeddings.distillation_token"]
    pos = hf.embeddings.position_embeddings.detach()
    torch.testing.assert_close(vit.pos_embed, torch.cat([pos[:, :1], pos[:, 2:]], 1))


def test_loading_from_files_and_folders(tmp_path) -> None:
    hf = _hf_vit()
    sd = _file_state_dict(hf, tmp_path / "hf")  # safetensors folder layout
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "ckpt.pth")
    (tmp_path / "one").mkdir()
    torch.save(sd, tmp_path / "one" / "weights.bin")
    for src in (tmp_path / "hf", tmp_path / "ckpt.pth", str(tmp_path / "one")):
        loaded = load_state_dict(src)
        assert loaded.keys() >= {k for k in sd if not k.startswith("pooler")}
        torch.testing.assert_close(loaded["embeddings.cls_token"], sd["embeddings.cls_token"])
    vit = VisionTransformer(_vit_cfg())
    report = import_vit(tmp_path / "hf", vit)
    assert report.missing_keys == ["mask_token"]
    torch.testing.assert_close(vit.blocks[1].mlp.fc2.bias, sd["encoder.layer.1.output.dense.bias"])
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_state_dict("google/vit-base-patch16-224")
    (tmp_path / "one" / "other.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="recognised weight file"):
        load_state_dict(tmp_path / "one")  # two candidates: ambiguous


def test_import_errors_name_the_key() -> None:
    hf = _hf_vit()
    wrong_patch = VisionTransformer(dataclasses.replace(_vit_cfg(), patch_size=4))
    with pytest.raises(ValueError, match=r"patch_embed.proj.weight"):
        import_vit(hf.state_dict(), wrong_patch)
    with pytest.raises(ValueError, match="no ViT patch embedding"):
        import_vit({"foo": torch.zeros(1)}, VisionTransformer(_vit_cfg()))
    with pytest.raises(ValueError, match="no BERT embeddings"):
        import_bert({"foo": torch.zeros(1)}, text_encoder=TextEncoder(_text_cfg(1)))
    with pytest.raises(ValueError, match="layout='timm'"):
        import_vit(hf.state_dict(), VisionTransformer(_vit_cfg()), layout="timm")


@pytest.mark.parametrize("kind", ["merged", "cross"])
def test_base_preset_is_vit_b16_and_bert_base_split_6_plus_6(kind: str) -> None:
    """Built on the meta device (no memory, no download): every weight of the default-config
    Hugging Face ViT-B/16 and bert-base has a place of the same shape in the base preset."""
    with torch.device("meta"):
        vision, text, fusion = build_encoders("base", kind=kind)
        hf_vit = transformers.ViTModel(transformers.ViTConfig(), add_pooling_layer=False)
        hf_bert = transformers.BertModel(transformers.BertConfig())
    assert (vision.config.image_size, vision.config.patch_size, vision.depth) == (224, 16, 12)
    assert (text.depth, fusion.depth) == (6, 6)
    report = import_vit(hf_vit.state_dict(), vision)
    assert report.missing_keys == ["mask_token"] and report.unexpected_keys == []
    report = import_bert(hf_bert.state_dict(), text_encoder=text, fusion=fusion)
    assert all(k.startswith("pooler.") for k in report.unexpected_keys)
    assert not any(k.startswith("text_encoder.") for k in report.missing_keys)
    fresh = {"fusion.modality_embed"} if kind == "merged" else set()
    fresh |= {k for k in report.missing_keys if ".cross_attn." in k or ".norm_cross." in k}
    assert set(report.missing_keys) == fresh
    n_hf = sum(p.numel() for n, p in hf_bert.named_parameters() if not n.startswith("pooler."))
    n_ours = sum(p.numel() for m in (text, fusion) for n, p in m.named_parameters() if "cross" not in n)
    assert n_ours == n_hf + (2 * 768 if kind == "merged" else 0)
