"""The runtime interface every backend implements, and the input checks they share.

A runtime runs the network only: it takes the batched tensor dict PixelVLAProcessor builds (keys =
modeling.input_names(config), torch tensors or numpy arrays) and returns normalised actions (B, N_c, 7) float32.
Tokenisation, resizing, prompt batching and un-normalisation stay in processing.py, the same code for
every backend (see runtime.policy.RuntimePolicy).
"""
from __future__ import annotations

import abc
from typing import Any, Mapping, Optional

import numpy as np
import torch

from .bundle import TEXT_LEN

NP_DTYPES = {"float32": np.float32, "int64": np.int64}


class RuntimeInputError(ValueError):
    """A batch that does not fit the runtime (missing key, wrong shape or dtype, token length out of range)."""


class PolicyRuntime(abc.ABC):
    """One backend running the PixelVLA prefill graph.

    Subclasses set ``backend``, ``device``, ``dtype``, ``model_id``, ``inputs``/``outputs`` (manifest-style
    specs: [{"name", "shape", "dtype"}], "text_len" marks the dynamic token length, "batch" a dynamic
    batch) and ``text_len_range`` (min, max) tokens.
    """

    backend: str = "?"
    device: str = "cpu"
    dtype: str = "float32"
    model_id: str = "?"
    inputs: list[dict] = []
    outputs: list[dict] = []
    text_len_range: tuple[int, int] = (1, 1 << 30)
    config: Any = None  # the PixelVLAConfig, where the runtime holds it (torch)

    @classmethod
    @abc.abstractmethod
    def load(cls, path, **kwargs) -> "PolicyRuntime":
        """Build the runtime from a model directory or a bundle directory."""

    @abc.abstractmethod
    def _run(self, batch: dict[str, np.ndarray | torch.Tensor]) -> np.ndarray:
        """Run a checked batch; return (B, N_c, 7) float32."""

    def infer(self, batch: Mapping[str, Any]) -> np.ndarray:
        """batch: {name: (B, ...) tensor or array} for every input -> normalised actions (B, N_c, 7) float32."""
        checked = self.check_batch(batch)
        out = self._run(checked)
        return np.asarray(out, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "device": self.device, "dtype": self.dtype, "model_id": self.model_id,
                "inputs": self.inputs, "outputs": self.outputs,
                "text_len": {"min": self.text_len_range[0], "max": self.text_len_range[1]}}

    # ------------------------------------------------------------------ shared checks
    def check_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Names, shapes (fixed dims exact, text_len within range, one batch size) and dtypes (cast to the
        spec's dtype: float inputs to float32, integer inputs to int64). Keeps torch tensors as torch."""
        if not isinstance(batch, Mapping):
            raise RuntimeInputError(f"infer() takes a dict of tensors, got {type(batch).__name__}")
        names = [t["name"] for t in self.inputs]
        missing = [n for n in names if n not in batch]
        if missing:
            raise RuntimeInputError(f"batch is missing inputs {missing} (expected {names})")
        out: dict[str, Any] = {}
        sizes: dict[str, int] = {}
        for spec in self.inputs:
            name, x = spec["name"], batch[spec["name"]]
            if not isinstance(x, (torch.Tensor, np.ndarray)):
                x = np.asarray(x)
            shape = tuple(x.shape)
            if len(shape) != len(spec["shape"]):
                raise RuntimeInputError(f"input {name!r} has shape {list(shape)}, expected {spec['shape']}")
            for dim, (have, want) in enumerate(zip(shape, spec["shape"])):
                if isinstance(want, int):
                    if have != want:
                        raise RuntimeInputError(f"input {name!r} has shape {list(shape)}, expected {spec['shape']} "
                                                f"(dim {dim})")
                elif sizes.setdefault(want, have) != have:
                    raise RuntimeInputError(f"input {name!r} has {want} = {have} but another input has "
                                            f"{sizes[want]}")
            if TEXT_LEN in sizes and not self.text_len_range[0] <= sizes[TEXT_LEN] <= self.text_len_range[1]:
                raise RuntimeInputError(f"token length {sizes[TEXT_LEN]} is outside the {self.text_len_range[0]}.."
                                        f"{self.text_len_range[1]} this {self.backend} runtime accepts")
            out[name] = _cast(x, spec["dtype"], name)
        return out


def _cast(x, dtype: str, name: str):
    floating = dtype.startswith("float")
    if isinstance(x, torch.Tensor):
        if not floating and x.is_floating_point():
            raise RuntimeInputError(f"input {name!r} must hold integers, got {x.dtype}")
        return x.to(torch.float32 if floating else torch.int64)
    if x.dtype == object or (not floating and np.issubdtype(x.dtype, np.floating)):
        raise RuntimeInputError(f"input {name!r} must be {dtype}, got {x.dtype}")
    return np.ascontiguousarray(x, dtype=NP_DTYPES[dtype])


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def to_torch(x, device: Optional[str | torch.device] = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(device) if device is not None else t
