"""Engine-only bundles (what a robot carries) and the checks made before TensorRT sees an engine, up to the
TensorRT call itself (test_tensorrt.py runs that where TensorRT is installed)."""
from __future__ import annotations

import json
import mmap
import shutil
import sys

import pytest

from pixelvla_model.runtime import BundleError, BundleMismatchError, load_runtime, read_manifest, verify_bundle
from pixelvla_model.runtime.bundle import (open_engine, sha256_file, strip_to_engine, verify_engine_bundle,
                                           write_manifest)
from pixelvla_model.runtime.bundle_cli import main as bundle_main
from pixelvla_model.runtime.factory import default_backend, tensorrt_available

BUILT_WITH = {"version": "10.8.0.43", "precision": "bf16", "workspace_bytes": 4 << 30,
              "device": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7"}
ENGINE = bytes(range(256)) * 64  # stands in for a serialized engine: TensorRT is not called here


@pytest.fixture
def full_bundle(tiny_bundle, tmp_path):
    """The tiny bundle with an engine added as pixelvla-export --engine records it."""
    dst = tmp_path / "full"
    shutil.copytree(tiny_bundle, dst)
    (dst / "model.engine").write_bytes(ENGINE)
    manifest = read_manifest(dst)
    write_manifest(dst, dict(manifest, engine="model.engine", tensorrt=BUILT_WITH))
    return dst


@pytest.fixture
def engine_only(full_bundle):
    strip_to_engine(full_bundle)
    return full_bundle


def test_strip_leaves_what_a_robot_runs(full_bundle):
    before = read_manifest(full_bundle)
    manifest = strip_to_engine(full_bundle)
    assert not (full_bundle / "model.onnx").exists()
    assert manifest["onnx"] is None and manifest["engine"] == "model.engine" and "model.onnx" not in manifest["files"]
    assert manifest["files"] == {k: v for k, v in before["files"].items() if k != "model.onnx"}
    assert {"config.json", "norm_stats.json", "tokenizer.json", "model.engine"} <= set(manifest["files"])
    verify_bundle(full_bundle)  # every remaining file, sha256 included
    assert verify_engine_bundle(full_bundle, "10.8.0.43", "8.7")["weights"] == before["weights"]


def test_strip_to_a_copy_keeps_the_full_bundle(full_bundle, tmp_path, capsys):
    out = tmp_path / "robot"
    assert bundle_main(["strip", str(full_bundle), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["onnx"] is None
    assert (full_bundle / "model.onnx").is_file() and read_manifest(full_bundle)["onnx"] == "model.onnx"
    assert not (out / "model.onnx").exists() and (out / "model.engine").read_bytes() == ENGINE
    assert bundle_main(["verify", str(out)]) == 0


def test_a_bundle_without_an_engine_is_not_stripped(tiny_bundle, tmp_path, capsys):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    assert bundle_main(["strip", str(copy)]) == 2
    assert "has no TensorRT engine: build one first" in capsys.readouterr().err
    assert (copy / "model.onnx").is_file()


def test_another_tensorrt_version_is_refused_with_how_to_rebuild(engine_only):
    with pytest.raises(BundleMismatchError, match=rf"model.engine: was built with TensorRT 10.8.0.43 but TensorRT "
                                                  rf"10.13.0.35 is installed; rebuild the engine on this robot .*"
                                                  rf"pixelvla-export <full bundle> {engine_only} --engine"):
        verify_engine_bundle(engine_only, "10.13.0.35", "8.7")


def test_another_gpu_is_refused_with_how_to_rebuild(engine_only):
    with pytest.raises(BundleMismatchError, match=rf"model.engine: was built for a GPU of compute capability 8.7 "
                                                  rf"\(NVIDIA Jetson AGX Orin\) but this GPU's is 8.9; rebuild .*"
                                                  rf"pixelvla-export <full bundle> {engine_only} --engine"):
        verify_engine_bundle(engine_only, "10.8.0.43", "8.9")


def test_a_corrupt_engine_is_refused_by_its_hash(engine_only):
    data = bytearray(ENGINE)
    data[1000:1100] = b"\x00" * 100  # same size: only the hash can tell
    (engine_only / "model.engine").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.engine: sha256 differs from manifest.json: corrupt"):
        verify_engine_bundle(engine_only, "10.8.0.43", "8.7")


def test_only_the_engine_is_hashed_unless_asked(engine_only):
    path = engine_only / "tokenizer.json"
    path.write_bytes(b" " * path.stat().st_size)  # same size, other bytes
    verify_engine_bundle(engine_only, "10.8.0.43", "8.7")  # sizes + the engine's sha256: not seen
    with pytest.raises(BundleError, match=r"tokenizer.json: sha256 differs"):
        verify_engine_bundle(engine_only, "10.8.0.43", "8.7", verify_hashes=True)


def test_an_engine_only_bundle_runs_on_tensorrt_only(engine_only):
    with pytest.raises(BundleError, match=r"no ONNX graph .*engine-only bundle runs on the tensorrt backend only"):
        load_runtime(engine_only, backend="onnxruntime")
    with pytest.raises(ValueError, match=r"the tensorrt backend runs on a CUDA GPU: device must be 'cuda' or "
                                         r"'cuda:N', got 'cpu'"):
        load_runtime(engine_only, backend="tensorrt", device="cpu")
    with pytest.raises(ValueError, match=r"dtype 'float16' does not apply to the tensorrt backend: .* runs in bf16, "
                                         r"the precision its TensorRT engine was built in"):
        load_runtime(engine_only, device="cuda", dtype="float16")


def test_choosing_the_backend_finds_tensorrt_without_importing_it(full_bundle, tmp_path, monkeypatch):
    """An installed tensorrt package picks the engine of a full bundle; it is only imported to run it."""
    package = tmp_path / "installed" / "tensorrt"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('choosing a backend must not import tensorrt')\n")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    assert default_backend(full_bundle) == "tensorrt"
    assert "tensorrt" not in sys.modules


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed: test_tensorrt.py loads real engines")
def test_an_engine_only_bundle_reaches_tensorrt(engine_only):
    """Every check passes (backend chosen for the engine, dtype matching it): what stops it is TensorRT itself."""
    with pytest.raises(RuntimeError, match="TensorRT is not installed on this machine"):
        load_runtime(engine_only, dtype="bfloat16")


def test_the_engine_reaches_tensorrt_as_a_read_only_map(engine_only):
    with open_engine(engine_only / "model.engine") as blob:
        assert isinstance(blob, mmap.mmap) and len(blob) == len(ENGINE)
        view = memoryview(blob)  # what deserialize_cuda_engine takes: a buffer, no bytes copy
        assert view.readonly and view[:256].tobytes() == ENGINE[:256]
        view.release()
    assert sha256_file(engine_only / "model.engine") == read_manifest(engine_only)["files"]["model.engine"]["sha256"]
