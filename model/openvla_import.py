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
the forward) is zero. The pixel encoder, prompt encoder, robot-state encoder (configs with proprio_dim > 0)
and action decoder start fresh. Any other missing or unexpected key, or a shape that differs, is an error
that lists them, raised from the file headers before any tensor is read.

The checkpoint's code (``auto_map``: configuration_prismatic.py, modeling_prismatic.py) is never run:
config.json is read as JSON (openvla_config: the preset of its backbone ids, its text_config and
image_sizes, the sizes its tensor shapes fix) and the shards are read as safetensors, shard by shard.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .checkpoint import iter_safetensors, tensor_shapes, weight_files
from .configuration import PixelVLAConfig
from .files import validate_norm_stats
from .modeling import ActionDecoder, PixelEncoder, PixelVLA, PromptEncoder, StateEncoder

logger = logging.getLogger(__name__)

FEATURIZER, FUSED, PROJECTOR, LLM = ("vision_backbone.featurizer.", "vision_backbone.fused_featurizer.",
                                     "projector.", "language_model.")
KNOWN_BACKBONES = {("dinosiglip-vit-so-224px", "llama2-7b-pure"): "prismatic-7b"}
#: The modules PixelVLA adds to the backbone: never in an OpenVLA checkpoint, always freshly initialised.
NEW_MODULES = {"pixel_encoder": PixelEncoder, "prompt_encoder": PromptEncoder, "state_encoder": StateEncoder,
               "decoder": ActionDecoder}


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


Transform = Callable[[torch.Tensor], torch.Tensor]


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _qkv_part(i: int) -> Transform:
    """Rows [q; k; v] of timm's fused qkv -> part i (0 q, 1 k, 2 v), as a tensor of its own."""
    return lambda t: t.chunk(3, dim=0)[i].clone()


def _tower_plan(keys: set[str], tower: str, depth: int, num_patches: int
                ) -> tuple[dict[str, list[tuple[str, Transform]]], set[str]]:
    """One timm ViT's keys (without the featurizer prefix) -> ({source key: [(PixelVLA key, transform)]},
    the keys dropped on purpose). Keys only: no tensor is read."""
    plan: dict[str, list[tuple[str, Transform]]] = {}
    dst = f"vision.{tower}"

    def put(src: str, key: str, fn: Transform = _same) -> None:
        if src in keys:
            plan.setdefault(src, []).append((key, fn))

    if tower == "dino":
        def pos_with_class_row(pos: torch.Tensor) -> torch.Tensor:
            if pos.shape[1] == num_patches:  # timm no_embed_class: patches only -> zero row for cls
                pos = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
            return pos

        put("patch_embed.proj.weight", f"{dst}.embeddings.patch_embeddings.projection.weight")
        put("patch_embed.proj.bias", f"{dst}.embeddings.patch_embeddings.projection.bias")
        put("cls_token", f"{dst}.embeddings.cls_token")
        put("reg_token", f"{dst}.embeddings.register_tokens")
        put("pos_embed", f"{dst}.embeddings.position_embeddings", pos_with_class_row)
    else:
        put("patch_embed.proj.weight", f"{dst}.embeddings.patch_embedding.weight")
        put("patch_embed.proj.bias", f"{dst}.embeddings.patch_embedding.bias")
        put("pos_embed", f"{dst}.embeddings.position_embedding.weight", lambda t: t.reshape(t.shape[-2:]))

    layers = "encoder.layer" if tower == "dino" else "encoder.layers"
    attn = "attention" if tower == "dino" else "self_attn"
    for i in range(depth - 1):  # the last block is not built
        lp = f"{dst}.{layers}.{i}"
        for src, key in _block_map(tower, i, lp).items():
            if tower == "dino" and ".ls" in src and src not in keys:
                src = src.replace("scale_factor", "gamma")  # plain timm name
            put(src, key)
        for kind in ("weight", "bias"):
            for part, name in enumerate(("q_proj", "k_proj", "v_proj")):
                put(f"blocks.{i}.attn.qkv.{kind}", f"{lp}.{attn}.{name}.{kind}", _qkv_part(part))
    unused = re.compile(rf"^(blocks\.{depth - 1}\.|norm\.|fc_norm\.|head\.|attn_pool\.)")
    dropped = {k for k in keys if k not in plan and unused.match(k)}
    return plan, dropped


