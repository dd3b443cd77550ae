import json

import numpy as np
import pytest
import torch

from pixelvla_model import INPUT_NAMES, PixelVLA, PixelVLAConfig, example_inputs
from pixelvla_model import benchmarks


class _Actions(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, input_ids, attention_mask, target_mask, prompt_coords, prompt_point_mask,
                prompt_types, prompt_labels, prompt_masks):
        out = self.model(pixel_values, input_ids, attention_mask, target_mask, prompt_coords, prompt_point_mask,
                         prompt_types, prompt_labels, prompt_masks)
        return out.actions, out.action_hidden


@pytest.mark.parametrize("text_grounding, colours", [(False, 0), (True, 0), (True, 2)])
def test_forward_exports_to_onnx_with_dynamic_batch_and_text(tmp_path, tiny_model, tiny_config, text_grounding, colours):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    if text_grounding:  # the map stands in for the mask of sample 0 (no mask) in the graph too
        torch.manual_seed(0)
        tiny_config = PixelVLAConfig(**{**tiny_config.__dict__, "text_grounding": True, "grounding_colours": colours})
        tiny_model = PixelVLA(tiny_config).eval()
    b, t = torch.export.Dim("batch", min=1, max=16), torch.export.Dim("text", min=2, max=256)
    shapes = {n: {0: b} for n in INPUT_NAMES}
    shapes["input_ids"] = shapes["attention_mask"] = {0: b, 1: t}
    path = tmp_path / "pixelvla.onnx"
    torch.onnx.export(_Actions(tiny_model).eval(), tuple(example_inputs(tiny_config, 2).values()), str(path), dynamo=True,
                      input_names=list(INPUT_NAMES), output_names=["actions", "action_hidden"],
                      dynamic_shapes=shapes, verbose=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, text_len in [(2, 24), (1, 31), (3, 9)]:
        x = example_inputs(tiny_config, batch, text_len=text_len)
        x["target_mask"][0] = 0.0
        got = sess.run(["actions"], {k: v.numpy() for k, v in x.items()})[0]
        with torch.no_grad():
            ref = tiny_model(**x).actions.numpy()
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_benchmark_runs_and_counts(capsys):
    benchmarks.main(["--presets", "tiny", "--repeats", "2", "--no-meta-flops"])
    report = json.loads(capsys.readouterr().out)
    tiny = report["presets"]["tiny"]
    assert tiny["forward"]["median_ms"] > 0 and tiny["decoding"]["speedup_per_call"] > 0
    per = tiny["flops"]["per_module_mflops"]
    assert per["pixel_encoder"] > 0 and per["prompt_encoder"] > 0 and per["decoder"] > 0
    assert 0 < tiny["flops"]["new_modules_share"] < 1


def test_autoregressive_baseline_emits_7_tokens(tiny_model, tiny_config):
    tokens = benchmarks.AutoregressiveBaseline(tiny_model)(benchmarks.bench_inputs(tiny_config))
    assert tokens.shape == (1, 7)
