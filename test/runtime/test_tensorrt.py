"""TensorRT: build an engine from the tiny bundle and run it. Runs where tensorrt imports (robots, GPU hosts)."""
from __future__ import annotations

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed on this machine (it ships only with "
                                             "robot / GPU host images); the ONNX graph, manifest and profile "
                                             "it consumes are tested in test_bundle.py")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("tensorrt imports but torch sees no CUDA device", allow_module_level=True)

from pixelvla_model.export import export_bundle  # noqa: E402
from pixelvla_model.runtime import BundleMismatchError, Expectation, load_runtime  # noqa: E402


@pytest.fixture(scope="module")
def engine_bundle(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("engine") / "bundle"
    export_bundle(tiny_bundle, out, engine=True, precision="fp32", workspace_bytes=1 << 30)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("text_len", [2, 40, 256])
def test_engine_matches_onnxruntime(engine_bundle, tiny_runtimes, text_len):
    from runtime_cases import make_batch

    rt = load_runtime(engine_bundle, backend="tensorrt")
    assert rt.describe()["tensorrt"] == trt.__version__
    batch = make_batch(tiny_runtimes[0].config, "all-types", text_len=text_len)
    assert np.abs(rt.infer(batch) - tiny_runtimes[1].infer(batch)).max() < 1e-3


@pytest.mark.slow
def test_engine_bundle_checks(engine_bundle):
    with pytest.raises(BundleMismatchError, match="chunk_size"):
        load_runtime(engine_bundle, backend="tensorrt", expect=Expectation(chunk_size=9))
