"""Bundles: what the exporter writes (everything TensorRT consumes), and every way a robot refuses one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from pixelvla_model.configuration import PixelVLAConfig
from pixelvla_model.export import ONNX_OPSET, export_bundle
from pixelvla_model.modeling import INPUT_NAMES
from pixelvla_model.runtime import (BundleError, BundleMismatchError, Expectation, RuntimeInputError, io_spec,
                                    load_runtime, read_manifest, verify_bundle, weights_sha256)
from pixelvla_model.runtime.bundle import REQUIRED_FIELDS, atomic_directory, check_tensorrt_version, sha256_file
from pixelvla_model.runtime.tensorrt_engine import TensorRTRuntime, profile_shapes

ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64"}


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    """A private copy of the tiny bundle to damage."""
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def edit_manifest(bundle: Path, **changes) -> None:
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    m.update(changes)
    path.write_text(json.dumps(m))


# ---------------------------------------------------------------------------------------------------
# what the exporter writes
# ---------------------------------------------------------------------------------------------------
def test_manifest_describes_the_bundle(tiny_bundle, tiny_checkpoint):
    m = verify_bundle(tiny_bundle)
    config = PixelVLAConfig.from_dict(m["config"])
    assert set(REQUIRED_FIELDS) <= set(m)
    assert m["model_id"] == "tiny-test"
    assert (m["chunk_size"], m["action_dim"], m["image_size"], m["batch_size"]) == (5, 7, 224, 1)
    assert m["text_len"] == {"min": 2, "opt": 64, "max": 256}
    assert m["opset"] == ONNX_OPSET and m["onnx"] == "model.onnx" and m["engine"] is None
    assert m["weights"]["sha256"] == weights_sha256(tiny_checkpoint)[0]
    inputs, outputs = io_spec(config, 1)
    assert m["inputs"] == inputs and m["outputs"] == outputs
    assert [t["name"] for t in m["inputs"]] == list(INPUT_NAMES)
    for name in ("model.onnx", "config.json", "norm_stats.json", "tokenizer.json"):
        assert m["files"][name]["sha256"] == sha256_file(tiny_bundle / name)
    assert all(m["versions"][k] for k in ("torch", "onnx", "onnxruntime", "transformers", "pixelvla_ros"))
    assert m["export_check"]["max_abs_error_vs_torch"] < 1e-5


def test_onnx_graph_is_what_the_manifest_says(tiny_bundle):
    """The graph TensorRT's parser reads: input names, dtypes, shapes (one dynamic dim), opset, output."""
    m = read_manifest(tiny_bundle)
    model = onnx.load(str(tiny_bundle / "model.onnx"), load_external_data=False)
    onnx.checker.check_model(str(tiny_bundle / "model.onnx"))
    assert {o.domain: o.version for o in model.opset_import}[""] == ONNX_OPSET

    def spec(v):
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": ONNX_DTYPES[v.type.tensor_type.elem_type]}
    assert [spec(v) for v in model.graph.input] == m["inputs"]
    assert [spec(v) for v in model.graph.output] == m["outputs"]


def test_tensorrt_profile_spans_the_token_lengths(tiny_bundle):
    m = read_manifest(tiny_bundle)
    assert profile_shapes(m) == {
        "input_ids": ((1, 2), (1, 64), (1, 256)),
        "attention_mask": ((1, 2), (1, 64), (1, 256)),
    }


def test_runtime_rejects_token_lengths_outside_the_profile(tiny_runtimes):
    from runtime_cases import make_batch

    _, ort_rt = tiny_runtimes
    ok = make_batch(tiny_runtimes[0].config, "point", text_len=256)
    assert ort_rt.infer(ok).shape == (1, 5, 7)
    too_long = make_batch(tiny_runtimes[0].config, "point", text_len=257)
    with pytest.raises(RuntimeInputError, match="token length 257 is outside the 2..256"):
        ort_rt.infer(too_long)


def test_runtime_input_checks(tiny_runtimes):
    from runtime_cases import make_batch

    torch_rt, ort_rt = tiny_runtimes
    batch = make_batch(torch_rt.config, "box")
    numpy_batch = {k: v.numpy() for k, v in batch.items()}
    np.testing.assert_array_equal(ort_rt.infer(batch), ort_rt.infer(numpy_batch))
    with pytest.raises(RuntimeInputError, match=r"missing inputs \['prompt_masks'\]"):
        ort_rt.infer({k: v for k, v in batch.items() if k != "prompt_masks"})
    bad = dict(batch, pixel_values=batch["pixel_values"][:, :, :100])
    with pytest.raises(RuntimeInputError, match="'pixel_values' has shape"):
        ort_rt.infer(bad)
    with pytest.raises(RuntimeInputError, match="batch = 2"):  # torch: any batch, but one batch size
        torch_rt.infer(dict(batch, input_ids=batch["input_ids"].repeat(2, 1)))
    with pytest.raises(RuntimeInputError, match="must hold integers"):
        ort_rt.infer(dict(batch, input_ids=batch["input_ids"].float()))


