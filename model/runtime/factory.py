"""load_runtime: a checkpoint directory or an engine bundle directory -> a PolicyRuntime."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..configuration import PixelVLAConfig
from ..files import CONFIG_FILE, INDEX_FILE
from .base import PolicyRuntime
from .bundle import (ENGINE_FILE, MANIFEST_FILE, ONNX_FILE, BundleError, BundleMismatchError, Expectation, io_spec,
                     read_manifest)

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


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
    return "tensorrt" if read_manifest(path)["engine"] and tensorrt_available() else "onnxruntime"


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


def load_runtime(path: str | os.PathLike, backend: Optional[str] = None, device: Optional[str] = None,
                 dtype: Optional[str] = None, expect: Optional[Expectation] = None, threads: Optional[int] = None,
                 verify_hashes: bool = True) -> PolicyRuntime:
    """A runtime for ``path``.

    path: a checkpoint directory (config.json + safetensors; backend "torch") or an engine bundle
    (manifest.json; backends "onnxruntime" and "tensorrt"). backend None picks torch for a checkpoint,
    and tensorrt for a bundle with an engine where TensorRT imports, else onnxruntime. device: "cpu",
    "cuda[:i]" (None: cuda for tensorrt, cpu otherwise). dtype (torch only): float32 / bfloat16 / float16.
    expect: what the robot is configured to run; a mismatch raises BundleMismatchError.
    threads: intra-op threads (torch: torch.set_num_threads; onnxruntime: session option).
    """
    path = Path(path)
    kind = kind_of(path)
    backend = backend or default_backend(path)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        if kind != "checkpoint":
            raise BundleError(path, "is an engine bundle: it holds no torch weights; give the checkpoint directory "
                                    "for the torch backend")
        from .torch_runtime import TorchRuntime

        if threads:
            import torch

            torch.set_num_threads(int(threads))
        config = PixelVLAConfig.from_json_file(path / CONFIG_FILE)  # read once: the model is built from it
        check_checkpoint(path, config, expect)
        return TorchRuntime.load(path, device=device or "cpu", dtype=dtype or "float32", config=config)
    if kind != "bundle":
        raise BundleError(path, f"is a checkpoint directory; the {backend} backend runs an engine bundle: "
                                f"run `pixelvla-export {path} OUT_DIR` first")
    if dtype not in (None, "float32", "fp32") and backend == "onnxruntime":
        raise ValueError(f"the onnxruntime backend runs the bundle's fp32 graph; dtype {dtype!r} is not available")
    if backend == "onnxruntime":
        from .onnx_runtime import OnnxRuntime

        return OnnxRuntime.load(path, device=device or "cpu", threads=threads, expect=expect,
                                verify_hashes=verify_hashes)
    from .tensorrt_engine import TensorRTRuntime

    return TensorRTRuntime.load(path, device=device or "cuda", expect=expect, verify_hashes=verify_hashes)
