"""The same pre/post-processing around every runtime, and the benchmark CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pixelvla_model import PixelVLAConfig, PixelVLAPolicy
from pixelvla_model.prompts import Box, Point
from pixelvla_model.runtime import RuntimePolicy, load_policy
from pixelvla_model.runtime.bench import main as bench_main
from pixelvla_model.runtime.torch_runtime import TorchRuntime


def frame():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)


def test_policy_same_actions_on_every_backend(tiny_checkpoint, tiny_bundle):
    image = frame()
    mask = np.zeros((240, 320), bool)
    mask[50:120, 100:200] = True
    prompts = [Point(160.0, 100.0), Box(20.0, 30.0, 200.0, 180.0, label=0)]
    torch_policy, ort_policy = load_policy(tiny_checkpoint), load_policy(tiny_bundle)
    a = torch_policy.predict(image, "pick up the red cube", prompts=prompts, mask=mask)
    b = ort_policy.predict(image, "pick up the red cube", prompts=prompts, mask=mask)
    assert a.shape == b.shape == (5, 7)
    assert np.abs(a - b).max() < 1e-5
    with pytest.raises(ValueError, match="outside the 320x240 image"):
        ort_policy.predict(image, "pick up the red cube", prompts=[Point(400.0, 10.0)])


def test_an_in_memory_policy_runs_the_torch_runtime(tiny_checkpoint, monkeypatch):
    policy = PixelVLAPolicy.from_pretrained(tiny_checkpoint)
    assert isinstance(policy, RuntimePolicy) and isinstance(policy.runtime, TorchRuntime)
    assert policy.model is policy.runtime.model and policy.config is policy.model.config
    calls = []
    run = TorchRuntime._run

    def counting_run(self, batch):
        calls.append(batch)
        return run(self, batch)

    monkeypatch.setattr(TorchRuntime, "_run", counting_run)
    a = policy.predict(frame(), "pick up the red cube", prompts=[Point(160.0, 100.0)])
    b = load_policy(tiny_checkpoint).predict(frame(), "pick up the red cube", prompts=[Point(160.0, 100.0)])
    assert len(calls) == 2
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["checkpoint", "bundle"])
def test_loading_a_policy_reads_config_json_once(tiny_checkpoint, tiny_bundle, kind, monkeypatch):
    reads = []
    read = PixelVLAConfig.from_json_file.__func__

    def counting_read(cls, path):
        reads.append(path)
        return read(cls, path)

    monkeypatch.setattr(PixelVLAConfig, "from_json_file", classmethod(counting_read))
    load_policy(tiny_checkpoint if kind == "checkpoint" else tiny_bundle)
    assert len(reads) == 1, reads


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_bench_prints_latency_json(tiny_checkpoint, tiny_bundle, backend, capsys):
    model = tiny_checkpoint if backend == "torch" else tiny_bundle
    assert bench_main(["--model", str(model), "--backend", backend, "--frames", "4", "--warmup", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    (result,) = report["results"]
    assert result["backend"] == backend and result["frames"] == 4
    lat = result["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert result["throughput_fps"] > 0


def test_bench_runs_the_shipped_checkpoint_which_reads_the_robot_state(capsys):
    from pixelvla_model import DEFAULT_CHECKPOINT

    if not DEFAULT_CHECKPOINT.is_dir():
        pytest.skip("no shipped checkpoint in this checkout")
    assert PixelVLAConfig.from_json_file(DEFAULT_CHECKPOINT / "config.json").proprio_dim > 0
    assert bench_main(["--model", str(DEFAULT_CHECKPOINT), "--backend", "torch", "--frames", "2", "--warmup", "1",
                       "--threads", "1"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["backend"] == "torch" and result["frames"] == 2
