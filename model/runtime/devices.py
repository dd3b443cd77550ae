"""Where a runtime runs: device strings, the CUDA device, precisions, and whether a model fits the GPU.

Devices are "cpu", "cuda" (the first GPU) or "cuda:N" for every backend. load_runtime selects the CUDA device
(torch.cuda.set_device) before any runtime loads: TensorRT deserialises an engine onto the current device,
and torch allocates there. The memory check runs before the weights are loaded, so a model that cannot fit
the GPU is refused at start-up with the numbers, not by an out-of-memory error halfway through loading.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Iterable, Optional

#: precision names accepted for a dtype -> the bundle manifest's spelling
PRECISIONS = {"float32": "fp32", "fp32": "fp32", "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16"}
BYTES_PER_VALUE = {"fp32": 4, "bf16": 2, "fp16": 2}
#: the GPU memory a model takes beyond its weights, as a fraction of them: activations (a 7B's prefill of
#: ~300 tokens is under 1 GB), the CUDA context and the allocator's slack
GPU_MEMORY_HEADROOM = 0.2


def precision_of(dtype: str) -> str:
    """"bfloat16" / "bf16" -> "bf16" (the manifest's spelling); ValueError for anything else."""
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype must be one of {', '.join(sorted(PRECISIONS))}, got {dtype!r}")
    return PRECISIONS[dtype]


def parse_device(device: str) -> tuple[str, Optional[int]]:
    """"cpu" -> ("cpu", None); "cuda" -> ("cuda", 0); "cuda:1" -> ("cuda", 1); ValueError otherwise."""
    match = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", str(device))
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if match.group(1) == "cpu":
        return "cpu", None
    return "cuda", int(match.group(2) or 0)


def select_device(device: str, torch_cuda_required: bool = True) -> str:
    """Check ``device`` and, for a CUDA device, make it torch's (and so TensorRT's) current device. Returns it.

    RuntimeError when torch sees no CUDA device (unless not ``torch_cuda_required``: onnxruntime-gpu runs
    without torch's CUDA) or not that one."""
    kind, index = parse_device(device)
    if kind == "cpu":
        return device
    import torch

    if not torch.cuda.is_available():
        if not torch_cuda_required:
            return device
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA device (a CPU-only torch, no driver, "
                           "or CUDA_VISIBLE_DEVICES empty)")
    count = torch.cuda.device_count()
    if index >= count:
        raise RuntimeError(f"device {device!r} asked for, but torch sees {count} CUDA device(s): cuda:0..cuda:{count - 1}")
    torch.cuda.set_device(index)
    return device


def compute_capability(device: str) -> str:
    """"8.7" for the CUDA device ``device`` (how TensorRT engines record the GPU they were built for)."""
    import torch

    major, minor = torch.cuda.get_device_capability(parse_device(device)[1])
    return f"{major}.{minor}"


def free_gpu_bytes(device: str) -> int:
    """Free memory of the CUDA device ``device`` (cudaMemGetInfo)."""
    import torch

    return int(torch.cuda.mem_get_info(parse_device(device)[1])[0])


def safetensors_parameter_count(files: Iterable[str | os.PathLike]) -> int:
    """Parameters stored in safetensors files, from their headers alone (nothing is loaded)."""
    total = 0
    for path in files:
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


def weight_bytes(parameter_count: int, dtype: str) -> int:
    """Bytes of ``parameter_count`` weights in ``dtype``."""
    return int(parameter_count) * BYTES_PER_VALUE[precision_of(dtype)]


def check_fits_gpu(weights: int, free: int, device: str, what: str) -> None:
    """RuntimeError, with the numbers and what to do, when ``weights`` bytes plus GPU_MEMORY_HEADROOM exceed the
    ``free`` bytes of ``device``. ``what`` names the model and its dtype for the message."""
    needed = weights * (1 + GPU_MEMORY_HEADROOM)
    if needed > free:
        gib = 2 ** 30
        raise RuntimeError(f"{what} does not fit {device}: it needs about {needed / gib:.1f} GiB ({weights / gib:.1f} "
                           f"GiB of weights + {GPU_MEMORY_HEADROOM:.0%}) but {free / gib:.1f} GiB is free; use "
                           "dtype bfloat16 (half of float32), a TensorRT engine bundle, a larger GPU, or stop what "
                           "else holds this GPU's memory")
