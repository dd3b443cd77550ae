"""load_runtime: a checkpoint directory or an engine bundle directory -> a PolicyRuntime."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional

from ..configuration import PixelVLAConfig
from ..files import CONFIG_FILE, INDEX_FILE
from .base import PolicyRuntime
from .bundle import (ENGINE_FILE, MANIFEST_FILE, ONNX_FILE, BundleError, BundleMismatchError, Expectation, io_spec,
                     read_manifest, verify_engine_bundle)
from .devices import (check_fits_gpu, compute_capability, free_gpu_bytes, parse_device, precision_of,
                      safetensors_parameter_count, select_device, weight_bytes)

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def tensorrt_available() -> bool:
    """Whether the tensorrt package is installed; found without importing it (an import loads its CUDA libraries)."""
    return importlib.util.find_spec("tensorrt") is not None


def kind_of(path: str | os.PathLike) -> str:
    """"bundle" (manifest.json), "checkpoint" (config.json + safetensors) or a BundleError."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(path, "does not exist or is not a directory (expected a checkpoint directory with "
                                "config.json or an engine bundle with manifest.json)")
    if (path / MANIFEST_FILE).is_file():
        return "bundle"
    has_weights = any(path.glob("*.safetensors")) or (path / INDEX_FILE).is_file()
    if (path / CONFIG_FILE).is_file() and has_weights:
        return "checkpoint"
    if (path / ONNX_FILE).is_file() or (path / ENGINE_FILE).is_file():
        raise BundleError(path / MANIFEST_FILE, "missing: not a finished bundle (pixelvla-export writes "
                                                "manifest.json last); re-export it")
    raise BundleError(path, "is neither an engine bundle (no manifest.json) nor a checkpoint directory "
                            "(no config.json)")


def default_backend(path: str | os.PathLike) -> str:
    if kind_of(path) == "checkpoint":
        return "torch"
    manifest = read_manifest(path)
    engine_only = manifest["onnx"] is None
    return "tensorrt" if manifest["engine"] and (engine_only or tensorrt_available()) else "onnxruntime"


def check_checkpoint(path: Path, config: PixelVLAConfig, expect: Optional[Expectation]) -> None:
    """The torch backend's version of the bundle checks: the checkpoint's config and weights."""
    if expect is None:
        return
    where = path / CONFIG_FILE
    for field in ("chunk_size", "action_dim", "image_size"):
        want = getattr(expect, field)
        if want is not None and getattr(config, field) != want:
            raise BundleMismatchError(where, f"{field} is {getattr(config, field)!r} but {want!r} is expected")
    if expect.weights_sha256 is not None:
        from .bundle import weights_sha256

        have = weights_sha256(path)[0]
        if have != expect.weights_sha256:
            raise BundleMismatchError(path, f"weights sha256 is {have} but {expect.weights_sha256} is expected")
    if expect.inputs is not None:
        from .bundle import compare_io

        compare_io(where, "inputs", io_spec(config, expect.batch_size or "batch")[0], expect.inputs)


def check_bundle_dtype(path: Path, manifest: dict, backend: str, dtype: Optional[str]) -> None:
    """A bundle runs in the precision it was made in: its engine's (tensorrt) or its graph's (onnxruntime). A dtype
    asked for must be that one (or None); ValueError saying what runs otherwise."""
    if dtype is None:
        return
    asked = precision_of(dtype)
    if backend == "tensorrt":
        runs = (manifest.get("tensorrt") or {}).get("precision")
        made = "its TensorRT engine was built in"
    else:
        runs = manifest.get("precision", "fp32")  # bundles written before the field hold fp32 graphs
        made = "its ONNX graph was exported in"
    if runs is not None and asked != runs:
        raise ValueError(f"dtype {dtype!r} does not apply to the {backend} backend: {path} runs in {runs}, the "
                         f"precision {made}; leave dtype empty or set it to {runs}, or export the checkpoint again "
                         f"with pixelvla-export --precision {asked}")


def load_runtime(path: str | os.PathLike, backend: Optional[str] = None, device: Optional[str] = None,
                 dtype: Optional[str] = None, expect: Optional[Expectation] = None, threads: Optional[int] = None,
                 verify_hashes: bool = False) -> PolicyRuntime:
    """A runtime for ``path``.

    path: a checkpoint directory (config.json + safetensors; backend "torch") or an engine bundle
    (manifest.json; backends "onnxruntime" and "tensorrt"; an engine-only bundle: tensorrt). backend None picks
    torch for a checkpoint, and tensorrt for a bundle with an engine where TensorRT is installed, else onnxruntime.
    device, for every backend: "cpu", "cuda" or "cuda:N" (None: cuda for tensorrt, cpu otherwise); a CUDA device
    becomes the current one (devices.select_device) before anything loads, and a model whose weights do not fit
    its free memory is refused first (devices.check_fits_gpu). dtype: float32 / bfloat16 / float16 (also fp32 /
    bf16 / fp16) for torch (default float32); a bundle runs in the precision it was made in, and a dtype other
    than that one is refused (check_bundle_dtype). expect: what the robot is configured to run; a mismatch raises
    BundleMismatchError. threads: intra-op threads (torch: torch.set_num_threads; onnxruntime: session option).
    verify_hashes: sha256 of every bundle file; by default only of the files the backend runs (sizes always).
    """
    path = Path(path)
    kind = kind_of(path)
    backend = backend or default_backend(path)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device = device or ("cuda" if backend == "tensorrt" else "cpu")
    on_gpu = parse_device(device)[0] == "cuda"
    if backend == "torch":
        if kind != "checkpoint":
            raise BundleError(path, "is an engine bundle: it holds no torch weights; give the checkpoint directory "
                                    "for the torch backend")
        from ..checkpoint import weight_files
        from .torch_runtime import TorchRuntime

        dtype = dtype or "float32"
        precision_of(dtype)
        config = PixelVLAConfig.from_json_file(path / CONFIG_FILE)  # read once: the model is built from it
        check_checkpoint(path, config, expect)
        select_device(device)
        if on_gpu:
            weights = weight_bytes(safetensors_parameter_count(weight_files(path)), dtype)
            check_fits_gpu(weights, free_gpu_bytes(device), device, f"{path.name} in {dtype}")
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        return TorchRuntime.load(path, device=device, dtype=dtype, config=config)
    if kind != "bundle":
        raise BundleError(path, f"is a checkpoint directory; the {backend} backend runs an engine bundle: "
                                f"run `pixelvla-export {path} OUT_DIR` first")
    check_bundle_dtype(path, read_manifest(path), backend, dtype)
    if backend == "onnxruntime":
        from .onnx_runtime import OnnxRuntime

        select_device(device, torch_cuda_required=False)
        return OnnxRuntime.load(path, device=device, threads=threads, expect=expect, verify_hashes=verify_hashes)
    if not on_gpu:
        raise ValueError(f"the tensorrt backend runs on a CUDA GPU: device must be 'cuda' or 'cuda:N', got {device!r}")
    from .tensorrt_engine import TensorRTRuntime, import_tensorrt

    trt = import_tensorrt()
    select_device(device)
    manifest = verify_engine_bundle(path, trt.__version__, compute_capability(device), expect, verify_hashes)
    check_fits_gpu(manifest["files"][manifest["engine"]]["bytes"], free_gpu_bytes(device), device,
                   f"the {manifest['tensorrt']['precision']} engine of {path.name}")
    # checked above: the runtime's own checks repeat only the (cheap) sizes
    return TensorRTRuntime.load(path, device=device, verify_hashes=False)