def test_describe(tiny_runtimes):
    for rt in tiny_runtimes:
        d = rt.describe()
        assert {"backend", "device", "dtype", "model_id", "inputs", "outputs"} <= set(d)
        assert [t["name"] for t in d["inputs"]] == list(INPUT_NAMES)
    assert tiny_runtimes[1].describe()["providers"] == ["CPUExecutionProvider"]


def test_torch_half_precision_runs(tiny_checkpoint, tiny_runtimes):
    from runtime_cases import make_batch

    batch = make_batch(tiny_runtimes[0].config, "all-types")
    bf16 = load_runtime(tiny_checkpoint, backend="torch", dtype="bfloat16")
    assert bf16.describe()["dtype"] == "bfloat16"
    assert np.abs(bf16.infer(batch) - tiny_runtimes[0].infer(batch)).max() < 5e-2


# ---------------------------------------------------------------------------------------------------
# bad bundles
# ---------------------------------------------------------------------------------------------------
def test_missing_manifest(bundle):
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest.json: missing"):
        load_runtime(bundle)  # neither bundle nor checkpoint once the manifest is gone
    with pytest.raises(BundleError, match=r"manifest.json: missing: not a finished bundle"):
        verify_bundle(bundle)


def test_corrupt_manifest(bundle):
    (bundle / "manifest.json").write_text('{"format": "pixelvla-bundle", ')
    with pytest.raises(BundleError, match=r"manifest.json: not valid JSON"):
        load_runtime(bundle)


def test_manifest_missing_fields(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    del m["weights"], m["chunk_size"]
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"missing fields \['chunk_size', 'weights'\]"):
        load_runtime(bundle)


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json", "norm_stats.json"])
def test_missing_file(bundle, name):
    (bundle / name).unlink()
    with pytest.raises(BundleError, match=rf"{name}: missing from the bundle"):
        load_runtime(bundle, backend="onnxruntime")


def test_truncated_onnx(bundle):
    data = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"model.onnx: is \d+ bytes but manifest.json says \d+: truncated"):
        load_runtime(bundle, backend="onnxruntime")


def test_corrupt_onnx_same_size(bundle):
    path = bundle / "model.onnx"
    data = bytearray(path.read_bytes())
    data[100:4100] = b"\x00" * 4000
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.onnx: sha256 differs from manifest.json: corrupt"):
        load_runtime(bundle, backend="onnxruntime")
    # a graph that matches its manifest but is no graph: onnxruntime's own failure still becomes a clear
    # BundleError, never a crash
    path.write_bytes(b"this is not an onnx protobuf" * 10)
    edit_manifest(bundle, files=dict(read_manifest(bundle)["files"],
                                     **{"model.onnx": {"bytes": path.stat().st_size, "sha256": sha256_file(path)}}))
    with pytest.raises(BundleError, match=r"model.onnx: onnxruntime cannot load it"):
        load_runtime(bundle, backend="onnxruntime")


def test_truncated_engine(bundle):
    """An engine file is checked like any other before TensorRT ever sees it."""
    (bundle / "model.engine").write_bytes(b"\x01" * 1000)
    m = read_manifest(bundle)
    edit_manifest(bundle, engine="model.engine",
                  files=dict(m["files"], **{"model.engine": {"bytes": 4096, "sha256": "0" * 64}}),
                  tensorrt={"version": "10.0.0", "precision": "fp16"})
    with pytest.raises(BundleError, match=r"model.engine: is 1000 bytes but manifest.json says 4096: truncated"):
        TensorRTRuntime.load(bundle)


def test_bundle_without_engine_refused_by_tensorrt(bundle):
    with pytest.raises(BundleError, match=r"has no TensorRT engine"):
        TensorRTRuntime.load(bundle)


@pytest.mark.parametrize("field,value", [("chunk_size", 8), ("action_dim", 6), ("batch_size", 4), ("image_size", 256),
                                         ("model_id", "another-model")])
