"""The ONNX Runtime backend: a bundle's model.onnx on the CPU, or on the CUDA execution provider when
onnxruntime-gpu is installed and a device 'cuda' is asked for."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from .base import PolicyRuntime, to_numpy
from .bundle import (MANIFEST_FILE, BundleError, BundleMismatchError, Expectation, compare_io, verify_runtime_files)

ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16",
             "tensor(bfloat16)": "bfloat16", "tensor(int32)": "int32", "tensor(bool)": "bool"}


def session_io(session) -> tuple[list[dict], list[dict]]:
    """The graph's inputs / outputs as manifest-style specs (symbolic dims keep their names)."""
    def spec(arg):
        return {"name": arg.name, "shape": [d if isinstance(d, int) else str(d) for d in arg.shape],
                "dtype": ORT_TYPES.get(arg.type, arg.type)}
    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


class OnnxRuntime(PolicyRuntime):
    backend = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, manifest: dict, device: str = "cpu",
                 threads: Optional[int] = None, bundle_dir: Optional[Path] = None):
        import onnxruntime as ort

        self.bundle_dir = Path(bundle_dir or Path(onnx_path).parent)
        self.manifest = manifest
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
        available = ort.get_available_providers()
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise RuntimeError(f"device {device!r} asked for, but this onnxruntime has no CUDA execution "
                                   f"provider (available: {available}); install onnxruntime-gpu or use device 'cpu'")
            index = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise BundleError(onnx_path, f"onnxruntime cannot load it ({type(e).__name__}: {e}); the file is "
                                         "corrupt or truncated: re-export the bundle") from e
        self.device, self.dtype = str(device), "float32"
        self.providers = self.session.get_providers()
        self.model_id = manifest["model_id"]
        self.inputs, self.outputs = session_io(self.session)
        # The graph itself must be what the manifest says (a mismatch means the files were mixed up).
        compare_io(Path(onnx_path), "inputs", self.inputs, manifest["inputs"])
        compare_io(Path(onnx_path), "outputs", self.outputs, manifest["outputs"])
        tl = manifest["text_len"]
        self.text_len_range = (tl["min"], tl["max"])

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", threads: Optional[int] = None,
             expect: Optional[Expectation] = None, verify_hashes: bool = False) -> "OnnxRuntime":
        """path: a bundle directory (pixelvla-export). verify_hashes: sha256 of every file, not only the graph's."""
        path = Path(path)
        manifest = verify_runtime_files(path, "onnxruntime", expect, verify_hashes)
        if manifest["onnx"] is None:
            raise BundleError(path / MANIFEST_FILE, "the bundle has no ONNX graph ('onnx' is null): an engine-only "
                                                    "bundle runs on the tensorrt backend only")
        return cls(path / manifest["onnx"], manifest, device=device, threads=threads, bundle_dir=path)

    def _run(self, batch) -> np.ndarray:
        feeds = {name: to_numpy(x) for name, x in batch.items()}
        return self.session.run(["actions"], feeds)[0]

    def describe(self) -> dict:
        import onnxruntime as ort

        d = super().describe()
        d.update(onnxruntime=ort.__version__, providers=self.providers, bundle=str(self.bundle_dir),
                 weights_sha256=self.manifest["weights"]["sha256"])
        return d


__all__ = ["OnnxRuntime", "BundleMismatchError"]
