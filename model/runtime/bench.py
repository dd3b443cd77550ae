"""pixelvla-bench: latency of the network through each backend, printed as JSON.

    pixelvla-bench --model small --backend all --frames 50      # preset with random weights
    pixelvla-bench --model /models/ckpt --backend torch --device cuda --dtype bfloat16
    pixelvla-bench --model /models/bundle --backend tensorrt

One fixed frame (a 480x640 RGB image, an instruction, a point prompt and a target mask) goes through
PixelVLAProcessor once; then ``--warmup`` untimed and ``--frames`` timed ``runtime.infer`` calls.
Reported per backend: latency p50 / p90 / p99 / mean / min / max in ms, throughput in frames/s (batch 1,
sequential), and the processor's own time. A preset or checkpoint is exported to a temporary bundle for
the onnxruntime backend; a bundle has no torch weights, so torch needs a preset or a checkpoint.

    pixelvla-bench --forward --model prismatic-7b --device cuda --dtype bfloat16

``--forward`` times the torch network's forward alone, eager and as a CUDA graph, beside the weight-read
lower bound and with the peak GPU memory (forward_bench.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..configuration import PRESETS, PixelVLAConfig
from ..export import export_bundle
from ..modeling import EXAMPLE_CLICK_MAP
from ..prompts import Point
from .bundle import MANIFEST_FILE
from .factory import BACKENDS, tensorrt_available
from .policy import PixelVLAPolicy, load_policy
from .timing import percentiles

INSTRUCTION = "pick up the red cube and put it on the plate"


def time_calls(fn, frames: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(frames):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def benchmark_frame(processor) -> tuple[dict, float]:
    """The fixed test frame through the processor -> (batch, processor latency ms). A model that reads the
    robot state gets a normalised state of zeros (the middle of the statistics' range); one that reads the
    prompts from the gripper, the example top-down view (modeling.EXAMPLE_CLICK_MAP)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    mask = np.zeros((480, 640), bool)
    mask[200:300, 250:400] = True
    state = [np.zeros(processor.config.proprio_dim, np.float32)] if processor.config.proprio_dim else None
    maps = [EXAMPLE_CLICK_MAP] if processor.config.prompt_offsets else None

    def frame() -> dict:
        return processor([image], [INSTRUCTION], [[Point(320.0, 240.0)]], [mask], proprio=state, click_to_tcp=maps)

    ms = time_calls(frame, 5, 1)
    return frame(), float(np.median(ms))


def run_backend(runtime, batch: dict, frames: int, warmup: int) -> dict[str, Any]:
    lat = time_calls(lambda: runtime.infer(batch), frames, warmup)
    d = runtime.describe()
    info = {k: d[k] for k in ("backend", "device", "dtype", "model_id") if k in d}
    for k in ("providers", "threads", "device_name", "tensorrt"):
        if k in d:
            info[k] = d[k]
    p = percentiles(lat)
    info.update(frames=frames, warmup=warmup, latency_ms=p, throughput_fps=1e3 / p["mean"])
    return info


def machine() -> dict[str, Any]:
    d = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
         "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
         "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import onnxruntime

        d["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return d


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="pixelvla-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help=f"preset {sorted(PRESETS)}, checkpoint dir or bundle dir")
    p.add_argument("--backend", default="all", choices=BACKENDS + ("all",),
                   help="'all': torch and onnxruntime, plus tensorrt where it imports")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cpu; cuda for tensorrt)")
    p.add_argument("--dtype", default="float32", help="torch backend: float32 / bfloat16 / float16")
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: library default)")
    p.add_argument("--seed", type=int, default=0, help="a preset's random-weight seed")
    p.add_argument("--output", help="also write the JSON here")
    p.add_argument("--forward", action="store_true",
                   help="time the torch forward alone, eager and as a CUDA graph (forward_bench.py)")
    p.add_argument("--bandwidth-gbs", type=float, default=None,
                   help="--forward: memory bandwidth in GB/s for the weight-read lower bound (default: the "
                        "datasheet peak of a known GPU, else measured with a copy)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if a.frames < 1 or a.warmup < 0:
        p.error("--frames must be >= 1 and --warmup >= 0")
    if a.forward:
        if a.backend not in ("all", "torch"):
            p.error(f"--forward times the torch network, not {a.backend}: drop --backend or pass --backend torch")
        from .forward_bench import forward_report

        if a.threads:
            torch.set_num_threads(a.threads)
        emit(forward_report(a.model, device=a.device or "cpu", dtype=a.dtype, frames=a.frames, warmup=a.warmup,
                            seed=a.seed, bandwidth_gbs=a.bandwidth_gbs), a.output)
        return 0

    with tempfile.TemporaryDirectory(prefix="pixelvla-bench-") as tmp:
        source = Path(a.model)
        if a.model in PRESETS and not source.exists():  # a random-weight preset: save it as a checkpoint
            source = Path(tmp) / a.model
            PixelVLAPolicy.from_config(PixelVLAConfig.from_preset(a.model), seed=a.seed).save_pretrained(source)
        is_bundle = (source / MANIFEST_FILE).is_file()
        backends = [a.backend] if a.backend != "all" else (
            (["torch"] if not is_bundle else []) + ["onnxruntime"] + (["tensorrt"] if tensorrt_available() else []))

        bundle = source if is_bundle else None
        results, skipped = [], {}
        batch, pre_ms = None, None
        for backend in backends:
            path = source
            if backend != "torch" and not is_bundle:
                if bundle is None:
                    bundle = Path(tmp) / "bundle"
                    export_bundle(source, bundle, engine=backend == "tensorrt" or tensorrt_available(),
                                  parity_check=False)
                path = bundle
            if backend == "torch" and is_bundle:
                skipped[backend] = "a bundle holds no torch weights"
                continue
            if backend == "tensorrt" and not tensorrt_available():
                skipped[backend] = "tensorrt does not import on this machine"
                continue
            device = a.device or ("cuda" if backend == "tensorrt" else "cpu")
            policy = load_policy(path, backend=backend, device=device,
                                 dtype=a.dtype if backend == "torch" else None, threads=a.threads)
            if batch is None:
                batch, pre_ms = benchmark_frame(policy.processor)
            results.append(run_backend(policy.runtime, batch, a.frames, a.warmup))
            del policy

    report: dict[str, Any] = {"model": a.model, "machine": machine(), "text_len": int(batch["input_ids"].shape[1])
                              if batch is not None else None, "preprocess_ms": pre_ms, "results": results,
                              "skipped": skipped}
    by = {r["backend"]: r["latency_ms"]["p50"] for r in results}
    if "torch" in by and "onnxruntime" in by:
        report["p50_ratio_onnxruntime_over_torch"] = by["onnxruntime"] / by["torch"]
    emit(report, a.output)
    return 0


def emit(report: dict[str, Any], output: Optional[str]) -> None:
    """Print the report as JSON and, with ``output``, write it there too."""
    text = json.dumps(report, indent=2)
    print(text)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
