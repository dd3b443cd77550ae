"""TensorRT 10: build an engine from a bundle's ONNX graph, and run it. Deliberately thin.

Only machines with TensorRT installed (robots, GPU hosts) run this file; everything it consumes (the
ONNX graph, the manifest's shapes and token-length profile) is produced and tested elsewhere. I/O goes
through torch CUDA tensors (``data_ptr()`` as tensor addresses, torch's CUDA stream); no pycuda.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from .base import PolicyRuntime
from .bundle import (MANIFEST_FILE, TEXT_LEN, BundleError, BundleMismatchError, Expectation, check_tensorrt_version,
                     compare_io, verify_bundle)

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
TEXT_INPUTS = ("input_ids", "attention_mask")  # the inputs whose dim 1 is the token length


def import_tensorrt():
    """``import tensorrt`` or a RuntimeError saying what to do."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise RuntimeError("TensorRT is not installed on this machine (import tensorrt failed: "
                           f"{e}); build and run engines on the robot / GPU host that has TensorRT 10, or use "
                           "the onnxruntime backend here") from e
    return trt


def profile_shapes(manifest: dict) -> dict[str, tuple[tuple, tuple, tuple]]:
    """{input name: (min, opt, max) shape} for the token-length optimisation profile."""
    tl = manifest["text_len"]
    out = {}
    for spec in manifest["inputs"]:
        if TEXT_LEN in spec["shape"]:
            out[spec["name"]] = tuple(tuple(tl[k] if d == TEXT_LEN else d for d in spec["shape"])
                                      for k in ("min", "opt", "max"))
    return out


def build_engine(onnx_path: str | os.PathLike, manifest: dict, precision: str = "fp16",
                 workspace_bytes: int = 4 << 30, timing_cache: Optional[str | os.PathLike] = None) -> bytes:
    """ONNX -> serialized engine (bytes). fp16/bf16 set the builder precision flags (layers may still run
    in fp32 where TensorRT decides); the timing cache is read if present and written back."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    trt = import_tensorrt()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):  # reads external data beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(onnx_path, f"TensorRT's ONNX parser rejected it: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(manifest).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    logger.info("building TensorRT engine (%s, workspace %.1f GiB) from %s", precision, workspace_bytes / 2**30,
                onnx_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(cache_path.name + ".tmp")
        tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
        os.replace(tmp, cache_path)
    return bytes(memoryview(serialized))


def tensorrt_info(precision: str, workspace_bytes: int) -> dict:
    """The manifest's "tensorrt" entry for an engine built here."""
    trt = import_tensorrt()
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"version": trt.__version__, "precision": precision, "workspace_bytes": int(workspace_bytes),
            "device": props.name, "compute_capability": f"{props.major}.{props.minor}"}


class TensorRTRuntime(PolicyRuntime):
    backend = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike, manifest: dict, device: str = "cuda"):
        import torch

        trt = import_tensorrt()
        self.trt, self.torch = trt, torch
        self.manifest, self.model_id = manifest, manifest["model_id"]
        self.device, self.dtype = str(device), manifest["tensorrt"]["precision"]
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise BundleError(engine_path, "TensorRT cannot deserialize it (corrupt, truncated, or built for "
                                           "another GPU / TensorRT version); rebuild it on this machine")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=self.device)
        to_torch = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
                    trt.int64: torch.int64, trt.int32: torch.int32, trt.bool: torch.bool}
        self._dtypes, inputs, outputs = {}, [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self._dtypes[name] = to_torch[self.engine.get_tensor_dtype(name)]
            shape = [d if d >= 0 else TEXT_LEN for d in self.engine.get_tensor_shape(name)]
            spec = {"name": name, "shape": shape, "dtype": str(self._dtypes[name]).removeprefix("torch.")}
            (inputs if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
        compare_io(engine_path, "inputs", inputs, manifest["inputs"])
        compare_io(engine_path, "outputs", outputs, manifest["outputs"])
        self.inputs, self.outputs = inputs, outputs
        tl = manifest["text_len"]
        self.text_len_range = (tl["min"], tl["max"])

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cuda", expect: Optional[Expectation] = None,
             verify_hashes: bool = True) -> "TensorRTRuntime":
        """path: a bundle directory holding model.engine."""
        path = Path(path)
        manifest = verify_bundle(path, expect, hashes=verify_hashes)
        if manifest["engine"] is None:
            raise BundleError(path / MANIFEST_FILE, "the bundle has no TensorRT engine ('engine' is null); build "
                                                    "one with pixelvla-export --engine on this machine")
        check_tensorrt_version(path, manifest, import_tensorrt().__version__)
        return cls(path / manifest["engine"], manifest, device=device)

    def _run(self, batch) -> np.ndarray:
        torch = self.torch
        with torch.cuda.stream(self.stream):
            keep = []  # the tensors must outlive the launch
            for name, x in batch.items():
                t = (x if isinstance(x, torch.Tensor) else torch.from_numpy(x))
                t = t.to(self.device, self._dtypes[name], non_blocking=True).contiguous()
                keep.append(t)
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
            out = torch.empty(tuple(self.context.get_tensor_shape("actions")), dtype=self._dtypes["actions"],
                              device=self.device)
            self.context.set_tensor_address("actions", out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            result = out.float().cpu()  # synchronises the stream
        return result.numpy()

    def describe(self) -> dict:
        d = super().describe()
        d.update(tensorrt=self.trt.__version__, engine_built_with=self.manifest["tensorrt"],
                 weights_sha256=self.manifest["weights"]["sha256"])
        return d


__all__ = ["TensorRTRuntime", "build_engine", "profile_shapes", "BundleMismatchError"]
