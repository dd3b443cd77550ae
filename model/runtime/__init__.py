"""Inference runtimes: the PixelVLA network behind one interface, on torch, ONNX Runtime or TensorRT.

    runtime = load_runtime(path, backend=None, device=None, dtype=None, expect=None)
    actions = runtime.infer(batch)      # batch: PixelVLAProcessor output; -> (B, N_c, 7) float32, normalised
    runtime.describe()                  # backend, device, dtype, model id, input names/shapes

    policy = load_policy(path, ...)     # processor + runtime: predict(image, instruction, prompts, mask)
    policy = PixelVLAPolicy(model, tokenizer, norm_stats)   # the same around an in-memory torch model

Bundles (pixelvla-export) are described in runtime/bundle.py; their checks raise BundleError /
BundleMismatchError naming the file and the problem.
"""
from .base import PolicyRuntime, RuntimeInputError
from .bundle import (BundleError, BundleMismatchError, Expectation, io_spec, read_manifest, verify_bundle,
                     weights_sha256)
from .factory import BACKENDS, load_runtime, tensorrt_available
from .policy import PixelVLAPolicy, RuntimePolicy, load_policy

__all__ = [
    "PolicyRuntime", "RuntimeInputError", "BundleError", "BundleMismatchError", "Expectation", "io_spec",
    "read_manifest", "verify_bundle", "weights_sha256", "BACKENDS", "load_runtime", "tensorrt_available",
    "RuntimePolicy", "PixelVLAPolicy", "load_policy",
]
