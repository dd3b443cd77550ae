"""Tiny checkpoints in OpenVLA's exact Hugging Face layout, written by the tests (no download).

The layout of openvla/openvla-7b: config.json (``auto_map`` naming the checkpoint's own Python classes,
backbone ids, ``image_sizes``, a partial ``text_config``, ``norm_stats``), dataset_statistics.json,
``model.safetensors.index.json`` + shards with timm key names (DINOv2 layer scales renamed to
``scale_factor``), the tokenizer files (tokenizer_config.json naming a ``PrismaticProcessor`` through
``auto_map``) and the remote-code files themselves. Here those files leave a marker when they are imported,
so a test can tell whether anything ran them.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

#: OpenVLA-like statistics (bridge_orig): actions with q01/q99/mask, and the all-zero robot-state entry
#: OpenVLA's checkpoints carry although the model never reads a state.
OPENVLA_NORM_STATS = {"bridge_orig": {
    "action": {"q01": [-0.03, -0.04, -0.03, -0.1, -0.1, -0.2, 0.0], "q99": [0.03, 0.04, 0.04, 0.1, 0.1, 0.2, 1.0],
               "mask": [True] * 6 + [False], "mean": [0.0] * 7, "std": [0.01] * 7,
               "min": [-0.1] * 7, "max": [0.1] * 7},
    "proprio": {k: [0.0] * 7 for k in ("mean", "std", "max", "min", "q01", "q99")},
    "num_transitions": 1000, "num_trajectories": 50}}

#: Written as configuration_prismatic.py / modeling_prismatic.py / processing_prismatic.py: running any of
#: them creates REMOTE_CODE_MARKER next to it.
REMOTE_CODE_MARKER = "remote_code_ran"
_REMOTE_CODE = f"from pathlib import Path\nPath(__file__).with_name({REMOTE_CODE_MARKER!r}).touch()\n"


def _rand(*shape, scale=0.1):
    return torch.randn(*shape) * scale


def timm_vit(prefix: str, dim: int, depth: int, mlp: int, n_patches: int, registers: int, patch: int = 14,
             dino: bool = True) -> dict[str, torch.Tensor]:
    """A timm ViT as OpenVLA saves it: DINOv2 with class + register tokens and layer scales (``scale_factor``),
    or SigLIP with its attention-pool head."""
    sd = {f"{prefix}patch_embed.proj.weight": _rand(dim, 3, patch, patch, scale=0.05),
          f"{prefix}patch_embed.proj.bias": _rand(dim), f"{prefix}pos_embed": _rand(1, n_patches, dim),
          f"{prefix}norm.weight": 1 + _rand(dim), f"{prefix}norm.bias": _rand(dim)}
    if dino:
        sd[f"{prefix}cls_token"] = _rand(1, 1, dim)
        sd[f"{prefix}reg_token"] = _rand(1, registers, dim)
    for i in range(depth):
        b = f"{prefix}blocks.{i}."
        sd.update({b + "norm1.weight": 1 + _rand(dim), b + "norm1.bias": _rand(dim),
                   b + "attn.qkv.weight": _rand(3 * dim, dim, scale=0.2), b + "attn.qkv.bias": _rand(3 * dim),
                   b + "attn.proj.weight": _rand(dim, dim, scale=0.2), b + "attn.proj.bias": _rand(dim),
                   b + "norm2.weight": 1 + _rand(dim), b + "norm2.bias": _rand(dim),
                   b + "mlp.fc1.weight": _rand(mlp, dim, scale=0.2), b + "mlp.fc1.bias": _rand(mlp),
                   b + "mlp.fc2.weight": _rand(dim, mlp, scale=0.2), b + "mlp.fc2.bias": _rand(dim)})
        if dino:  # DINOv2 layer scales, renamed by OpenVLA from timm's "gamma"
            sd[b + "ls1.scale_factor"] = 0.5 + _rand(dim)
            sd[b + "ls2.scale_factor"] = 0.5 + _rand(dim)
    if not dino:  # SigLIP's attention-pool head (unused)
        sd.update({f"{prefix}attn_pool.latent": _rand(1, 1, dim), f"{prefix}attn_pool.q.weight": _rand(dim, dim),
                   f"{prefix}attn_pool.kv.weight": _rand(2 * dim, dim), f"{prefix}attn_pool.norm.weight": _rand(dim)})
    return sd


def llama(prefix: str, c) -> dict[str, torch.Tensor]:
    """Llama-2 in the transformers layout (``language_model.model.*`` + ``lm_head``) with c's sizes."""
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


