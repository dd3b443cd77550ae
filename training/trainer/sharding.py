"""FSDP (torch.distributed.fsdp.fully_shard) without a full copy of the model in any process.

    1. meta_model: the backbone (vision towers, projector, LLM) is built on the meta device (shapes only); the
       modules PixelVLA adds (pixel, prompt and robot-state encoders, action decoder: ~50 M parameters at 7B)
       are built for real, as the OpenVLA importer builds them, and read from init_from when it is a PixelVLA
       checkpoint. The trainer then grows place prompts and adds LoRA as in a single process: LoRA adapters
       of a meta layer are meta too.
    2. shard: fully_shard per transformer block (LLM decoder layers, DINOv2 and SigLIP blocks), then the root.
       Each rank keeps its rows of every parameter (dim 0 split as torch.chunk splits it).
    3. materialise: each meta parameter gets an empty local shard, then its rows, one tensor at a time: from
       init_from's safetensors (a PixelVLA checkpoint by name, an OpenVLA one through the importer's key plan
       and transforms), or, for what the checkpoint does not hold (everything without init_from, new LoRA
       adapters, DINOv2's unused mask token), from its module's own initialiser run on a CPU copy of that one
       module. Every rank draws the same values from the same seed, whatever the world size.

Memory per process: the local shards (1/world of the parameters) + the modules PixelVLA adds in full until
they are sharded + one full tensor being read or initialised (7B: the 131 M-row embedding, 0.5 GB in fp32).
Writing `final/` still gathers the whole model, once, into rank 0's CPU memory (get_model_state_dict).

Random init without init_from draws each backbone tensor from the initialiser of the module that holds it
(transformers' _init_weights, torch's reset_parameters), so the distributions are those of a single-process
run but not its values; runs from a checkpoint (the way a 7B model is trained) start from the same values.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.nn as nn
from safetensors import safe_open

from pixelvla_model import PixelVLA, PixelVLAConfig
from pixelvla_model.checkpoint import tensor_shapes, weight_files
from pixelvla_model.openvla_import import (NEW_MODULES, import_plan, is_openvla_checkpoint,
                                           model_with_fresh_new_modules)

logger = logging.getLogger(__name__)

#: The transformer blocks that become one FSDP unit each (and one activation-checkpointing region).
BLOCK_TYPES = ("LlamaDecoderLayer", "Dinov2WithRegistersLayer", "SiglipEncoderLayer")

Plan = dict[str, list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]]


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__name__ in BLOCK_TYPES]


def checkpoint_blocks(model: nn.Module) -> None:
    """Activation checkpointing per transformer block: its activations are recomputed in the backward pass.
    The composable API keeps the parameter names (state dicts and checkpoints are unchanged)."""
    from torch.distributed._composable import checkpoint

    for block in transformer_blocks(model):
        checkpoint(block)


# ------------------------------------------------------------------------------------------------ 1. build
def meta_model(config: PixelVLAConfig, init: Optional[str | Path]) -> PixelVLA:
    """PixelVLA with its backbone on the meta device and the modules it adds built for real (freshly
    initialised, or read from ``init`` when that is a PixelVLA checkpoint)."""
    model = model_with_fresh_new_modules(config, torch.float32)
    if init and not is_openvla_checkpoint(init):
        files = weight_files(init)
        for name in NEW_MODULES:
            module = getattr(model, name)
            if module is not None:
                prefix = name + "."
                state = {k[len(prefix):]: t for k, t in read_tensors(files, lambda k: k.startswith(prefix))}
                module.load_state_dict(state, strict=True)
    return model


def read_tensors(files: list[Path], keep: Callable[[str], bool]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for the tensors of ``files`` whose name ``keep`` accepts, one at a time."""
    for f in files:
        with safe_open(str(f), framework="pt", device="cpu") as fh:
            for k in fh.keys():
                if keep(k):
                    yield k, fh.get_tensor(k)


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every parameter and buffer on the meta device: its structure, no memory."""
    memo = {id(t): (nn.Parameter(t.to("meta"), t.requires_grad) if isinstance(t, nn.Parameter) else t.to("meta"))
            for t in [*model.parameters(), *model.buffers()] if not t.is_meta}
    return copy.deepcopy(model, memo)


# ------------------------------------------------------------------------------------------------ 2. shard
def shard(model: nn.Module, bf16: bool) -> None:
    """fully_shard each transformer block, then the root (which holds every parameter outside a block).
    bf16: parameters all-gathered and computed in bfloat16, gradients reduced in float32; the optimiser
    keeps float32 shards either way."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for block in transformer_blocks(model):
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)


# ------------------------------------------------------------------------------------------------ 3. fill
def checkpoint_plan(init: str | Path, config: PixelVLAConfig) -> tuple[list[Path], Plan]:
    """The weight files of ``init`` and {checkpoint key: [(model key, transform)]}: the importer's plan for
    an OpenVLA checkpoint (unknown keys are an error, as in from_openvla), the identity for a PixelVLA one."""
    files = weight_files(init)
    shapes = tensor_shapes(files)
    if not is_openvla_checkpoint(init):
        return files, {k: [(k, lambda t: t)] for k in shapes}
    plan, dropped = import_plan(shapes, config)
    unexpected = sorted(set(shapes) - set(plan) - dropped)
    if unexpected:
        raise ValueError(f"cannot import {init}: unexpected keys {unexpected}")
    return files, plan