def test_expectation_mismatch(tiny_bundle, field, value):
    with pytest.raises(BundleMismatchError, match=rf"manifest.json: {field} is .* but {value!r} is expected"):
        load_runtime(tiny_bundle, expect=Expectation(**{field: value}))


def test_weights_hash_mismatch(tiny_bundle):
    with pytest.raises(BundleMismatchError, match=r"weights sha256 is [0-9a-f]{64} but 1234 is expected"):
        load_runtime(tiny_bundle, expect=Expectation(weights_sha256="1234"))


def test_input_shape_mismatch(tiny_bundle):
    config = PixelVLAConfig.from_preset("tiny", max_prompts=6)
    with pytest.raises(BundleMismatchError, match=r"input 'prompt_coords' is float32\[1, 4, 8, 2\] but "
                                                  r"float32\[1, 6, 8, 2\] is expected"):
        load_runtime(tiny_bundle, expect=Expectation(inputs=io_spec(config, 1)[0]))
    with pytest.raises(BundleMismatchError, match="accepts token lengths 2..256, 300 is expected"):
        load_runtime(tiny_bundle, expect=Expectation(text_len=300))


def test_matching_expectation_loads(tiny_bundle, tiny_checkpoint):
    config = PixelVLAConfig.from_preset("tiny")
    expect = Expectation(chunk_size=5, action_dim=7, image_size=224, batch_size=1, text_len=80,
                         weights_sha256=weights_sha256(tiny_checkpoint)[0], inputs=io_spec(config, 1)[0])
    assert load_runtime(tiny_bundle, expect=expect).backend == "onnxruntime"
    assert load_runtime(tiny_checkpoint, expect=expect).backend == "torch"
    with pytest.raises(BundleMismatchError, match=r"config.json: chunk_size is 5 but 8 is expected"):
        load_runtime(tiny_checkpoint, expect=Expectation(chunk_size=8))


def test_onnx_graph_differs_from_manifest(bundle):
    """Files mixed up between exports: the graph's real inputs win over what the manifest claims."""
    m = read_manifest(bundle)
    inputs = [dict(t, shape=[1, 3, 256, 256]) if t["name"] == "pixel_values" else t for t in m["inputs"]]
    edit_manifest(bundle, inputs=inputs)
    with pytest.raises(BundleMismatchError, match=r"model.onnx: input 'pixel_values' is float32\[1, 3, 224, 224\]"):
        load_runtime(bundle, backend="onnxruntime")


def test_tensorrt_version_mismatch(tiny_bundle):
    m = dict(read_manifest(tiny_bundle), engine="model.engine", tensorrt={"version": "10.3.0"})
    check_tensorrt_version(tiny_bundle, m, "10.3.0")
    with pytest.raises(BundleMismatchError, match=r"model.engine: was built with TensorRT 10.3.0 but TensorRT "
                                                  r"10.8.0 is installed"):
        check_tensorrt_version(tiny_bundle, m, "10.8.0")


def test_wrong_kind_of_directory(tiny_bundle, tiny_checkpoint, tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_runtime(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="neither an engine bundle"):
        load_runtime(tmp_path)
    with pytest.raises(BundleError, match="holds no torch weights"):
        load_runtime(tiny_bundle, backend="torch")
    with pytest.raises(BundleError, match="run `pixelvla-export"):
        load_runtime(tiny_checkpoint, backend="onnxruntime")


# ---------------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------------
def test_failed_export_keeps_the_good_bundle(bundle, tiny_checkpoint):
    before = {p.name: sha256_file(p) for p in bundle.iterdir()}
    with pytest.raises(ValueError, match="text lengths"):
        export_bundle(tiny_checkpoint, bundle, text_len=(10, 5, 3))  # fails after the temp dir exists
    assert {p.name: sha256_file(p) for p in bundle.iterdir()} == before
    assert [p.name for p in bundle.parent.iterdir()] == ["bundle"]  # no temp dir left behind
    verify_bundle(bundle)


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "b"
    with atomic_directory(target) as d:
        (d / "x").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as d:
            (d / "x").write_text("2")
            raise RuntimeError("build failed")
    assert (target / "x").read_text() == "1"
    with atomic_directory(target) as d:
        (d / "x").write_text("3")
    assert (target / "x").read_text() == "3" and sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_export_engine_without_tensorrt_is_a_clear_error(tiny_checkpoint, tmp_path, capsys):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here; the engine build itself is tested in test_tensorrt.py")
    except ImportError:
        pass
    from pixelvla_model.export import main

    assert main([str(tiny_checkpoint), str(tmp_path / "b"), "--engine"]) == 2
    assert "TensorRT is not installed on this machine" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
