"""pixelvla-bench --forward: the forward timed eager and as a CUDA graph, beside the weight-read lower bound.

The CUDA-graph mode and the peak GPU memory run only where torch sees a GPU (the last test); everything up to
them runs here on the CPU."""
from __future__ import annotations

import json

import pytest
import torch

from pixelvla_model import PixelVLA, PixelVLAConfig
from pixelvla_model.configuration import PROMPT_TYPE_IDS
from pixelvla_model.runtime.bench import main as bench_main
from pixelvla_model.runtime.forward_bench import (
    TEXT_TOKENS, build_model, forward_inputs, forward_report, known_bandwidth, resolve_bandwidth)


@pytest.mark.parametrize("name, gpu, gbs", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 3350.0),
    ("NVIDIA H100 PCIe", "H100 PCIe", 2000.0),
    ("NVIDIA H200", "H200", 4800.0),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM", 2039.0),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB", 1555.0),
    ("NVIDIA A100-PCIE-40GB", "A100 40GB", 1555.0),
    ("NVIDIA L40S", "L40S", 864.0),
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 1008.0),
    ("Orin", "Jetson AGX Orin", 204.8),
])
def test_known_gpus_have_their_datasheet_bandwidth(name, gpu, gbs):
    assert known_bandwidth(name) == (gpu, gbs)


@pytest.mark.parametrize("name", ["NVIDIA A100 80GB PCIe", "NVIDIA H100 NVL", "NVIDIA GH200 480GB", "NVIDIA L40",
                                  "NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA GeForce RTX 3090", "Xavier"])
def test_gpus_of_another_bandwidth_are_not_taken_for_a_known_one(name):
    assert known_bandwidth(name) is None


def test_bandwidth_given_or_measured():
    assert resolve_bandwidth("cpu", 123.5) == (123.5, "--bandwidth-gbs")
    with pytest.raises(ValueError, match="--bandwidth-gbs must be > 0"):
        resolve_bandwidth("cpu", 0.0)
    gbs, source = resolve_bandwidth("cpu", None)
    assert source.startswith("measured") and 0.1 < gbs < 10_000


def test_the_model_is_built_in_the_target_dtype():
    model = build_model("tiny", "cpu", torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32  # restored after the build
    assert not model.training


def test_inputs_are_one_frame_a_20_token_instruction_and_one_point_in_its_mask():
    config = PixelVLAConfig.from_preset("tiny")
    inputs = forward_inputs(config, "cpu", torch.bfloat16)
    assert inputs["pixel_values"].shape == (1, 3, 224, 224) and inputs["pixel_values"].dtype == torch.bfloat16
    assert inputs["input_ids"].shape == (1, TEXT_TOKENS) and bool(inputs["attention_mask"].all())
    assert inputs["prompt_types"].tolist() == [[PROMPT_TYPE_IDS["point"]] + [0] * (config.max_prompts - 1)]
    x, y = (inputs["prompt_coords"][0, 0, 0] * 224).long().tolist()
    assert inputs["target_mask"][0, y, x] == 1  # the point lies on the target


@pytest.mark.parametrize("dtype, value_bytes", [("float32", 4), ("bfloat16", 2)])
def test_forward_report_on_the_cpu(dtype, value_bytes, tmp_path, capsys):
    out = tmp_path / "forward.json"
    assert bench_main(["--forward", "--model", "tiny", "--dtype", dtype, "--frames", "3", "--warmup", "1",
                       "--bandwidth-gbs", "50", "--output", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == report
    parameters = sum(p.numel() for p in PixelVLA(PixelVLAConfig.from_preset("tiny")).parameters())
    assert report["parameters"] == parameters
    assert report["weight_bytes"] == parameters * value_bytes
    assert report["bandwidth_gbs"] == 50.0 and report["bandwidth_source"] == "--bandwidth-gbs"
    assert report["weight_read_lower_bound_ms"] == pytest.approx(report["weight_bytes"] / 50e9 * 1e3)
    assert report["dtype"] == dtype and report["device"] == "cpu" and report["torch"] == torch.__version__
    assert report["inputs"]["llm_sequence"] == 1 + 256 + 1 + 4 + (TEXT_TOKENS - 1)
    eager = report["eager"]
    lat = eager["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"]
    assert eager["p50_over_lower_bound"] == pytest.approx(lat["p50"] / report["weight_read_lower_bound_ms"])
    assert eager["peak_memory_bytes"] is None and report["memory_after_build_bytes"] is None
    assert report["cuda_graph"] == {"available": False, "reason": "CUDA graphs need a CUDA device, not 'cpu'"}
    assert report["speedup_graph_over_eager"] is None


def test_a_checkpoint_directory_and_bad_arguments(tiny_checkpoint):
    report = forward_report(str(tiny_checkpoint), dtype="bfloat16", frames=1, warmup=0, bandwidth_gbs=10.0)
    assert report["weight_bytes"] == 2 * report["parameters"] > 0
    with pytest.raises(ValueError, match="a preset .* or a checkpoint directory"):
        forward_report("no-such-model", frames=1, warmup=0, bandwidth_gbs=10.0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        forward_report("tiny", dtype="int8", bandwidth_gbs=10.0)
    with pytest.raises(SystemExit):
        bench_main(["--forward", "--backend", "onnxruntime"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and GPU memory need a CUDA device")
def test_cuda_graph_on_the_gpu():
    report = forward_report("tiny", device="cuda", dtype="bfloat16", frames=5, warmup=2)
    graph = report["cuda_graph"]
    assert graph["available"], graph.get("reason")
    assert graph["max_abs_diff_vs_eager"] < 0.05  # the same kernels; bf16 rounding should cuBLAS pick others
    assert report["speedup_graph_over_eager"] > 0
    assert report["memory_after_build_bytes"] >= report["weight_bytes"]
    assert report["eager"]["peak_memory_bytes"] >= report["weight_bytes"]
    assert report["bandwidth_source"]
