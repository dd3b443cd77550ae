"""pixelvla-bench --forward: the network's forward alone, eager and replayed as a CUDA graph, beside the
weight-read lower bound.

    pixelvla-bench --forward --model prismatic-7b --device cuda --dtype bfloat16 --frames 50 --warmup 10

The model (a preset with random weights, or a checkpoint directory) is built directly on the device in the
target dtype: no host copy and no float32 copy of a 7B. Input, batch 1: one 224x224 frame, a 20-token
instruction, one point prompt and its target mask (example_inputs; LLM sequence BOS + 256 visual + 1 pixel
+ 4 prompt slots + 19 text = 281 tokens). Under torch.inference_mode:

- eager: ``model(**inputs)``, each call timed with CUDA events (perf_counter on the CPU);
- cuda_graph: the forward captured once in a torch.cuda.CUDAGraph (warm-up on a side stream, as torch's
  CUDA-graph docs require) and replayed; each timed call copies a new frame's inputs into the graph's static
  input tensors, then replays. A CPU has no CUDA graphs: the mode is reported unavailable, with the reason.

Reported: parameters, weight bytes (sum of the parameters' bytes), the weight-read lower bound (weight bytes
/ memory bandwidth: a batch-1 forward reads every weight at least once), latency p50 / p90 / min per mode,
the eager / graph speed-up, peak GPU memory per mode (torch.cuda.max_memory_allocated after a reset), the
device name and the torch version. The bandwidth is --bandwidth-gbs, else the datasheet peak of a known GPU
(KNOWN_GPU_BANDWIDTH_GBS), else measured with a large copy on the device (the report says which).
"""
from __future__ import annotations

import contextlib
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from ..configuration import PRESETS, PixelVLAConfig
from ..modeling import PixelVLA, example_inputs
from ..prompts import Point, batch_prompts
from .devices import select_device
from .timing import percentiles
from .torch_runtime import TORCH_DTYPES

TEXT_TOKENS = 20
#: (pattern on torch.cuda.get_device_name(), GPU, datasheet peak DRAM bandwidth in GB/s = 1e9 bytes/s).
#: First match wins. The names are those the CUDA driver reports, e.g. "NVIDIA H100 80GB HBM3" (SXM),
#: "NVIDIA A100-SXM4-80GB". Every Jetson Orin module reports "Orin"; the entry assumes an AGX Orin (an Orin NX
#: has 102.4 GB/s, an Orin Nano 68): pass --bandwidth-gbs on those.
KNOWN_GPU_BANDWIDTH_GBS: tuple[tuple[str, str, float], ...] = (
    (r"H100.*PCIe", "H100 PCIe", 2000.0),
    (r"H100.*(SXM|HBM3)", "H100 SXM", 3350.0),
    (r"(?<!G)H200", "H200", 4800.0),  # not the GH200 superchip (4000 or 4900 GB/s by memory)
    (r"A100-SXM4-80GB", "A100 80GB SXM", 2039.0),
    (r"A100-(SXM4|PCIE)-40GB", "A100 40GB", 1555.0),
    (r"L40S", "L40S", 864.0),
    (r"RTX 4090(?! Laptop)", "RTX 4090", 1008.0),
    (r"^(NVIDIA )?(Jetson )?(AGX )?Orin$", "Jetson AGX Orin", 204.8),
)
#: Size of the copy that measures an unknown device's bandwidth: far above any L2 cache.
COPY_BYTES = 512 * 2**20


def known_bandwidth(device_name: str) -> Optional[tuple[str, float]]:
    """(GPU, GB/s) from KNOWN_GPU_BANDWIDTH_GBS for a torch.cuda.get_device_name() string; None if unknown."""
    for pattern, gpu, gbs in KNOWN_GPU_BANDWIDTH_GBS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return gpu, gbs
    return None


