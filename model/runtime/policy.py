"""RuntimePolicy: PixelVLAProcessor (the model package's pre/post-processing) around any PolicyRuntime.

    policy = load_policy("/models/pixelvla-bundle")            # bundle -> TensorRT or onnxruntime
    actions = policy.predict(image, "pick up the red cube", prompts=[Point(120, 80)])   # (N_c, 7)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..checkpoint import CONFIG_FILE
from ..configuration import PixelVLAConfig
from ..processing import PixelVLAProcessor, load_norm_stats, resolve_unnorm_key
from ..prompts import Prompt
from ..tokenizer import load_tokenizer
from .base import PolicyRuntime
from .bundle import BundleError
from .factory import load_runtime


class RuntimePolicy:
    """predict(image, instruction, prompts, mask, unnorm_key) -> (N_c, 7) actions in robot units, like
    PixelVLAPolicy.predict, with the network run by ``runtime``."""

    def __init__(self, runtime: PolicyRuntime, processor: PixelVLAProcessor):
        self.runtime, self.processor = runtime, processor

    @property
    def config(self) -> PixelVLAConfig:
        return self.processor.config

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.processor.norm_stats

    def prepare(self, image: np.ndarray, instruction: str, prompts: Optional[Sequence[Prompt]] = None,
                mask: Optional[np.ndarray] = None) -> dict:
        """One frame -> the batch of one the runtime takes (ValueError for bad input)."""
        return self.processor([image], [instruction], [prompts], [mask])

    def predict_normalized(self, image, instruction, prompts=None, mask=None) -> np.ndarray:
        """(N_c, 7) float32 in [-1, 1]."""
        return self.runtime.infer(self.prepare(image, instruction, prompts, mask))[0]

    def predict(self, image: np.ndarray, instruction: str, prompts: Optional[Sequence[Prompt]] = None,
                mask: Optional[np.ndarray] = None, unnorm_key: Optional[str] = None) -> np.ndarray:
        """image (H, W, 3) uint8 RGB; prompts in pixel coordinates of ``image``; mask (H, W) target mask.
        Returns (N_c, 7) float64 in robot units (processing.unnormalize_actions)."""
        key = resolve_unnorm_key(self.norm_stats, unnorm_key)  # fail before running the network
        return self.processor.unnormalize(self.predict_normalized(image, instruction, prompts, mask), key)


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
