"""onnxruntime vs torch on the same weights, per prompt type, plus a polygraphy check of the ONNX graph."""
from __future__ import annotations

import numpy as np
import pytest

from pixelvla_model.modeling import INPUT_NAMES
from runtime_cases import PARITY_ATOL, PROMPT_CASES, make_batch


def max_error(runtimes, batch) -> float:
    torch_rt, ort_rt = runtimes
    want, got = torch_rt.infer(batch), ort_rt.infer(batch)
    assert got.shape == want.shape == (1, torch_rt.config.chunk_size, torch_rt.config.action_dim)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    return float(np.abs(got - want).max())


@pytest.mark.parametrize("case", list(PROMPT_CASES))
def test_parity_tiny(tiny_runtimes, case, record_property):
    err = max_error(tiny_runtimes, make_batch(tiny_runtimes[0].config, case))
    record_property("max_abs_error", err)
    print(f"tiny {case}: max abs error {err:.3e}")
    assert err <= PARITY_ATOL["tiny"]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(PROMPT_CASES))
def test_parity_small(small_runtimes, case, record_property):
    err = max_error(small_runtimes, make_batch(small_runtimes[0].config, case))
    record_property("max_abs_error", err)
    print(f"small {case}: max abs error {err:.3e}")
    assert err <= PARITY_ATOL["small"]


@pytest.mark.parametrize("text_len", [2, 17, 64, 256])
def test_parity_across_token_lengths(tiny_runtimes, text_len):
    """The token length is the graph's one dynamic dim (the TensorRT profile spans min..max)."""
    batch = make_batch(tiny_runtimes[0].config, "point", text_len=text_len, seed=3)
    assert max_error(tiny_runtimes, batch) <= PARITY_ATOL["tiny"]


def test_prompts_change_the_actions(tiny_runtimes):
    """Parity would be vacuous if the prompt inputs were ignored by the graph."""
    _, ort_rt = tiny_runtimes
    cfg = tiny_runtimes[0].config
    outs = {case: ort_rt.infer(make_batch(cfg, case)) for case in ("none", "point", "box", "mask")}
    for a in ("point", "box", "mask"):
        assert np.abs(outs[a] - outs["none"]).max() > 1e-6, a


def test_polygraphy_onnxrt_matches_torch(tiny_bundle, tiny_runtimes):
    """polygraphy's onnxruntime runner on the bundle's model.onnx, compared with torch outputs by its Comparator."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, RunResults, SimpleCompareFunc

    torch_rt, _ = tiny_runtimes
    feeds = [{k: v.numpy() for k, v in make_batch(torch_rt.config, case, seed=i).items()}
             for i, case in enumerate(("none", "point", "line", "box", "mask", "all-types"))]
    runner = OnnxrtRunner(SessionFromOnnx(str(tiny_bundle / "model.onnx"), providers=["cpu"]), name="onnxrt")
    results = Comparator.run([runner], data_loader=feeds)
    ort_outputs = [dict(it) for it in results["onnxrt"]]
    with runner:
        meta = runner.get_input_metadata(use_numpy_dtypes=False)
        assert list(meta.keys()) == list(INPUT_NAMES)
        assert tuple(meta["input_ids"].shape) == (1, "text_len")
    torch_results = RunResults()
    torch_results.add([{"actions": torch_rt.infer(f)} for f in feeds], runner_name="torch")
    both = RunResults()
    both.append(("onnxrt", results["onnxrt"]))
    both.append(("torch", torch_results["torch"]))
    accuracy = Comparator.compare_accuracy(both, compare_func=SimpleCompareFunc(atol=PARITY_ATOL["tiny"], rtol=0))
    assert bool(accuracy), "polygraphy reports onnxruntime and torch outputs differ"
    assert all(o["actions"].shape == (1, 5, 7) for o in ort_outputs)