def openvla_state_dict(c, seed: int = 123) -> dict[str, torch.Tensor]:
    """Every tensor of an OpenVLA checkpoint with the sizes of PixelVLAConfig ``c`` (bf16-representable)."""
    torch.manual_seed(seed)
    sd = {}
    sd.update(timm_vit("vision_backbone.featurizer.", c.dino_hidden, c.dino_layers, c.dino_mlp_ratio * c.dino_hidden,
                       c.num_patches, c.dino_registers, c.patch_size, dino=True))
    sd.update(timm_vit("vision_backbone.fused_featurizer.", c.siglip_hidden, c.siglip_layers, c.siglip_intermediate,
                       c.num_patches, 0, c.patch_size, dino=False))
    vd = c.vision_hidden
    sd.update({"projector.fc1.weight": _rand(4 * vd, vd), "projector.fc1.bias": _rand(4 * vd),
               "projector.fc2.weight": _rand(c.llm_hidden, 4 * vd), "projector.fc2.bias": _rand(c.llm_hidden),
               "projector.fc3.weight": _rand(c.llm_hidden, c.llm_hidden), "projector.fc3.bias": _rand(c.llm_hidden)})
    sd.update(llama("language_model.", c))
    return {k: v.to(torch.bfloat16).float() for k, v in sd.items()}


def write_openvla_checkpoint(directory: Path, c, seed: int = 123, norm_stats: dict = OPENVLA_NORM_STATS,
                             shards: int = 2, dtype: torch.dtype = torch.float32,
                             text_config: dict | None = None) -> dict[str, torch.Tensor]:
    """Write an OpenVLA-layout checkpoint with config ``c``'s sizes to ``directory``; returns its tensors
    (float32). text_config: extra Llama fields for config.json (OpenVLA writes only vocab_size)."""
    from safetensors.torch import save_file

    from pixelvla_model import build_byte_tokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = openvla_state_dict(c, seed)
    keys = sorted(sd)
    per_shard = -(-len(keys) // shards)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i * per_shard:(i + 1) * per_shard]
        save_file({k: sd[k].to(dtype).contiguous() for k in part}, str(directory / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    total = sum(v.numel() * torch.empty((), dtype=dtype).element_size() for v in sd.values())
    (directory / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (directory / "config.json").write_text(json.dumps({
        "arch_specifier": "no-align+fused-gelu-mlp", "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                     "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
        "hf_llm_id": "meta-llama/Llama-2-7b-hf", "image_resize_strategy": "resize-naive",
        "image_sizes": [c.image_size, c.image_size], "llm_backbone_id": "llama2-7b-pure", "llm_max_length": 2048,
        "model_type": "openvla", "n_action_bins": 256, "norm_stats": norm_stats, "output_projector_states": False,
        "pad_to_multiple_of": 64, "pad_token_id": 0,
        "text_config": {"model_type": "llama", "pad_token_id": 0, "torch_dtype": "bfloat16",
                        "vocab_size": c.vocab_size, **(text_config or {})},
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None], "torch_dtype": "bfloat16", "transformers_version": "4.40.1",
        "use_fused_vision_backbone": True, "vision_backbone_id": "dinosiglip-vit-so-224px"}, indent=2))
    (directory / "dataset_statistics.json").write_text(json.dumps(norm_stats))
    build_byte_tokenizer().save_pretrained(str(directory))
    tok_cfg_path = directory / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg.update({"auto_map": {"AutoProcessor": "processing_prismatic.PrismaticProcessor"},
                    "processor_class": "PrismaticProcessor"})
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2))
    for code in ("configuration_prismatic.py", "modeling_prismatic.py", "processing_prismatic.py"):
        (directory / code).write_text(_REMOTE_CODE)
    return sd