def time_ms(fn: Callable[[], Any], device: str, frames: int, warmup: int) -> list[float]:
    """``warmup`` untimed then ``frames`` timed calls of fn -> ms per call. On CUDA each call is timed with a
    pair of events around it and waited for, so a time covers the GPU work as well as the launches."""
    for _ in range(warmup):
        fn()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize(device)
    out = []
    for _ in range(frames):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure_copy_bandwidth(device: str, nbytes: int = COPY_BYTES) -> float:
    """GB/s of a device-to-device copy of ``nbytes`` (read + write counted), the median of 10 copies."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = statistics.median(time_ms(lambda: dst.copy_(src), device, frames=10, warmup=2))
    return 2 * nbytes / (ms * 1e-3) / 1e9


def resolve_bandwidth(device: str, override_gbs: Optional[float]) -> tuple[float, str]:
    """(GB/s, where it comes from): ``override_gbs``, the table of known GPUs, or a measured copy."""
    if override_gbs is not None:
        if override_gbs <= 0:
            raise ValueError(f"--bandwidth-gbs must be > 0, got {override_gbs}")
        return float(override_gbs), "--bandwidth-gbs"
    if device.startswith("cuda"):
        known = known_bandwidth(torch.cuda.get_device_name(device))
        if known is not None:
            return known[1], f"datasheet peak of the {known[0]} (table of known GPUs)"
    return measure_copy_bandwidth(device), (
        f"measured: a {COPY_BYTES // 2**20} MiB copy on {device}, a device not in the table of known GPUs (a copy "
        "reaches less than the datasheet peak, so this bound is nearer what a forward can reach)")


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_model(model: str, device: str, dtype: torch.dtype, seed: int = 0) -> PixelVLA:
    """A preset with random weights (seed), created on ``device`` in ``dtype`` (the initialisation runs there),
    or a checkpoint directory loaded there in ``dtype``; in eval mode."""
    if model in PRESETS and not Path(model).exists():
        torch.manual_seed(seed)
        with torch.device(device), default_dtype(dtype):
            return PixelVLA(PixelVLAConfig.from_preset(model)).eval()
    if not (Path(model) / "config.json").is_file():
        raise ValueError(f"--forward needs a preset {sorted(PRESETS)} or a checkpoint directory (config.json + "
                         f"safetensors), got {model!r}")
    return PixelVLA.from_pretrained(model, map_location=device, dtype=dtype)


def forward_inputs(config: PixelVLAConfig, device: str, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """Batch 1: one frame, a TEXT_TOKENS-token instruction, one point prompt inside its target mask; float
    inputs in ``dtype`` on ``device``, as the torch runtime passes them."""
    inputs = example_inputs(config, batch_size=1, text_len=TEXT_TOKENS, seed=seed)
    s = config.image_size  # example_inputs' target mask: rows s/4..s/2, columns s/3..2s/3
    inputs.update(batch_prompts([[Point(s / 2, 3 * s / 8)]], (s, s), config))
    return {k: t.to(device, dtype) if t.is_floating_point() else t.to(device) for k, t in inputs.items()}


def peak_memory(device: str, fn: Callable[[], Any]) -> tuple[Any, Optional[int]]:
    """(fn(), the peak bytes torch allocated on the CUDA device while it ran; None on the CPU)."""
    if not device.startswith("cuda"):
        return fn(), None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    torch.cuda.synchronize(device)
    return result, int(torch.cuda.max_memory_allocated(device))


def time_cuda_graph(model: PixelVLA, inputs: dict[str, torch.Tensor], device: str, frames: int,
                    warmup: int) -> tuple[list[float], torch.Tensor]:
    """Capture the forward in a CUDA graph and time its replays -> (ms per call, the graph's actions)."""
    static = {k: t.clone() for k, t in inputs.items()}  # the graph's input buffers
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up off the capture stream (lazy inits, cuBLAS workspaces, autotuning)
        for _ in range(3):
            model(**static)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        actions = model(**static).actions

    def replay() -> None:  # a new frame: its inputs copied into the static buffers, then the graph
        for name, t in inputs.items():
            static[name].copy_(t)
        graph.replay()

    return time_ms(replay, device, frames, warmup), actions


def forward_report(model: str, device: str = "cpu", dtype: str = "bfloat16", frames: int = 50, warmup: int = 5,
                   seed: int = 0, bandwidth_gbs: Optional[float] = None) -> dict[str, Any]:
    """Build, time eager and CUDA-graph forwards, and return the report (module doc) as a JSON-ready dict."""
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(TORCH_DTYPES)}, got {dtype!r}")
    device = select_device(device)
    cuda = device.startswith("cuda")
    torch_dtype = TORCH_DTYPES[dtype]
    bandwidth, bandwidth_source = resolve_bandwidth(device, bandwidth_gbs)

    t0 = time.perf_counter()
    net, build_peak = peak_memory(device, lambda: build_model(model, device, torch_dtype, seed))
    build_s = time.perf_counter() - t0
    resident = int(torch.cuda.memory_allocated(device)) if cuda else None
    config = net.config
    inputs = forward_inputs(config, device, torch_dtype, seed)
    weight_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    lower_bound_ms = weight_bytes / (bandwidth * 1e9) * 1e3

    def timed(ms: list[float], peak: Optional[int]) -> dict[str, Any]:
        latency = percentiles(ms)
        return {"available": True, "latency_ms": latency, "p50_over_lower_bound": latency["p50"] / lower_bound_ms,
                "peak_memory_bytes": peak}

    with torch.inference_mode():
        eager = timed(*peak_memory(device, lambda: time_ms(lambda: net(**inputs), device, frames, warmup)))
        if not cuda:
            graph = {"available": False, "reason": f"CUDA graphs need a CUDA device, not {device!r}"}
        else:
            try:
                (graph_ms, graph_actions), graph_peak = peak_memory(
                    device, lambda: time_cuda_graph(net, inputs, device, frames, warmup))
                graph = timed(graph_ms, graph_peak)
                eager_actions = net(**inputs).actions
                graph["max_abs_diff_vs_eager"] = float((graph_actions.float() - eager_actions.float()).abs().max())
            except RuntimeError as e:  # a graph that fails still leaves the eager numbers to report
                graph = {"available": False, "reason": f"CUDA graph failed: {e}"}

    return {
        "mode": "forward", "model": model, "preset": config.preset, "device": device,
        "device_name": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "dtype": str(torch_dtype).removeprefix("torch."),
        "inputs": {"batch": 1, "image": [config.image_size, config.image_size], "text_tokens": TEXT_TOKENS,
                   "prompts": 1, "target_mask": True, "llm_sequence": config.prefix_tokens + TEXT_TOKENS},
        "frames": frames, "warmup": warmup, "build_s": build_s,
        "parameters": sum(p.numel() for p in net.parameters()), "weight_bytes": weight_bytes,
        "build_peak_memory_bytes": build_peak,
        "memory_after_build_bytes": resident,
        "bandwidth_gbs": bandwidth, "bandwidth_source": bandwidth_source,
        "weight_read_lower_bound_ms": lower_bound_ms,
        "eager": eager, "cuda_graph": graph,
        "speedup_graph_over_eager": (eager["latency_ms"]["p50"] / graph["latency_ms"]["p50"]
                                     if graph["available"] else None),
    }
