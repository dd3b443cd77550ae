"""The importer on a tiny OpenVLA-layout checkpoint written here with the real key names and timm's tensor
layouts, checked against an independent plain-torch reference computed on the original tensors."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pixelvla_model import PixelVLAConfig, PixelVLAPolicy, build_byte_tokenizer, from_openvla

CFG = PixelVLAConfig.from_preset("tiny")
NORM_STATS = {"bridge_orig": {"action": {"q01": [-0.1] * 7, "q99": [0.1] * 7, "mask": [True] * 6 + [False],
                                         "mean": [0.0] * 7, "std": [1.0] * 7}}}


def _rand(*shape, scale=0.1):
    return torch.randn(*shape) * scale


def _timm_vit(prefix, dim, depth, mlp, n_patches, cls_reg):
    sd = {f"{prefix}patch_embed.proj.weight": _rand(dim, 3, 14, 14, scale=0.05),
          f"{prefix}patch_embed.proj.bias": _rand(dim), f"{prefix}pos_embed": _rand(1, n_patches, dim),
          f"{prefix}norm.weight": 1 + _rand(dim), f"{prefix}norm.bias": _rand(dim)}
    if cls_reg:
        sd[f"{prefix}cls_token"] = _rand(1, 1, dim)
        sd[f"{prefix}reg_token"] = _rand(1, CFG.dino_registers, dim)
    for i in range(depth):
        b = f"{prefix}blocks.{i}."
        sd.update({b + "norm1.weight": 1 + _rand(dim), b + "norm1.bias": _rand(dim),
                   b + "attn.qkv.weight": _rand(3 * dim, dim, scale=0.2), b + "attn.qkv.bias": _rand(3 * dim),
                   b + "attn.proj.weight": _rand(dim, dim, scale=0.2), b + "attn.proj.bias": _rand(dim),
                   b + "norm2.weight": 1 + _rand(dim), b + "norm2.bias": _rand(dim),
                   b + "mlp.fc1.weight": _rand(mlp, dim, scale=0.2), b + "mlp.fc1.bias": _rand(mlp),
                   b + "mlp.fc2.weight": _rand(dim, mlp, scale=0.2), b + "mlp.fc2.bias": _rand(dim)})
        if cls_reg:  # DINOv2 layer scales, renamed by OpenVLA from timm's "gamma"
            sd[b + "ls1.scale_factor"] = 0.5 + _rand(dim)
            sd[b + "ls2.scale_factor"] = 0.5 + _rand(dim)
    if not cls_reg:  # SigLIP's attention-pool head (unused)
        sd.update({f"{prefix}attn_pool.latent": _rand(1, 1, dim), f"{prefix}attn_pool.q.weight": _rand(dim, dim),
                   f"{prefix}attn_pool.kv.weight": _rand(2 * dim, dim), f"{prefix}attn_pool.norm.weight": _rand(dim)})
    return sd


def _llama(prefix, c):
    d, i = c.llm_hidden, c.llm_intermediate
    sd = {f"{prefix}model.embed_tokens.weight": _rand(c.vocab_size, d, scale=1.0),
          f"{prefix}model.norm.weight": 1 + _rand(d), f"{prefix}lm_head.weight": _rand(c.vocab_size, d)}
    for n in range(c.llm_layers):
        b = f"{prefix}model.layers.{n}."
        sd.update({b + "input_layernorm.weight": 1 + _rand(d), b + "post_attention_layernorm.weight": 1 + _rand(d),
                   b + "self_attn.q_proj.weight": _rand(d, d, scale=0.2), b + "self_attn.k_proj.weight": _rand(d, d, scale=0.2),
                   b + "self_attn.v_proj.weight": _rand(d, d, scale=0.2), b + "self_attn.o_proj.weight": _rand(d, d, scale=0.2),
                   b + "mlp.gate_proj.weight": _rand(i, d, scale=0.2), b + "mlp.up_proj.weight": _rand(i, d, scale=0.2),
                   b + "mlp.down_proj.weight": _rand(d, i, scale=0.2)})
    return sd


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(123)
    c = CFG
    sd = {}
    sd.update(_timm_vit("vision_backbone.featurizer.", c.dino_hidden, c.dino_layers,
                        c.dino_mlp_ratio * c.dino_hidden, c.num_patches, cls_reg=True))
    sd.update(_timm_vit("vision_backbone.fused_featurizer.", c.siglip_hidden, c.siglip_layers,
                        c.siglip_intermediate, c.num_patches, cls_reg=False))
    vd = c.vision_hidden
    sd.update({"projector.fc1.weight": _rand(4 * vd, vd), "projector.fc1.bias": _rand(4 * vd),
               "projector.fc2.weight": _rand(c.llm_hidden, 4 * vd), "projector.fc2.bias": _rand(c.llm_hidden),
               "projector.fc3.weight": _rand(c.llm_hidden, c.llm_hidden), "projector.fc3.bias": _rand(c.llm_hidden)})
    sd.update(_llama("language_model.", c))
    d = tmp_path_factory.mktemp("openvla")
    keys = sorted(sd)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for fname, ks in shards.items():
        save_file({k: sd[k].to(torch.bfloat16).float().contiguous() for k in ks}, str(d / fname))
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}))
    (d / "config.json").write_text(json.dumps({
        "vision_backbone_id": "dinosiglip-vit-so-224px", "llm_backbone_id": "llama2-7b-pure",
        "use_fused_vision_backbone": True, "image_sizes": [224, 224], "norm_stats": NORM_STATS,
        "text_config": {"model_type": "llama", "vocab_size": c.vocab_size}}))
    build_byte_tokenizer().save_pretrained(str(d))
    return d, {k: v.to(torch.bfloat16).float() for k, v in sd.items()}


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
    assert norm_stats == NORM_STATS
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