def materialise(model: nn.Module, shadow: nn.Module, checkpoint_names: dict[str, str], device: torch.device,
                init: Optional[str | Path]) -> None:
    """Give every meta parameter of the sharded ``model`` its local rows (module doc, step 3).

    shadow: a copy of the model taken before sharding (meta parameters: shapes only), whose modules are
    initialised one at a time for the parameters the checkpoint does not hold. checkpoint_names: model key ->
    its key in init_from (LoRA wraps layers after the checkpoint's names were fixed)."""
    meta = {}
    for module_name, module in model.named_modules():
        for attr, p in list(module.named_parameters(recurse=False)):
            if p.is_meta:
                module._parameters[attr] = nn.Parameter(torch.empty_like(p, device=device), p.requires_grad)
                meta[f"{module_name}.{attr}" if module_name else attr] = (module, attr)
    if not meta:
        return
    wanted = {checkpoint_names.get(n, n): n for n in meta}
    fresh = set(meta)
    if init:
        files, plan = checkpoint_plan(init, model.config)
        provided = {dst for targets in plan.values() for dst, _ in targets} & set(wanted)
        fresh = {wanted[k] for k in set(wanted) - provided}
        # a checkpoint supplies the whole backbone; only new LoRA adapters and DINOv2's unused mask token start fresh
        missing = sorted(n for n in fresh if ".lora_" not in n and not n.endswith("embeddings.mask_token"))
        if missing:
            raise ValueError(f"{init} has no weights for {missing}")
        with torch.no_grad():
            for dst, full in read_planned(files, plan, provided):
                module, attr = meta[wanted[dst]]
                fill(getattr(module, attr), full, wanted[dst])
    with torch.no_grad():
        for module_name, names in _by_module(fresh).items():
            twin = shadow.get_submodule(module_name)
            twin.to_empty(device="cpu", recurse=False)
            init_module(shadow, module_name, twin)
            for name in names:
                module, attr = meta[name]
                fill(getattr(module, attr), getattr(twin, attr), name)
            twin.to_empty(device="meta", recurse=False)
    logger.info("materialised %d sharded tensors (%d from %s, %d freshly initialised)", len(meta),
                len(meta) - len(fresh), init or "no checkpoint", len(fresh))


def read_planned(files: list[Path], plan: Plan, keys: set[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """(model key, full tensor) for the model keys in ``keys``, one source tensor read at a time."""
    for src, tensor in read_tensors(files, lambda k: any(dst in keys for dst, _ in plan.get(k, ()))):
        for dst, fn in plan[src]:
            if dst in keys:
                yield dst, fn(tensor)


def fill(param: torch.Tensor, full: torch.Tensor, name: str) -> None:
    """Copy this rank's rows of ``full`` into the sharded ``param`` (FSDP splits dim 0 as torch.chunk)."""
    if tuple(full.shape) != tuple(param.shape):
        raise ValueError(f"{name}: checkpoint shape {tuple(full.shape)} vs model {tuple(param.shape)}")
    mesh = param.device_mesh
    rank, world = mesh.get_local_rank(), mesh.size()
    chunks = torch.chunk(full, world, dim=0)
    param.to_local().copy_(chunks[rank] if rank < len(chunks) else full[:0])


def init_module(shadow: nn.Module, module_name: str, twin: nn.Module) -> None:
    """Initialise ``twin`` (one module, its own parameters on the CPU) as building the model would: LoRA's A by
    torch's Linear init and B with zeros (peft's default), transformers modules by their model's
    _init_weights, other modules by reset_parameters."""
    from transformers import PreTrainedModel

    if ".lora_B." in module_name + ".":
        for p in twin.parameters(recurse=False):
            p.zero_()
        return
    owners = [n for n, m in shadow.named_modules() if isinstance(m, PreTrainedModel) and module_name.startswith(n + ".")]
    if owners and ".lora_A." not in module_name + ".":
        shadow.get_submodule(max(owners, key=len))._init_weights(twin)
    elif hasattr(twin, "reset_parameters"):
        twin.reset_parameters()
    else:
        raise RuntimeError(f"no initialiser for {module_name} ({type(twin).__name__})")


def _by_module(names: set[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in sorted(names):
        module_name, _, _ = name.rpartition(".")
        out.setdefault(module_name, []).append(name)
    return out


# ------------------------------------------------------------------------------------------------ measure
def parameter_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes of the parameters this process holds, bytes of the whole model's parameters)."""
    local = full = 0
    for p in model.parameters():
        data = p.to_local() if hasattr(p, "to_local") else p
        local += data.numel() * data.element_size()
        full += p.numel() * p.element_size()
    return local, full


def rss_bytes() -> int:
    """This process's resident memory now (Linux)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
