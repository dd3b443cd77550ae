"""Checkpoint directories (Hugging Face layout, safetensors only; never pickle).

    config.json                         PixelVLAConfig (validated at load)
    model.safetensors                   weights, when they fit in one shard, or
    model-00001-of-0000N.safetensors    shards of at most ``max_shard_size`` bytes
    model.safetensors.index.json          + {"metadata": {"total_size": bytes}, "weight_map": {name: file}}
    norm_stats.json                     OpenVLA layout: {dataset: {"action": {q01, q99, mask, ...}}}
    tokenizer.json, tokenizer_config.json, ...   (PixelVLAPolicy.save_pretrained)

A LoRA-wrapped model (stage "pue") saves its adapter weights unmerged; config.json records ``lora_r``
so the same structure is rebuilt before loading.

This module knows the files, not the network: PixelVLA.save_pretrained / from_pretrained (modeling.py)
call save_pretrained / load_pretrained here with the model class.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .configuration import PixelVLAConfig
from .files import CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE, save_norm_stats

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 4 * 1024**3


def save_pretrained(model, directory: str | Path, norm_stats: Optional[dict[str, Any]] = None, tokenizer=None,
                    max_shard_size: int = DEFAULT_MAX_SHARD_BYTES) -> None:
    """Write config.json, safetensors weights (sharded above ``max_shard_size`` bytes), norm stats, tokenizer."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in list(directory.glob("model*.safetensors")) + [directory / INDEX_FILE]:
        old.unlink(missing_ok=True)  # never mix shards of two saves
    model.config.save(directory / CONFIG_FILE)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    if len(shards) == 1:
        save_file(shards[0], str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards, start=1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(directory / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        (directory / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total},
                                                        "weight_map": weight_map}, indent=2) + "\n")
    if norm_stats:
        save_norm_stats(norm_stats, directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    logger.info("saved PixelVLA (%d tensors, %d shard(s)) to %s", len(state), len(shards), directory)


def weight_files(directory: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint directory (single file or index + shards)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    index = directory / INDEX_FILE
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [f for f in files if not (directory / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists shards that are missing from {directory}: {missing}")
        return [directory / f for f in files]
    if (directory / WEIGHTS_FILE).is_file():
        return [directory / WEIGHTS_FILE]
    found = sorted(directory.glob("*.safetensors"))
    if found:
        return found
    raise FileNotFoundError(f"no weights in {directory}: expected {WEIGHTS_FILE} or {INDEX_FILE} + shards "
                            "(write them with save_pretrained; .bin/.pt pickles are never loaded)")


def tensor_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor in the files, read from their headers (no tensor data is loaded)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt", device="cpu") as fh:
            for k in fh.keys():
                shapes[k] = tuple(fh.get_slice(k).get_shape())
    return shapes


def iter_safetensors(files: list[Path], map_location: str = "cpu", dtype: Optional[torch.dtype] = None,
                     prefix: str = "") -> Iterator[tuple[Path, str, torch.Tensor]]:
    """(file, name, tensor) for every tensor whose name starts with ``prefix``, file by file and one tensor at a
    time, each a fresh copy (the floating-point ones in ``dtype`` when given, converted straight from the file):
    a caller that keeps only what it needs never holds more than one source tensor, and no other is read."""
    for f in files:
        with safe_open(str(f), framework="pt", device=map_location) as fh:
            names = [k for k in fh.keys() if k.startswith(prefix)]
        for k in names:
            # The file is mapped anew for each tensor: a mapping held open keeps every page read through it
            # resident, and a whole shard would then count beside the model it is read into.
            with safe_open(str(f), framework="pt", device=map_location) as fh:
                t = fh.get_tensor(k)
                # a copy in allocator-aligned memory: tensors read from the file can be misaligned, which
                # changes the CPU matmul kernels and breaks bit-exact reloads
                t = t.to(dtype=dtype if t.is_floating_point() else None, copy=True)
            yield f, k, t


def read_safetensors(files: list[Path], map_location: str = "cpu",
                     dtype: Optional[torch.dtype] = None) -> dict[str, torch.Tensor]:
    return {k: t for _, k, t in iter_safetensors(files, map_location, dtype)}


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device (shapes only: no memory, and their random
    init does nothing) and their buffers for real: the non-persistent ones (rotary frequencies, normalisation
    constants) are computed at construction and are not in a checkpoint. Each parameter still comes into being
    on the CPU in its module's constructor (mostly torch.empty, never written) and goes to meta as it is
    registered, one at a time. Not thread-safe: it swaps nn.Module.register_parameter while the block runs."""
    register = torch.nn.Module.register_parameter

    def register_on_meta(module: torch.nn.Module, name: str, param: Optional[torch.nn.Parameter]) -> None:
        register(module, name, param)
        if param is not None:
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                      assign: bool = False) -> None:
    """load_state_dict that fails listing missing / unexpected / mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(f"weights in {source} do not match the config: missing keys {missing}; unexpected keys "
                         f"{unexpected}; shape mismatches {shapes}. Check that config.json belongs to these weights.")
    model.load_state_dict(state, strict=True, assign=assign)


def load_pretrained(model_cls, directory: str | Path, map_location: str = "cpu",
                    config: Optional[PixelVLAConfig] = None, dtype: Optional[torch.dtype] = None):
    """config.json + safetensors -> ``model_cls(config)`` with the weights loaded, in eval mode.

    config: the directory's config when the caller has already read it (it is then not read again).
    dtype: what the model's floating-point parameters and buffers end in, as after ``model.to(dtype)``; None: the
    checkpoint's dtype when its parameters share one, else each as stored. The module is built with its
    parameters on the meta device and filled with the checkpoint's tensors, read one at a time and converted
    to ``dtype`` as they are read: the peak memory is the model in ``dtype`` plus one source tensor (a float32
    checkpoint loads in bfloat16 within about its bfloat16 size)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if config is None:
        config = PixelVLAConfig.from_json_file(directory / CONFIG_FILE)
    files = weight_files(directory)
    with parameters_on_meta():
        model = model_cls(config)
    load_state_strict(model, read_safetensors(files, map_location, dtype), str(directory), assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left unloaded after reading {directory}: {left}")
    if dtype is None:
        dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
        dtype = dtypes.pop() if len(dtypes) == 1 else None
    if dtype is not None:  # the buffers built with the module (float32) follow the parameters
        model.to(dtype)
    return model.to(map_location).eval()
