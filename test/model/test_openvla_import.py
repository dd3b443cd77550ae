"""The importer on a tiny OpenVLA-layout checkpoint (test/openvla_checkpoints.py: the real key names, timm's
tensor layouts, two shards) checked against an independent plain-torch reference computed on the original
tensors; the config read from the checkpoint's own files; shards streamed one tensor at a time."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from openvla_checkpoints import OPENVLA_NORM_STATS, write_openvla_checkpoint
from pixelvla_model import PixelVLAConfig, PixelVLAPolicy, from_openvla

CFG = PixelVLAConfig.from_preset("tiny")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("openvla")
    return d, write_openvla_checkpoint(d, CFG)


# ----------------------------------------------------------------------------- independent reference
def _ref_vit(sd, prefix, x, depth, heads, prefix_tokens):
    """timm-style ViT on the ORIGINAL tensors: fused qkv, layer scales, exact GELU; returns every block's
    output (patch tokens only) for blocks 1..depth-1 (the last block is not needed)."""
    g = lambda k: sd[prefix + k]  # noqa: E731
    h = F.conv2d(x, g("patch_embed.proj.weight"), g("patch_embed.proj.bias"), stride=14).flatten(2).transpose(1, 2)
    h = h + g("pos_embed")
    if prefix_tokens:
        b = h.shape[0]
        h = torch.cat([g("cls_token").expand(b, -1, -1), g("reg_token").expand(b, -1, -1), h], 1)
    outs = []
    for i in range(depth - 1):
        p = f"blocks.{i}."
        ls1 = sd.get(prefix + p + "ls1.scale_factor", torch.ones(1))
        ls2 = sd.get(prefix + p + "ls2.scale_factor", torch.ones(1))
        y = F.layer_norm(h, h.shape[-1:], g(p + "norm1.weight"), g(p + "norm1.bias"), eps=1e-6)
        B, N, D = y.shape
        qkv = (y @ g(p + "attn.qkv.weight").T + g(p + "attn.qkv.bias")).view(B, N, 3, heads, D // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(D // heads)).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, N, D) @ g(p + "attn.proj.weight").T + g(p + "attn.proj.bias")
        h = h + ls1 * y
        y = F.layer_norm(h, h.shape[-1:], g(p + "norm2.weight"), g(p + "norm2.bias"), eps=1e-6)
        y = F.gelu(y @ g(p + "mlp.fc1.weight").T + g(p + "mlp.fc1.bias")) @ g(p + "mlp.fc2.weight").T + g(p + "mlp.fc2.bias")
        h = h + ls2 * y
        outs.append(h[:, prefix_tokens:])
    return outs


def _ref_llama(sd, c, emb):
    """Llama-2 decoder on the original tensors (RMSNorm, rotate-half RoPE, causal attention, SwiGLU)."""
    g = lambda k: sd["language_model.model." + k]  # noqa: E731
    rms = lambda x, w: w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c.rms_norm_eps))  # noqa: E731
    B, T, D = emb.shape
    H = c.llm_heads
    hd = D // H
    inv = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.arange(T).float()[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    rot = lambda x: torch.cat([-x[..., hd // 2:], x[..., : hd // 2]], -1)  # noqa: E731
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    h = emb
    for n in range(c.llm_layers):
        p = f"layers.{n}."
        y = rms(h, g(p + "input_layernorm.weight"))
        q, k, v = (((y @ g(p + f"self_attn.{m}_proj.weight").T).view(B, T, H, hd).transpose(1, 2)) for m in "qkv")
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).masked_fill(~causal, float("-inf")).softmax(-1)
        h = h + (att @ v).transpose(1, 2).reshape(B, T, D) @ g(p + "self_attn.o_proj.weight").T
        y = rms(h, g(p + "post_attention_layernorm.weight"))
        y = F.silu(y @ g(p + "mlp.gate_proj.weight").T) * (y @ g(p + "mlp.up_proj.weight").T)
        h = h + y @ g(p + "mlp.down_proj.weight").T
    return rms(h, g("norm.weight"))


def test_imported_towers_projector_and_llm_match_reference(ckpt):
    d, sd = ckpt
    model, norm_stats = from_openvla(d, config=CFG)
    assert norm_stats == OPENVLA_NORM_STATS
    torch.manual_seed(0)
    img = torch.rand(2, 3, 224, 224)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    dino = _ref_vit(sd, "vision_backbone.featurizer.", (img - mean) / std, CFG.dino_layers, CFG.dino_heads,
                    1 + CFG.dino_registers)
    sig = _ref_vit(sd, "vision_backbone.fused_featurizer.", (img - 0.5) / 0.5, CFG.siglip_layers, CFG.siglip_heads, 0)
    with torch.no_grad():
        feats, taps = model.vision(img)
        ref = torch.cat([dino[-1], sig[-1]], -1)
        torch.testing.assert_close(feats, ref, rtol=1e-4, atol=1e-4)
        for j, layer in enumerate(CFG.pixel_layers):
            torch.testing.assert_close(taps[j], sig[layer - 1], rtol=1e-4, atol=1e-4)
        p = lambda k: sd["projector." + k]  # noqa: E731
        ref_proj = F.gelu(F.gelu(ref @ p("fc1.weight").T + p("fc1.bias")) @ p("fc2.weight").T + p("fc2.bias"))
        ref_proj = ref_proj @ p("fc3.weight").T + p("fc3.bias")
        torch.testing.assert_close(model.projector(feats), ref_proj, rtol=1e-4, atol=1e-4)
        ids = torch.randint(3, 259, (2, 12))
        emb = model.llm.get_input_embeddings()(ids)
        torch.testing.assert_close(emb, sd["language_model.model.embed_tokens.weight"][ids])
        out = model.llm(inputs_embeds=emb, attention_mask=torch.ones(2, 12, dtype=torch.long)).last_hidden_state
        torch.testing.assert_close(out, _ref_llama(sd, CFG, emb), rtol=1e-4, atol=1e-4)
        # negative control: a wrong qkv split (q and k swapped) is detected by the reference
        attn = model.vision.dino.encoder.layer[0].attention
        w = attn.q_proj.weight.clone()
        attn.q_proj.weight.copy_(attn.k_proj.weight)
        attn.k_proj.weight.copy_(w)
        assert (model.vision(img)[0] - ref).abs().max() > 1e-3


def test_policy_from_openvla_runs(ckpt):
    d, _ = ckpt
    policy = PixelVLAPolicy.from_openvla(d, config=CFG)
    img = torch.randint(0, 256, (100, 120, 3), dtype=torch.uint8).numpy()
    assert policy.predict(img, "put the carrot on the plate").shape == (CFG.chunk_size, 7)


def _rewrite(tmp_path, d, edit):
    import shutil

    from safetensors.torch import load_file

    out = tmp_path / "edited"
    shutil.copytree(d, out)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    f = out / "model-00001-of-00002.safetensors"
    shard = load_file(str(f))
    edit(shard, index)
    save_file(shard, str(f))
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    return out


def test_missing_and_unexpected_keys_are_listed(ckpt, tmp_path):
    d, _ = ckpt

    def drop_and_add(shard, index):
        victim = next(k for k in shard if k.endswith("blocks.0.attn.qkv.weight"))
        del shard[victim]
        del index["weight_map"][victim]
        shard["vision_backbone.featurizer.blocks.0.attn.extra"] = torch.zeros(1)
        index["weight_map"]["vision_backbone.featurizer.blocks.0.attn.extra"] = "model-00001-of-00002.safetensors"

    bad = _rewrite(tmp_path, d, drop_and_add)
    with pytest.raises(ValueError) as e:
        from_openvla(bad, config=CFG)
    msg = str(e.value)
    assert "missing keys" in msg and "encoder.layer.0.attention.q_proj.weight" in msg
    assert "unexpected keys" in msg and "vision_backbone.featurizer.blocks.0.attn.extra" in msg


def test_needs_a_config_for_unknown_backbones(ckpt, tmp_path):
    d, _ = ckpt
    import shutil

    out = tmp_path / "other"
    shutil.copytree(d, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["llm_backbone_id"] = "mistral-v0.1-7b-pure"
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="pass config="):
        from_openvla(out)
    with pytest.raises(ValueError, match="blocks but the config says"):
        from_openvla(d, config=PixelVLAConfig.from_preset("tiny", dino_layers=4))


def test_bfloat16_import_then_save_and_reload(ckpt, tmp_path):
    from pixelvla_model import PixelVLA, example_inputs

    d, sd = ckpt
    model, _ = from_openvla(d, config=CFG, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.equal(model.vision.siglip.embeddings.patch_embedding.weight,
                       sd["vision_backbone.fused_featurizer.patch_embed.proj.weight"].to(torch.bfloat16))
    assert model.decoder.proj.weight.std() > 0  # fresh modules are initialised, not empty
    model.save_pretrained(tmp_path)
    again = PixelVLA.from_pretrained(tmp_path)
    x = example_inputs(CFG, batch_size=1)
    x = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in x.items()}
    with torch.no_grad():
        a, b = model(**x).actions, again(**x).actions
    assert torch.isfinite(a.float()).all() and torch.equal(a, b)


# ----------------------------------------------------------------------------- the checkpoint's own config
#: What PixelVLA adds to a tiny backbone (the vision head counts are not in an OpenVLA config.json).
TINY_ADDITIONS = dict(dino_heads=2, siglip_heads=2, pixel_layers=(1, 2), pixel_hidden=32, prompt_pe_dim=32,
                      decoder_hidden=64)


def test_config_comes_from_the_checkpoint_files(tmp_path):
    from pixelvla_model.openvla_import import openvla_config

    sizes = PixelVLAConfig.from_preset("tiny", image_size=28, rms_norm_eps=1e-5)
    write_openvla_checkpoint(tmp_path, sizes, text_config={"rms_norm_eps": 1e-5, "num_attention_heads": 4})
    config = openvla_config(tmp_path, **TINY_ADDITIONS)
    assert config.preset == "prismatic-7b" and config.image_size == 28 and config.rms_norm_eps == 1e-5
    for name in ("dino_hidden", "dino_layers", "dino_mlp_ratio", "dino_registers", "siglip_hidden", "siglip_layers",
                 "siglip_intermediate", "llm_hidden", "llm_layers", "llm_intermediate", "vocab_size", "patch_size"):
        assert getattr(config, name) == getattr(sizes, name), name
    assert (config.llm_heads, config.llm_kv_heads) == (4, 4)
    assert config.pixel_where_octaves == 0  # the paper's pixel encoder

    model, _ = from_openvla(tmp_path, **TINY_ADDITIONS)
    assert model.config == config
    assert model.llm.norm.variance_epsilon == 1e-5
    # a config.json that says something else is honoured: here a different eps
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["text_config"]["rms_norm_eps"] = 1e-6
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert openvla_config(tmp_path, **TINY_ADDITIONS).rms_norm_eps == 1e-6


def test_import_into_a_config_with_a_robot_state_input(ckpt, caplog):
    from pixelvla_model import example_inputs

    d, sd = ckpt
    config = PixelVLAConfig.from_preset("tiny", proprio_dim=7)
    with caplog.at_level("INFO", logger="pixelvla_model.openvla_import"):
        model, _ = from_openvla(d, config=config)
    assert "state_encoder" in caplog.text and "starts fresh" in caplog.text
    assert all(not p.is_meta for p in model.parameters())
    assert model.state_encoder.mlp[0].weight.std() > 0
    assert torch.equal(model.projector.fc1.weight, sd["projector.fc1.weight"])
    with torch.no_grad():
        actions = model(**example_inputs(config, batch_size=2)).actions
    assert actions.shape == (2, config.chunk_size, 7) and torch.isfinite(actions).all()


def test_shards_are_read_one_tensor_at_a_time_into_the_target_dtype(ckpt, monkeypatch):
    """No full copy of the checkpoint in its own dtype beside the model: every tensor read from a shard is
    released before the next is read, and shards are opened one after the other."""
    import weakref

    import pixelvla_model.checkpoint as checkpoint

    d, sd = ckpt
    real_open = checkpoint.safe_open
    read, alive_at_read, open_files = [], [], []

    class Spy:
        def __init__(self, path, **kwargs):
            self.path, self.handle = path, real_open(path, **kwargs)

        def __enter__(self):
            open_files.append(self.path)
            self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            open_files.remove(self.path)
            return self.handle.__exit__(*exc)

        def keys(self):
            return self.handle.keys()

        def get_slice(self, key):
            return self.handle.get_slice(key)

        def get_tensor(self, key):
            alive_at_read.append((sum(r() is not None for r in read), len(open_files)))
            t = self.handle.get_tensor(key)
            read.append(weakref.ref(t))
            return t

    monkeypatch.setattr(checkpoint, "safe_open", Spy)
    model, _ = from_openvla(d, config=CFG, dtype=torch.bfloat16)
    assert len(read) == len(sd)
    assert max(alive for alive, _ in alive_at_read) == 0
    assert max(files for _, files in alive_at_read) == 1
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.equal(model.llm.layers[0].mlp.up_proj.weight,
                       sd["language_model.model.layers.0.mlp.up_proj.weight"].to(torch.bfloat16))


def test_openvla_and_pixelvla_directories_are_told_apart(ckpt, tmp_path):
    from pixelvla_model.openvla_import import is_openvla_checkpoint

    d, _ = ckpt
    PixelVLAPolicy.from_config(CFG).save_pretrained(tmp_path / "pixelvla")
    assert is_openvla_checkpoint(d) and not is_openvla_checkpoint(tmp_path / "pixelvla")
    assert not is_openvla_checkpoint(tmp_path / "nothing")


def test_tokenizer_loads_without_asking_or_running_the_checkpoints_code(ckpt, monkeypatch):
    import builtins

    from openvla_checkpoints import REMOTE_CODE_MARKER
    from pixelvla_model import build_byte_tokenizer, load_tokenizer

    d, _ = ckpt
    asked = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": asked.append(prompt) or "n")
    tok = load_tokenizer(d)
    assert asked == []
    assert not (d / REMOTE_CODE_MARKER).exists()
    text = "In: What action should the robot take to pick up the cup?\nOut:"
    assert tok(text)["input_ids"] == build_byte_tokenizer()(text)["input_ids"]
