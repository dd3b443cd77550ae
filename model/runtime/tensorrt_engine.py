"""TensorRT 10 and 11: build an engine from a bundle's ONNX graph, and run it. Deliberately thin.

Only machines with TensorRT installed (robots, GPU hosts) run this file; everything it consumes (the
ONNX graph, the manifest's shapes and token-length profile) is produced and tested elsewhere. I/O goes
through torch CUDA tensors (``data_ptr()`` as tensor addresses, torch's CUDA stream); no pycuda.

Engines are built from strongly typed networks: the ONNX graph's types are the engine's types (a bf16 graph
runs in bf16, the float32 parts the exporter kept stay float32), and no precision builder flag is ever set.
TensorRT 10 builds weakly typed networks unless asked (weak typing is deprecated since 10.12); TensorRT 11
removed weak typing and the BuilderFlag.FP16 / BF16 flags. What differs is in TENSORRT_GENERATIONS.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .base import PolicyRuntime
from .bundle import (TEXT_LEN, BundleError, BundleMismatchError, Expectation, check_compute_capability,
                     check_tensorrt_version, compare_io, open_engine, verify_engine_files)

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
TEXT_INPUTS = ("input_ids", "attention_mask")  # the inputs whose dim 1 is the token length


@dataclass(frozen=True)
class TensorRTGeneration:
    """How build_engine drives one TensorRT major version."""

    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members passed to Builder.create_network
    typing: str  # what the version does about weak typing (logged with each build)


#: The TensorRT API generations build_engine supports, by major version. Both get STRONGLY_TYPED, whose
#: bit differs (10: EXPLICIT_BATCH is member 0 and STRONGLY_TYPED 1; 11: STRONGLY_TYPED is 0), so the mask is
#: always computed from the enum. No generation gets a precision BuilderFlag: the graph's types decide.
TENSORRT_GENERATIONS = {
    10: TensorRTGeneration(network_flags=("STRONGLY_TYPED",),
                           typing="weakly typed unless STRONGLY_TYPED is set; weak typing deprecated since 10.12"),
    11: TensorRTGeneration(network_flags=("STRONGLY_TYPED",),
                           typing="always strongly typed; STRONGLY_TYPED is accepted and implied, BuilderFlag.FP16 "
                                  "/ BF16 removed"),
}


def tensorrt_generation(version: str) -> TensorRTGeneration:
    """The TENSORRT_GENERATIONS entry for a ``tensorrt.__version__`` string such as "10.13.0.35"."""
    match = re.match(r"(\d+)\.", version)
    major = int(match.group(1)) if match else None
    if major not in TENSORRT_GENERATIONS:
        raise RuntimeError(f"TensorRT {version} is not supported: engines are built with TensorRT "
                           f"{' or '.join(f'{m}.x' for m in TENSORRT_GENERATIONS)}")
    return TENSORRT_GENERATIONS[major]


def network_creation_flags(trt, generation: TensorRTGeneration) -> int:
    """The bit mask Builder.create_network takes for ``generation``'s flags, from ``trt``'s enum values."""
    mask = 0
    for name in generation.network_flags:
        mask |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    return mask


def graph_precision(manifest: dict) -> str:
    """The precision a bundle's ONNX graph was exported in (manifest "precision"; bundles written before the
    field hold fp32 graphs)."""
    return manifest.get("precision", "fp32")


def import_tensorrt():
    """``import tensorrt`` or a RuntimeError saying what to do."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise RuntimeError("TensorRT is not installed on this machine (import tensorrt failed: "
                           f"{e}); build and run engines on the robot / GPU host that has TensorRT 10 or 11, or "
                           "use the onnxruntime backend here") from e
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


def build_engine(onnx_path: str | os.PathLike, manifest: dict, precision: Optional[str] = None,
                 workspace_bytes: int = 4 << 30, timing_cache: Optional[str | os.PathLike] = None) -> bytes:
    """ONNX -> serialized engine (bytes) from a strongly typed network: the engine runs in the graph's
    precision (``precision``: None or that precision, the manifest's "precision"). The token-length
    optimisation profile comes from the manifest; the timing cache is read if present and written back."""
    exported = graph_precision(manifest)
    if exported not in PRECISIONS:
        raise BundleError(onnx_path, f"the manifest's precision {exported!r} is not one of {PRECISIONS}")
    if precision not in (None, exported):
        raise ValueError(f"{onnx_path} is a {exported} graph and a strongly typed engine runs in the graph's "
                         f"precision; export it with --precision {precision} for a {precision} engine")
    trt = import_tensorrt()
    generation = tensorrt_generation(trt.__version__)
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(network_creation_flags(trt, generation))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):  # reads external data beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(onnx_path, f"TensorRT's ONNX parser rejected it: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(manifest).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    logger.info("building a strongly typed TensorRT %s engine (%s; %s graph, workspace %.1f GiB) from %s",
                trt.__version__, generation.typing, exported, workspace_bytes / 2**30, onnx_path)
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

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
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
        with open_engine(engine_path) as blob:  # a memory map: no second copy of the engine in host memory
            self.engine = self._runtime.deserialize_cuda_engine(blob)
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
        from .devices import compute_capability

        path = Path(path)
        manifest = verify_engine_files(path, expect, verify_hashes)  # before TensorRT or the GPU is touched
        check_tensorrt_version(path, manifest, import_tensorrt().__version__)
        check_compute_capability(path, manifest, compute_capability(device))
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


__all__ = ["TensorRTRuntime", "build_engine", "profile_shapes", "graph_precision", "TENSORRT_GENERATIONS",
           "BundleMismatchError"]
