"""Devices, dtypes and GPU memory: what load_runtime decides before any weights load (no GPU needed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from pixelvla_model.runtime import load_runtime, read_manifest
from pixelvla_model.runtime.devices import (check_fits_gpu, parse_device, precision_of, safetensors_parameter_count,
                                            select_device, weight_bytes)
from pixelvla_model.runtime.factory import check_bundle_dtype

GIB = 2 ** 30


@pytest.mark.parametrize("device, parsed", [("cpu", ("cpu", None)), ("cuda", ("cuda", 0)), ("cuda:1", ("cuda", 1))])
def test_devices_are_cpu_cuda_or_cuda_n(device, parsed):
    assert parse_device(device) == parsed


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "cpu:0", "CUDA", ""])
def test_other_device_strings_are_refused(device):
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
        parse_device(device)


def test_dtype_names():
    assert [precision_of(d) for d in ("float32", "bfloat16", "float16", "bf16")] == ["fp32", "bf16", "fp16", "bf16"]
    with pytest.raises(ValueError, match="dtype must be one of"):
        precision_of("int8")


def test_a_7b_in_float32_does_not_fit_a_24_gb_gpu_and_in_bfloat16_does():
    params = 7_541_237_184  # OpenVLA-7B
    assert weight_bytes(params, "float32") == 4 * params and weight_bytes(params, "bfloat16") == 2 * params
    free = int(22.5 * GIB)  # an RTX 4090 with the desktop running
    with pytest.raises(RuntimeError, match=r"openvla-7b in float32 does not fit cuda:0: it needs about 33.7 GiB "
                                           r"\(28.1 GiB of weights \+ 20%\) but 22.5 GiB is free; use dtype bfloat16"):
        check_fits_gpu(weight_bytes(params, "float32"), free, "cuda:0", "openvla-7b in float32")
    check_fits_gpu(weight_bytes(params, "bfloat16"), free, "cuda:0", "openvla-7b in bfloat16")  # 16.9 GiB needed
    with pytest.raises(RuntimeError, match="needs about 16.9 GiB"):  # the headroom counts
        check_fits_gpu(weight_bytes(params, "bfloat16"), int(16 * GIB), "cuda:0", "openvla-7b in bfloat16")


def test_parameters_are_counted_from_the_safetensors_headers(tmp_path):
    save_file({"a": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float16)}, str(tmp_path / "1.safetensors"),
              metadata={"format": "pt"})
    save_file({"c": np.zeros((2, 2, 2), np.float32)}, str(tmp_path / "2.safetensors"))
    assert safetensors_parameter_count([tmp_path / "1.safetensors", tmp_path / "2.safetensors"]) == 12 + 5 + 8


def test_a_bundle_runs_in_the_precision_it_was_made_in(tiny_bundle):
    fp32_graph = read_manifest(tiny_bundle)
    check_bundle_dtype(tiny_bundle, fp32_graph, "onnxruntime", None)
    check_bundle_dtype(tiny_bundle, fp32_graph, "onnxruntime", "float32")
    with pytest.raises(ValueError, match=r"dtype 'bfloat16' does not apply to the onnxruntime backend: .* runs in "
                                         r"fp32, the precision its ONNX graph was exported in; leave dtype empty"):
        check_bundle_dtype(tiny_bundle, fp32_graph, "onnxruntime", "bfloat16")
    engine = dict(fp32_graph, precision="bf16", tensorrt={"precision": "bf16"})
    check_bundle_dtype(tiny_bundle, engine, "tensorrt", "bf16")
    with pytest.raises(ValueError, match=r"runs in bf16, the precision its TensorRT engine was built in"):
        check_bundle_dtype(tiny_bundle, engine, "tensorrt", "float32")


@pytest.fixture
def two_gpus(monkeypatch):
    """torch.cuda as on a host with two GPUs, each with `free` bytes free; records set_device."""
    selected = []
    gpu = {"free": 80 * GIB}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (gpu["free"], 80 * GIB))
    return selected, gpu


def test_the_cuda_device_is_selected_once_before_loading(two_gpus):
    selected, _ = two_gpus
    assert select_device("cuda:1") == "cuda:1" and selected == [1]
    assert select_device("cpu") == "cpu" and selected == [1]
    with pytest.raises(RuntimeError, match=r"torch sees 2 CUDA device\(s\): cuda:0..cuda:1"):
        select_device("cuda:2")


def test_no_cuda_is_a_clear_error_except_for_onnxruntime(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="device 'cuda' asked for, but torch sees no CUDA device"):
        select_device("cuda")
    assert select_device("cuda", torch_cuda_required=False) == "cuda"  # onnxruntime-gpu: its own check


def test_a_checkpoint_that_does_not_fit_the_gpu_is_refused_before_loading(tiny_checkpoint, two_gpus):
    selected, gpu = two_gpus
    gpu["free"] = 1000
    with pytest.raises(RuntimeError, match=rf"{tiny_checkpoint.name} in bfloat16 does not fit cuda:1: it needs about"):
        load_runtime(tiny_checkpoint, backend="torch", device="cuda:1", dtype="bfloat16")
    assert selected == [1]  # the device was selected first


def test_torch_dtype_is_checked_before_loading(tiny_checkpoint):
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_runtime(tiny_checkpoint, backend="torch", dtype="int8")
