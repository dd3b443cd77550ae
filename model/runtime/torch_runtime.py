"""The torch backend: the PixelVLA module itself, CPU or CUDA, fp32 / bf16 / fp16.

The one place the torch network runs for inference: PixelVLAPolicy (an in-memory model) and load_policy
(a checkpoint directory) both run it through TorchRuntime."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..configuration import PixelVLAConfig
from ..modeling import load_model
from .base import PolicyRuntime
from .bundle import io_spec

TORCH_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: Optional[str]) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but torch sees no CUDA device")
    return str(device)


class TorchRuntime(PolicyRuntime):
    backend = "torch"

    def __init__(self, model: torch.nn.Module, device: str = "cpu", dtype: Optional[str] = "float32",
                 model_id: str = "?"):
        """dtype: the model is cast to it; None keeps the model's own dtype (an in-memory model)."""
        if dtype is not None and dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(TORCH_DTYPES)}, got {dtype!r}")
        self.device = resolve_device(device)
        if dtype is None:
            self.model = model.to(self.device).eval()
            self.torch_dtype = next(model.parameters()).dtype
        else:
            self.torch_dtype = TORCH_DTYPES[dtype]
            self.model = model.to(self.device, self.torch_dtype).eval()
        self.dtype = str(self.torch_dtype).removeprefix("torch.")
        self.config: PixelVLAConfig = model.config
        self.model_id = model_id
        self.inputs, self.outputs = io_spec(self.config, batch_size="batch")
        self.text_len_range = (1, self.config.max_position_embeddings - self.config.prefix_tokens)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", dtype: Optional[str] = "float32",
             model_id: Optional[str] = None, config: Optional[PixelVLAConfig] = None) -> "TorchRuntime":
        """path: a checkpoint directory (config.json + safetensors); config: its config, when already read."""
        path = Path(path)
        # built in the dtype it runs in: no float32 copy of a bf16 7B (an unknown dtype is refused by __init__)
        model = load_model(path, config=config, dtype=TORCH_DTYPES.get(dtype) if dtype else None)
        return cls(model, device=device, dtype=dtype, model_id=model_id or path.name)

    @torch.inference_mode()
    def _run(self, batch) -> np.ndarray:
        inputs = {}
        for name, x in batch.items():
            t = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
            inputs[name] = t.to(self.device, self.torch_dtype) if t.is_floating_point() else t.to(self.device)
        return self.model(**inputs).actions.float().cpu().numpy()

    def describe(self) -> dict:
        d = super().describe()
        d.update(torch=torch.__version__, threads=torch.get_num_threads())
        if self.device.startswith("cuda"):
            d["device_name"] = torch.cuda.get_device_name(torch.device(self.device))
        return d
