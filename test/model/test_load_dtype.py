"""Loading a checkpoint in a target dtype: the model is built in that dtype, never as a float32 copy first.

Run as a script, this file loads a checkpoint in a fresh process and prints the peak resident memory the load
added (docs/benchmarks.md):  python test/model/test_load_dtype.py CHECKPOINT_DIR bfloat16
"""
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pixelvla_model import PixelVLA, PixelVLAConfig, example_inputs, load_model


def _floating_tensors(model):
    """name -> every floating-point parameter and buffer (persistent or not) of ``model``."""
    return {n: t for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_floating_point()}


def _actions(model, dtype):
    x = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in example_inputs(model.config).items()}
    with torch.no_grad():
        return model(**x).actions


@pytest.mark.parametrize("dtype, shard_bytes", [(torch.bfloat16, None), (torch.bfloat16, 300_000), (torch.float16, None)],
                         ids=["bf16", "bf16-sharded", "fp16"])
def test_float32_checkpoint_loads_as_the_model_cast_to_dtype(tiny_model, tmp_path, dtype, shard_bytes):
    """Every floating-point tensor ends in ``dtype`` and equals the saved one cast to it: the module keeps none
    in float32 (FP32_BUFFERS stay float32 only in to_reduced_precision's export graphs), as model.to(dtype)."""
    tiny_model.save_pretrained(tmp_path, **({} if shard_bytes is None else {"max_shard_size": shard_bytes}))
    loaded = load_model(tmp_path, dtype=dtype)
    cast = copy.deepcopy(tiny_model).to(dtype)
    expected, got = _floating_tensors(cast), _floating_tensors(loaded)
    assert got.keys() == expected.keys() and {t.dtype for t in got.values()} == {dtype}
    for name, t in expected.items():
        assert torch.equal(got[name], t), name
    assert loaded.vision.siglip.embeddings.position_ids.dtype == torch.int64  # integer buffers are not cast
    assert not loaded.training
    assert torch.equal(_actions(loaded, dtype), _actions(cast, dtype))


def test_bfloat16_checkpoint_loads_as_stored_or_in_float32(tiny_model, tmp_path):
    bf16 = copy.deepcopy(tiny_model).to(torch.bfloat16)
    bf16.save_pretrained(tmp_path)
    as_stored = PixelVLA.from_pretrained(tmp_path)
    assert {t.dtype for t in _floating_tensors(as_stored).values()} == {torch.bfloat16}
    upcast = PixelVLA.from_pretrained(tmp_path, dtype=torch.float32).state_dict()
    for name, t in bf16.state_dict().items():  # the saved tensors (non-persistent buffers are built anew)
        assert upcast[name].dtype == (torch.float32 if t.is_floating_point() else t.dtype), name
        assert torch.equal(upcast[name], t.to(upcast[name].dtype)), name


# ----------------------------------------------------------------------------- peak memory, in a fresh process
#: ~150 M parameters in ~100 tensors of at most 16 MB (float32): 0.3 GB in bfloat16, 0.6 GB on disk in float32.
MEMORY_CONFIG = dict(llm_hidden=1024, llm_layers=12, llm_heads=8, llm_kv_heads=8, llm_intermediate=2816)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def measure_load(directory: str, dtype_name: str) -> dict:
    """Load ``directory`` in ``dtype_name`` in this process: the peak resident memory the load added (bytes,
    Linux's VmHWM after resetting it; file pages mapped while reading count too), its parameters' size and
    the seconds it took."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_bytes("VmRSS")
    start = time.perf_counter()
    model = load_model(directory, dtype=getattr(torch, dtype_name))
    seconds = time.perf_counter() - start
    return {"dtype": dtype_name, "peak_rss_growth": _status_bytes("VmHWM") - before,
            "weights": sum(p.numel() * p.element_size() for p in model.parameters()), "seconds": round(seconds, 1)}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_bfloat16_load_of_a_float32_checkpoint_stays_within_its_bfloat16_size(tmp_path):
    """Loading in float32 and then casting needs at least 2x the bfloat16 weights (the float32 copy); a load in
    bfloat16 needs about 1x. The bound, 1.5x, leaves room for allocator slack and the one source tensor in
    flight."""
    torch.manual_seed(0)
    PixelVLA(PixelVLAConfig.from_preset("tiny", **MEMORY_CONFIG)).save_pretrained(tmp_path)
    out = subprocess.run([sys.executable, __file__, str(tmp_path), "bfloat16"], capture_output=True, text=True,
                         check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(result)
    assert result["weights"] > 250e6
    assert result["peak_rss_growth"] < 1.5 * result["weights"], result


if __name__ == "__main__":
    print(json.dumps(measure_load(sys.argv[1], sys.argv[2])))
