"""The engine builder's calls on TensorRT 10 and 11, recorded by stand-ins for the two Python modules.

This machine cannot install TensorRT, so this checks our side of the contract only: which names the
production build_engine calls on each API generation and with what (strongly typed network, no precision
flag, workspace limit, the token-length profile from the manifest, timing cache read and written). The
stand-ins hold only what the documented API of each generation holds: TensorRT 11's has no
BuilderFlag.FP16 / BF16 (removed in 11.0), and the STRONGLY_TYPED enum value differs (10: EXPLICIT_BATCH is
member 0, STRONGLY_TYPED 1; 11: STRONGLY_TYPED is 0). The real build runs in test_tensorrt.py where tensorrt
imports.
"""
from __future__ import annotations

import sys
import types

import pytest

from pixelvla_model.runtime import BundleError, read_manifest
from pixelvla_model.runtime.tensorrt_engine import TENSORRT_GENERATIONS, build_engine, tensorrt_generation

#: (tensorrt.__version__, NetworkDefinitionCreationFlag members and values, BuilderFlag members) per generation
API_GENERATIONS = {
    "10": ("10.13.0.35", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1},
           ("FP16", "BF16", "INT8", "TF32", "OBEY_PRECISION_CONSTRAINTS")),
    "11": ("11.0.0.12", {"STRONGLY_TYPED": 0}, ("TF32",)),
}


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []


def fake_tensorrt(rec: Recorder, generation: str, parse_ok: bool = True) -> types.ModuleType:
    version, network_flags, builder_flags = API_GENERATIONS[generation]
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        WARNING = "WARNING"

        def __init__(self, level):
            rec.calls.append(("Logger", level))

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            rec.calls.append(("set_shape", name, lo, opt, hi))

    class Cache:
        def __init__(self, data=b""):
            self.data = data

        def serialize(self):
            return b"timing-cache-v2"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            rec.calls.append(("set_memory_pool_limit", pool, size))

        def set_flag(self, flag):
            rec.calls.append(("set_flag", flag))

        def add_optimization_profile(self, profile):
            rec.calls.append(("add_optimization_profile",))

        def create_timing_cache(self, data):
            rec.calls.append(("create_timing_cache", bytes(data)))
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            rec.calls.append(("set_timing_cache", ignore_mismatch))

        def get_timing_cache(self):
            return Cache()

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            rec.calls.append(("create_network", flags))
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            rec.calls.append(("build_serialized_network",))
            return b"serialized-engine"

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            rec.calls.append(("parse_from_file", path))
            return parse_ok

        def get_error(self, i):
            return "In node 12 (Gather): unsupported"

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**network_flags)
    trt.BuilderFlag = types.SimpleNamespace(**{name: name for name in builder_flags})
    return trt


def use_fake(monkeypatch, generation: str, parse_ok: bool = True) -> Recorder:
    rec = Recorder()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec, generation, parse_ok))
    return rec


@pytest.mark.parametrize("generation", sorted(API_GENERATIONS))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_build_engine_calls(tiny_bundle, tmp_path, monkeypatch, generation, precision):
    rec = use_fake(monkeypatch, generation)
    manifest = dict(read_manifest(tiny_bundle), precision=precision)  # as a bundle exported in `precision`
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"old-cache")
    engine = build_engine(tiny_bundle / "model.onnx", manifest, workspace_bytes=2 << 30, timing_cache=cache)
    assert engine == b"serialized-engine"
    calls = rec.calls
    strongly_typed = 1 << API_GENERATIONS[generation][1]["STRONGLY_TYPED"]
    assert [c for c in calls if c[0] == "create_network"] == [("create_network", strongly_typed)]
    assert ("parse_from_file", str(tiny_bundle / "model.onnx")) in calls
    assert [c for c in calls if c[0] == "set_flag"] == []  # the graph's types decide: no precision flag
    assert ("set_memory_pool_limit", "WORKSPACE", 2 << 30) in calls
    assert [c for c in calls if c[0] == "set_shape"] == [
        ("set_shape", "input_ids", (1, 2), (1, 64), (1, 256)),
        ("set_shape", "attention_mask", (1, 2), (1, 64), (1, 256)),
    ]
    assert calls.index(("add_optimization_profile",)) < calls.index(("build_serialized_network",))
    assert ("create_timing_cache", b"old-cache") in calls and ("set_timing_cache", False) in calls
    assert cache.read_bytes() == b"timing-cache-v2"  # written back for the next build


def test_an_engine_runs_in_the_graphs_precision(tiny_bundle, monkeypatch):
    rec = use_fake(monkeypatch, "11")
    manifest = read_manifest(tiny_bundle)
    assert manifest["precision"] == "fp32"
    build_engine(tiny_bundle / "model.onnx", manifest, precision="fp32")  # the graph's own: fine
    with pytest.raises(ValueError, match="is a fp32 graph.*--precision bf16"):
        build_engine(tiny_bundle / "model.onnx", manifest, precision="bf16")
    old = {k: v for k, v in manifest.items() if k != "precision"}  # bundles from before the field: fp32
    build_engine(tiny_bundle / "model.onnx", old, precision="fp32")
    assert len([c for c in rec.calls if c[0] == "build_serialized_network"]) == 2


def test_versions_are_dispatched_by_major():
    assert tensorrt_generation("10.0.1") is TENSORRT_GENERATIONS[10]
    assert tensorrt_generation("10.13.0.35") is TENSORRT_GENERATIONS[10]
    assert tensorrt_generation("11.0.0.12") is TENSORRT_GENERATIONS[11]
    for version in ("8.6.1", "9.3.0", "12.0.0", "1.0", "nightly"):
        with pytest.raises(RuntimeError, match=f"TensorRT {version} is not supported.*10.x or 11.x"):
            tensorrt_generation(version)


def test_unsupported_tensorrt_builds_nothing(tiny_bundle, monkeypatch):
    rec = use_fake(monkeypatch, "10")
    sys.modules["tensorrt"].__version__ = "8.6.1"
    with pytest.raises(RuntimeError, match="not supported"):
        build_engine(tiny_bundle / "model.onnx", read_manifest(tiny_bundle))
    assert not [c for c in rec.calls if c[0] == "create_network"]


@pytest.mark.parametrize("generation", sorted(API_GENERATIONS))
def test_parser_errors_are_reported(tiny_bundle, monkeypatch, generation):
    use_fake(monkeypatch, generation, parse_ok=False)
    with pytest.raises(BundleError, match=r"model.onnx: TensorRT's ONNX parser rejected it: In node 12"):
        build_engine(tiny_bundle / "model.onnx", read_manifest(tiny_bundle))