def _tower_depth(keys) -> int:
    idx = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def is_openvla_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` holds an OpenVLA / Prismatic Hugging Face checkpoint (its config.json names the
    backbones, the remote-code classes or the norm stats) rather than a PixelVLA one (config.json =
    PixelVLAConfig). Reads config.json only."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        return False
    cfg = json.loads(path.read_text())
    openvla_keys = {"vision_backbone_id", "llm_backbone_id", "auto_map", "norm_stats"}
    return isinstance(cfg, dict) and bool(openvla_keys & set(cfg))


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


#: Llama fields of OpenVLA's config.json "text_config" -> PixelVLAConfig fields. OpenVLA writes only
#: vocab_size there; the others are read when a checkpoint gives them.
TEXT_CONFIG_FIELDS = {"vocab_size": "vocab_size", "hidden_size": "llm_hidden", "intermediate_size": "llm_intermediate",
                      "num_hidden_layers": "llm_layers", "num_attention_heads": "llm_heads",
                      "num_key_value_heads": "llm_kv_heads", "max_position_embeddings": "max_position_embeddings",
                      "rms_norm_eps": "rms_norm_eps", "rope_theta": "rope_theta"}


def sizes_from_weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """PixelVLAConfig sizes that the tensor shapes determine (widths, depths, patch and image size, vocab).
    Head counts are not among them: they come from config.json or the preset."""
    out: dict[str, Any] = {}
    for prefix, tower in ((FEATURIZER, "dino"), (FUSED, "siglip")):
        keys = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
        if "patch_embed.proj.weight" not in keys:
            continue
        hidden, _, patch, _ = keys["patch_embed.proj.weight"]
        out[f"{tower}_hidden"], out[f"{tower}_layers"], out["patch_size"] = hidden, _tower_depth(keys), patch
        mlp = keys.get("blocks.0.mlp.fc1.weight", (None,))[0]
        if tower == "dino":
            if mlp is not None and mlp % hidden == 0:
                out["dino_mlp_ratio"] = mlp // hidden
            if "reg_token" in keys:
                out["dino_registers"] = keys["reg_token"][1]
        elif mlp is not None:
            out["siglip_intermediate"] = mlp
        if tower == "siglip" and "pos_embed" in keys:  # SigLIP: one position per patch
            grid = math.isqrt(keys["pos_embed"][-2])
            out["image_size"] = grid * patch
    llm = {k[len(LLM + "model."):]: v for k, v in shapes.items() if k.startswith(LLM + "model.")}
    if "embed_tokens.weight" in llm:
        out["vocab_size"], out["llm_hidden"] = llm["embed_tokens.weight"]
        out["llm_layers"] = 1 + max(int(m.group(1)) for k in llm if (m := re.match(r"layers\.(\d+)\.", k)))
        if "layers.0.mlp.gate_proj.weight" in llm:
            out["llm_intermediate"] = llm["layers.0.mlp.gate_proj.weight"][0]
    return out


def openvla_config(directory: str | Path, **overrides: Any) -> PixelVLAConfig:
    """The PixelVLAConfig of an OpenVLA checkpoint directory, from its files and never its code: the preset of
    its backbone ids (dinosiglip-vit-so-224px + llama2-7b-pure -> "prismatic-7b"), then what config.json
    gives (text_config: vocab size, LLM sizes, heads, rms_norm_eps, rope_theta; image_sizes), then the sizes
    the weights' shapes fix (sizes_from_weights), then ``overrides`` (e.g. proprio_dim, chunk_size: the
    parts PixelVLA adds; or the vision head counts of a non-standard checkpoint)."""
    directory = Path(directory)
    ocfg = read_openvla_config(directory)
    ids = (ocfg["vision_backbone_id"], ocfg["llm_backbone_id"])
    if ids not in KNOWN_BACKBONES:
        raise ValueError(f"no preset for backbones {ids}; pass config=PixelVLAConfig(...) with their sizes "
                         f"(known: {sorted(KNOWN_BACKBONES)})")
    given: dict[str, Any] = {}
    text = ocfg.get("text_config") or {}
    for src, name in TEXT_CONFIG_FIELDS.items():
        if src in text:
            given[name] = text[src]
    if "image_sizes" in ocfg:
        sizes = {int(v) for v in ocfg["image_sizes"]}
        if len(sizes) != 1:
            raise ValueError(f"{directory}/config.json: image_sizes {ocfg['image_sizes']} is not square")
        given["image_size"] = sizes.pop()
    for name, value in sizes_from_weights(tensor_shapes(weight_files(directory))).items():
        if name in given and given[name] != value:
            logger.warning("%s: config.json gives %s = %s but the weights have %s; using the weights'",
                           directory, name, given[name], value)
        given[name] = value
    preset = KNOWN_BACKBONES[ids]
    values = {**given, **overrides}
    # Llama-2-7B has one key/value head per query head; a checkpoint with fewer says so in num_key_value_heads
    values.setdefault("llm_kv_heads", values.get("llm_heads", PixelVLAConfig.from_preset(preset).llm_heads))
    config = PixelVLAConfig.from_preset(preset, **values)
    logger.info("%s: %s preset with %s from its config.json and weights%s", directory, preset,
                ", ".join(f"{k}={v}" for k, v in sorted(given.items())),
                f"; overridden: {overrides}" if overrides else "")
    return config


def import_plan(shapes: dict[str, tuple[int, ...]], config: PixelVLAConfig
                ) -> tuple[dict[str, list[tuple[str, Transform]]], set[str]]:
    """Every checkpoint key -> [(PixelVLA key, transform)], and the keys dropped on purpose (module doc)."""
    plan: dict[str, list[tuple[str, Transform]]] = {}
    dropped: set[str] = set()
    for prefix, tower, depth in ((FEATURIZER, "dino", config.dino_layers), (FUSED, "siglip", config.siglip_layers)):
        keys = {k[len(prefix):] for k in shapes if k.startswith(prefix)}
        found = _tower_depth(keys)
        if found and found != depth:
            raise ValueError(f"{prefix}* has {found} blocks but the config says {depth} "
                             f"({tower}_layers); pass a matching config")
        tower_plan, tower_dropped = _tower_plan(keys, tower, depth, config.num_patches)
        plan.update({prefix + k: v for k, v in tower_plan.items()})
        dropped |= {prefix + k for k in tower_dropped}
    projector_keys = {f"fc{i}.{t}" for i in (1, 2, 3) for t in ("weight", "bias")}
    for k in shapes:
        if k.startswith(PROJECTOR) and k[len(PROJECTOR):] in projector_keys:
            plan[k] = [("projector." + k[len(PROJECTOR):], _same)]
        elif k.startswith(LLM + "model."):
            plan[k] = [("llm." + k[len(LLM + "model."):], _same)]
        elif k == LLM + "lm_head.weight":
            dropped.add(k)
    return plan, dropped


def from_openvla(directory: str | Path, config: Optional[PixelVLAConfig] = None,
                 dtype: Optional[torch.dtype] = None, **overrides: Any):
    """OpenVLA checkpoint directory -> (PixelVLA in eval mode, norm_stats).

    config: the PixelVLA sizes to build; by default openvla_config(directory, **overrides) (the checkpoint's
    own config.json and shapes). dtype: the model's dtype, float32 by default (OpenVLA ships bfloat16;
    float32 7B needs ~30 GB of memory).
    The backbone is built without random init (meta device) and filled shard by shard, one tensor at a time
    converted to ``dtype``: the peak memory is the model in ``dtype`` plus one source tensor. The modules
    PixelVLA adds (pixel encoder, prompt encoder, robot-state encoder when proprio_dim > 0, action decoder)
    start fresh, initialised from torch's global RNG.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dtype = dtype or torch.float32
    directory = Path(directory)
    ocfg = read_openvla_config(directory)
    norm_stats = validate_norm_stats(ocfg["norm_stats"])
    if config is None:
        config = openvla_config(directory, **overrides)
    elif overrides:
        raise ValueError("pass either config or overrides, not both")
    if config.lora_r:
        raise ValueError("import into a model without LoRA (lora_r = 0), then call freeze_for_stage('pue')")

    files = weight_files(directory)
    shapes = tensor_shapes(files)
    plan, dropped = import_plan(shapes, config)
    model = model_with_fresh_new_modules(config, dtype)
    meta = {k: v for k, v in model.state_dict().items() if v.is_meta}
    planned = {dst: (src, fn) for src, targets in plan.items() for dst, fn in targets}
    zero_filled = {k for k in meta if k.endswith("embeddings.mask_token")}  # unused by the forward
    missing = sorted(set(meta) - set(planned) - zero_filled)
    unexpected = sorted(set(shapes) - set(plan) - dropped) + sorted(set(planned) - set(meta))
    mismatched = []
    for dst, (src, fn) in planned.items():
        if dst in meta:
            got = tuple(fn(torch.empty(shapes[src], device="meta")).shape)
            if got != tuple(meta[dst].shape):
                mismatched.append(f"{dst} (from {src}): checkpoint {got} vs model {tuple(meta[dst].shape)}")
    if missing or unexpected or mismatched:
        raise ValueError(f"cannot import {directory}: missing keys {missing}; unexpected keys {unexpected}; "
                         f"shape mismatches {mismatched}")

    loaded: dict[str, torch.Tensor] = {k: torch.zeros(meta[k].shape, dtype=dtype) for k in zero_filled}
    current = None
    for f, src, tensor in iter_safetensors(files, dtype=dtype):
        if f != current and loaded:  # one shard read: its tensors become the module's parameters
            model.load_state_dict(loaded, strict=False, assign=True)
            loaded = {}
        current = f
        for dst, fn in plan.get(src, ()):
            loaded[dst] = fn(tensor).contiguous()
        del tensor
    model.load_state_dict(loaded, strict=False, assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left unloaded after importing {directory}: {left}")
    model.to(dtype)  # buffers follow the parameters, as after from_pretrained
    fresh = [name for name in NEW_MODULES if getattr(model, name) is not None]
    logger.info("imported %d tensors from %s; dropped by design %d tensors (last blocks, final norms, "
                "attn_pool, lm_head); fresh: %s", len(planned), directory, len(dropped), ", ".join(fresh))
    if config.proprio_dim:
        logger.info("robot-state input (proprio_dim %d): the state encoder is new and starts fresh (OpenVLA "
                    "reads no robot state)", config.proprio_dim)
    logger.debug("dropped: %s", sorted(dropped))
    return model.eval(), norm_stats


def model_with_fresh_new_modules(config: PixelVLAConfig, dtype: torch.dtype) -> PixelVLA:
    """PixelVLA with the backbone (towers, projector, LLM) on the meta device, waiting for the checkpoint's
    tensors, and the modules PixelVLA adds built and initialised for real in ``dtype``."""
    try:
        from accelerate import init_empty_weights
    except ImportError:  # random init of everything; the import then overwrites the backbone
        return PixelVLA(config).to(dtype)
    with init_empty_weights(include_buffers=False):
        model = PixelVLA(config)
    for name in NEW_MODULES:
        if getattr(model, name) is not None:
            module = NEW_MODULES[name](config)
            module.apply(model._init_new)
            setattr(model, name, module.to(dtype))
    return model
