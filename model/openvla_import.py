"""Import an OpenVLA / Prismatic Hugging Face checkpoint directory into PixelVLA.

Source layout (e.g. openvla-7b): config.json with ``vision_backbone_id`` ("dinosiglip-vit-so-224px"),
``llm_backbone_id`` ("llama2-7b-pure"), ``use_fused_vision_backbone``, ``norm_stats``; safetensors shards
(``model.safetensors.index.json``) with

    vision_backbone.featurizer.*        DINOv2-L/14 + 4 registers, timm ViT layout
    vision_backbone.fused_featurizer.*  SigLIP-so400m/14, timm ViT layout
    projector.fc1/fc2/fc3.*             the fused GELU MLP projector
    language_model.model.*              Llama-2 (transformers layout), language_model.lm_head.weight

Key mapping (timm ViT -> transformers), per tower:

    patch_embed.proj.{weight,bias}  -> DINOv2: embeddings.patch_embeddings.projection.*  SigLIP: embeddings.patch_embedding.*
    pos_embed (1, N, D)             -> DINOv2: embeddings.position_embeddings (1, 1+N, D) with a zero row
                                       for the class token (timm's DINOv2-reg adds no position to cls/registers)
                                       SigLIP: embeddings.position_embedding.weight (N, D)
    cls_token / reg_token           -> DINOv2: embeddings.cls_token / embeddings.register_tokens
    blocks.i.norm1 / norm2          -> DINOv2: encoder.layer.i.norm1 / norm2   SigLIP: encoder.layers.i.layer_norm1 / 2
    blocks.i.attn.qkv (3D, D)       -> split in rows [q; k; v] -> q_proj, k_proj, v_proj (weight and bias)
    blocks.i.attn.proj              -> DINOv2: attention.o_proj   SigLIP: self_attn.out_proj
    blocks.i.ls{1,2}.scale_factor   -> DINOv2: layer_scale{1,2}.lambda1  (OpenVLA renames timm's "gamma";
                                       both names are accepted)
    blocks.i.mlp.fc1 / fc2          -> mlp.fc1 / fc2

Dropped on purpose (listed in the log): each tower's last block and final norm (the network reads the
second-to-last block, as OpenVLA does), SigLIP's attention-pool head (``attn_pool.*``), and the LLM's
``lm_head`` (PixelVLA decodes actions with the continuous decoder). DINOv2's ``mask_token`` (unused by
the forward) is zero. The pixel encoder, prompt encoder and action decoder start fresh. Any other
missing or unexpected key is an error that lists them.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Optional

import torch

from .checkpoint import read_safetensors, weight_files
from .configuration import PixelVLAConfig
from .files import validate_norm_stats
from .modeling import ActionDecoder, PixelEncoder, PixelVLA, PromptEncoder

logger = logging.getLogger(__name__)

FEATURIZER, FUSED, PROJECTOR, LLM = ("vision_backbone.featurizer.", "vision_backbone.fused_featurizer.",
                                     "projector.", "language_model.")
KNOWN_BACKBONES = {("dinosiglip-vit-so-224px", "llama2-7b-pure"): "prismatic-7b"}
NEW_MODULES = ("pixel_encoder.", "prompt_encoder.", "decoder.")


def _block_map(tower: str, i: int, layer_prefix: str) -> dict[str, str]:
    """timm block keys (without the qkv) -> transformers keys for block i."""
    if tower == "dino":
        return {f"blocks.{i}.norm1.weight": f"{layer_prefix}.norm1.weight",
                f"blocks.{i}.norm1.bias": f"{layer_prefix}.norm1.bias",
                f"blocks.{i}.attn.proj.weight": f"{layer_prefix}.attention.o_proj.weight",
                f"blocks.{i}.attn.proj.bias": f"{layer_prefix}.attention.o_proj.bias",
                f"blocks.{i}.ls1.scale_factor": f"{layer_prefix}.layer_scale1.lambda1",
                f"blocks.{i}.ls2.scale_factor": f"{layer_prefix}.layer_scale2.lambda1",
                f"blocks.{i}.norm2.weight": f"{layer_prefix}.norm2.weight",
                f"blocks.{i}.norm2.bias": f"{layer_prefix}.norm2.bias",
                f"blocks.{i}.mlp.fc1.weight": f"{layer_prefix}.mlp.fc1.weight",
                f"blocks.{i}.mlp.fc1.bias": f"{layer_prefix}.mlp.fc1.bias",
                f"blocks.{i}.mlp.fc2.weight": f"{layer_prefix}.mlp.fc2.weight",
                f"blocks.{i}.mlp.fc2.bias": f"{layer_prefix}.mlp.fc2.bias"}
    return {f"blocks.{i}.norm1.weight": f"{layer_prefix}.layer_norm1.weight",
            f"blocks.{i}.norm1.bias": f"{layer_prefix}.layer_norm1.bias",
            f"blocks.{i}.attn.proj.weight": f"{layer_prefix}.self_attn.out_proj.weight",
            f"blocks.{i}.attn.proj.bias": f"{layer_prefix}.self_attn.out_proj.bias",
            f"blocks.{i}.norm2.weight": f"{layer_prefix}.layer_norm2.weight",
            f"blocks.{i}.norm2.bias": f"{layer_prefix}.layer_norm2.bias",
            f"blocks.{i}.mlp.fc1.weight": f"{layer_prefix}.mlp.fc1.weight",
            f"blocks.{i}.mlp.fc1.bias": f"{layer_prefix}.mlp.fc1.bias",
            f"blocks.{i}.mlp.fc2.weight": f"{layer_prefix}.mlp.fc2.weight",
            f"blocks.{i}.mlp.fc2.bias": f"{layer_prefix}.mlp.fc2.bias"}


def _convert_tower(src: dict[str, torch.Tensor], tower: str, depth: int, num_patches: int,
                   used: set[str], dropped: set[str]) -> dict[str, torch.Tensor]:
    """One timm ViT (keys without the featurizer prefix) -> transformers keys under vision.<tower>."""
    out: dict[str, torch.Tensor] = {}
    dst = f"vision.{tower}"

    def take(key: str) -> Optional[torch.Tensor]:
        if key in src:
            used.add(key)
            return src[key]
        return None

    def put(key: str, value: Optional[torch.Tensor]) -> None:
        if value is not None:
            out[key] = value

    if tower == "dino":
        put(f"{dst}.embeddings.patch_embeddings.projection.weight", take("patch_embed.proj.weight"))
        put(f"{dst}.embeddings.patch_embeddings.projection.bias", take("patch_embed.proj.bias"))
        put(f"{dst}.embeddings.cls_token", take("cls_token"))
        put(f"{dst}.embeddings.register_tokens", take("reg_token"))
        pos = take("pos_embed")
        if pos is not None:
            if pos.shape[1] == num_patches:  # timm no_embed_class: patches only -> zero row for cls
                pos = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
            put(f"{dst}.embeddings.position_embeddings", pos)
        out[f"{dst}.embeddings.mask_token"] = None  # type: ignore[assignment]  # filled with zeros later
    else:
        put(f"{dst}.embeddings.patch_embedding.weight", take("patch_embed.proj.weight"))
        put(f"{dst}.embeddings.patch_embedding.bias", take("patch_embed.proj.bias"))
        pos = take("pos_embed")
        put(f"{dst}.embeddings.position_embedding.weight", None if pos is None else pos.reshape(pos.shape[-2:]))

    layers = "encoder.layer" if tower == "dino" else "encoder.layers"
    attn = "attention" if tower == "dino" else "self_attn"
    for i in range(depth - 1):  # the last block is not built
        lp = f"{dst}.{layers}.{i}"
        for s, d in _block_map(tower, i, lp).items():
            if tower == "dino" and ".ls" in s and s not in src:
                s = s.replace("scale_factor", "gamma")  # plain timm name
            put(d, take(s))
        for kind in ("weight", "bias"):
            qkv = take(f"blocks.{i}.attn.qkv.{kind}")
            if qkv is not None:
                q, k, v = qkv.chunk(3, dim=0)
                put(f"{lp}.{attn}.q_proj.{kind}", q)
                put(f"{lp}.{attn}.k_proj.{kind}", k)
                put(f"{lp}.{attn}.v_proj.{kind}", v)
    unused = re.compile(rf"^(blocks\.{depth - 1}\.|norm\.|fc_norm\.|head\.|attn_pool\.)")
    for key in src:
        if key not in used and unused.match(key):
            dropped.add(key)
            used.add(key)
    return out


def _tower_depth(src: dict[str, torch.Tensor]) -> int:
    idx = {int(m.group(1)) for k in src if (m := re.match(r"blocks\.(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def read_openvla_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {directory}: an OpenVLA checkpoint directory needs one "
                                "(with vision_backbone_id, llm_backbone_id, norm_stats)")
    cfg = json.loads(path.read_text())
    missing = [k for k in ("vision_backbone_id", "llm_backbone_id", "norm_stats") if k not in cfg]
    if missing:
        raise ValueError(f"{path} is not an OpenVLA/Prismatic config: missing {missing}")
    if not cfg.get("use_fused_vision_backbone", True):
        raise ValueError(f"{path}: only the fused DINOv2 + SigLIP backbone is supported "
                         f"(vision_backbone_id {cfg['vision_backbone_id']!r})")
    return cfg


def from_openvla(directory: str | Path, config: Optional[PixelVLAConfig] = None,
                 dtype: Optional[torch.dtype] = None):
    """OpenVLA checkpoint directory -> (PixelVLA in eval mode, norm_stats).

    config: the PixelVLA sizes to build; by default the preset matching the checkpoint's backbone ids
    (dinosiglip-vit-so-224px + llama2-7b-pure -> "prismatic-7b"), with the LLM vocab size from
    text_config. dtype: the model's dtype, float32 by default (OpenVLA ships bfloat16; float32 7B needs ~30 GB
    of memory).
    The backbone is built without random init (meta device) and filled from the checkpoint.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dtype = dtype or torch.float32
    directory = Path(directory)
    ocfg = read_openvla_config(directory)
    norm_stats = validate_norm_stats(ocfg["norm_stats"])
    if config is None:
        ids = (ocfg["vision_backbone_id"], ocfg["llm_backbone_id"])
        if ids not in KNOWN_BACKBONES:
            raise ValueError(f"no preset for backbones {ids}; pass config=PixelVLAConfig(...) with their sizes "
                             f"(known: {sorted(KNOWN_BACKBONES)})")
        overrides = {}
        if "vocab_size" in ocfg.get("text_config", {}):
            overrides["vocab_size"] = int(ocfg["text_config"]["vocab_size"])
        config = PixelVLAConfig.from_preset(KNOWN_BACKBONES[ids], **overrides)

    state = read_safetensors(weight_files(directory))
    groups: dict[str, dict[str, torch.Tensor]] = {FEATURIZER: {}, FUSED: {}}
    for k, v in state.items():
        for prefix in (FUSED, FEATURIZER):  # FUSED first: FEATURIZER is not its prefix, but be explicit
            if k.startswith(prefix):
                groups[prefix][k[len(prefix):]] = v
                break

    used: dict[str, set[str]] = {FEATURIZER: set(), FUSED: set()}
    dropped: set[str] = set()
    mapped: dict[str, torch.Tensor] = {}
    for prefix, tower, depth in ((FEATURIZER, "dino", config.dino_layers), (FUSED, "siglip", config.siglip_layers)):
        found = _tower_depth(groups[prefix])
        if found and found != depth:
            raise ValueError(f"{prefix}* has {found} blocks but the config says {depth} "
                             f"({tower}_layers); pass a matching config")
        d = set()
        mapped.update(_convert_tower(groups[prefix], tower, depth, config.num_patches, used[prefix], d))
        dropped |= {prefix + k for k in d}
    consumed = {FEATURIZER + k for k in used[FEATURIZER]} | {FUSED + k for k in used[FUSED]}
    for k, v in state.items():
        if k.startswith(PROJECTOR) and k[len(PROJECTOR):] in {f"fc{i}.{t}" for i in (1, 2, 3) for t in ("weight", "bias")}:
            mapped["projector." + k[len(PROJECTOR):]] = v
            consumed.add(k)
        elif k.startswith(LLM + "model."):
            mapped["llm." + k[len(LLM + "model."):]] = v
            consumed.add(k)
        elif k == LLM + "lm_head.weight":
            dropped.add(k)
            consumed.add(k)

    if config.lora_r:
        raise ValueError("import into a model without LoRA (lora_r = 0), then call freeze_for_stage('pue')")
    try:
        from accelerate import init_empty_weights
    except ImportError:
        model = PixelVLA(config)
    else:
        with init_empty_weights(include_buffers=False):
            model = PixelVLA(config)
        # the new modules start fresh: build them for real (the backbone stays on meta until loaded)
        model.pixel_encoder, model.prompt_encoder, model.decoder = (
            PixelEncoder(config), PromptEncoder(config), ActionDecoder(config))
        for module in (model.pixel_encoder, model.prompt_encoder, model.decoder):
            module.apply(model._init_new)
    target = model.state_dict()
    backbone_keys = {k for k in target if not k.startswith(NEW_MODULES)}
    for k in [k for k, v in mapped.items() if v is None]:
        mapped[k] = torch.zeros(target[k].shape)
    missing = sorted(backbone_keys - set(mapped))
    unexpected = sorted(set(state) - consumed) + sorted(set(mapped) - set(target))
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
              for k, v in mapped.items() if k in target and v.shape != target[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"cannot import {directory}: missing keys {missing}; unexpected keys {unexpected}; "
                         f"shape mismatches {shapes}")
    for module in (model.pixel_encoder, model.prompt_encoder, model.decoder):
        module.to(dtype)
    model.load_state_dict({k: v.to(dtype).contiguous() for k, v in mapped.items()}, strict=False, assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left unloaded after importing {directory}: {left}")
    model.to(dtype)
    logger.info("imported %d tensors from %s; dropped by design %d tensors (last blocks, final norms, "
                "attn_pool, lm_head); fresh: pixel encoder, prompt encoder, action decoder",
                len(mapped), directory, len(dropped))
    logger.debug("dropped: %s", sorted(dropped))
    return model.eval(), norm_stats
