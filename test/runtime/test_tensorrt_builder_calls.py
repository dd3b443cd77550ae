"""The engine builder's calls, recorded by a stand-in for the TensorRT 10 Python module.

This machine cannot install TensorRT, so this checks our side of the contract only: which TensorRT 10
names build_engine calls and with what (precision flag, workspace limit, the token-length profile from
the manifest, timing cache read and written). The real build runs in test_tensorrt.py where tensorrt imports.
"""
from __future__ import annotations

import sys
import types

import pytest

from pixelvla_model.runtime import read_manifest
from pixelvla_model.runtime.tensorrt_engine import build_engine


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []


def fake_tensorrt(rec: Recorder, parse_ok: bool = True) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.99.0-stand-in"

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
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", BF16="BF16")
    return trt


@pytest.fixture
def rec(monkeypatch):
    r = Recorder()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(r))
    return r


@pytest.mark.parametrize("precision,flags", [("fp16", [("set_flag", "FP16")]), ("bf16", [("set_flag", "BF16")]),
                                             ("fp32", [])])
def test_build_engine_calls(tiny_bundle, tmp_path, rec, precision, flags):
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"old-cache")
    engine = build_engine(tiny_bundle / "model.onnx", read_manifest(tiny_bundle), precision=precision,
                          workspace_bytes=2 << 30, timing_cache=cache)
    assert engine == b"serialized-engine"
    calls = rec.calls
    assert ("parse_from_file", str(tiny_bundle / "model.onnx")) in calls
    assert ("set_memory_pool_limit", "WORKSPACE", 2 << 30) in calls
    assert [c for c in calls if c[0] == "set_flag"] == flags
    assert [c for c in calls if c[0] == "set_shape"] == [
        ("set_shape", "input_ids", (1, 2), (1, 64), (1, 256)),
        ("set_shape", "attention_mask", (1, 2), (1, 64), (1, 256)),
    ]
    assert ("create_timing_cache", b"old-cache") in calls and ("set_timing_cache", False) in calls
    assert cache.read_bytes() == b"timing-cache-v2"  # written back for the next build


def test_parser_errors_are_reported(tiny_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(Recorder(), parse_ok=False))
    from pixelvla_model.runtime import BundleError

    with pytest.raises(BundleError, match=r"model.onnx: TensorRT's ONNX parser rejected it: In node 12"):
        build_engine(tiny_bundle / "model.onnx", read_manifest(tiny_bundle))
