"""RuntimePolicy: PixelVLAProcessor (the model package's pre/post-processing) around any PolicyRuntime.

    policy = load_policy("/models/pixelvla-bundle")            # bundle -> TensorRT or onnxruntime
    actions = policy.predict(image, "pick up the red cube", prompts=[Point(120, 80)])   # (N_c, 7)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..checkpoint import CONFIG_FILE
from ..configuration import PixelVLAConfig
from ..processing import PixelVLAPolicy, PixelVLAProcessor, load_norm_stats
from ..tokenizer import load_tokenizer
from .base import PolicyRuntime
from .bundle import BundleError
from .factory import load_runtime


class RuntimePolicy(PixelVLAPolicy):
    """PixelVLAPolicy with the network run by ``runtime`` (torch, onnxruntime or TensorRT): the same
    predict(image, instruction, prompts, mask, unnorm_key) -> (N_c, 7) actions in robot units."""

    def __init__(self, runtime: PolicyRuntime, processor: PixelVLAProcessor):
        self.runtime, self.processor = runtime, processor

    @property
    def config(self) -> PixelVLAConfig:
        return self.processor.config

    @property
    def text_len_range(self) -> tuple[int, int]:
        return self.runtime.text_len_range  # a bundle may accept fewer tokens than the config allows

    def infer(self, inputs: dict) -> np.ndarray:
        return self.runtime.infer(inputs)


def load_policy(path: str | os.PathLike, backend: Optional[str] = None, device: Optional[str] = None,
                dtype: Optional[str] = None, **runtime_kwargs) -> RuntimePolicy:
    """A checkpoint or bundle directory -> RuntimePolicy (config, tokenizer and norm stats from the same
    directory; the runtime from load_runtime with the same arguments)."""
    path = Path(path)
    runtime = load_runtime(path, backend=backend, device=device, dtype=dtype, **runtime_kwargs)
    try:
        config = PixelVLAConfig.from_json_file(path / CONFIG_FILE)
        tokenizer = load_tokenizer(path)
        norm_stats = load_norm_stats(path)
    except (FileNotFoundError, ValueError) as e:
        raise BundleError(path, f"cannot build the pre/post-processing: {e}") from e
    return RuntimePolicy(runtime, PixelVLAProcessor(config, tokenizer, norm_stats))
