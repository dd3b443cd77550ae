import numpy as np
import pytest
import torch

from pixelvla_model import (PLACE, PROMPT_TYPE_IDS, Box, Line, Mask, Point, PixelVLA, PixelVLAConfig, batch_prompts,
                            example_inputs)

HW = (120, 160)  # (H, W) of a non-square input image


def _mask():
    m = np.zeros(HW, bool)
    m[10:50, 20:80] = True
    return m


@pytest.mark.parametrize("prompt, why", [
    (Point(161.0, 10.0), "outside"),
    (Point(-1.0, 10.0), "outside"),
    (Point(float("nan"), 10.0), "not finite"),
    (Box(10, 10, 10, 50), "degenerate box"),
    (Box(50, 10, 20, 40), "degenerate box"),
    (Box(10, 10, 200, 50), "outside"),
    (Line([(1, 1)]), "at least 2 points"),
    (Line([(5, 5), (5, 5)]), "degenerate line"),
    (Line([(5, 5), (5, float("nan"))]), "not finite"),
    (Mask(np.zeros(HW, bool)), "empty mask"),
    (Mask(np.ones((10, 10), bool)), "shape"),
    (Mask(np.full(HW, np.nan)), "NaN"),
    (Point(1.0, 1.0, label=3), "label"),
])
def test_invalid_prompts_name_the_prompt_and_why(tiny_config, prompt, why):
    with pytest.raises(ValueError, match=f"prompt 1 \\({type(prompt).__name__}\\).*{why}"):
        batch_prompts([[Point(1.0, 1.0), prompt]], HW, tiny_config)


def test_too_many_prompts(tiny_config):
    with pytest.raises(ValueError, match="max_prompts"):
        batch_prompts([[Point(1, 1)] * (tiny_config.max_prompts + 1)], HW, tiny_config)


def test_batching_layout(tiny_config):
    long_line = Line([(i * 10.0, i * 5.0) for i in range(12)])  # more points than slots: resampled
    t = batch_prompts([[Point(16.0, 60.0, label=0), Box(0, 0, 160, 120), long_line, Mask(_mask())], None],
                      HW, tiny_config)
    K, P, S = tiny_config.max_prompts, tiny_config.max_prompt_points, tiny_config.prompt_mask_size
    assert t["prompt_coords"].shape == (2, K, P, 2) and t["prompt_masks"].shape == (2, K, S, S)
    assert t["prompt_types"][0].tolist() == [PROMPT_TYPE_IDS[n] for n in ("point", "box", "line", "mask")]
    assert t["prompt_types"][1].tolist() == [0] * K
    torch.testing.assert_close(t["prompt_coords"][0, 0, 0], torch.tensor([0.1, 0.5]))
    torch.testing.assert_close(t["prompt_coords"][0, 1, :2], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    assert t["prompt_point_mask"][0].sum(-1).tolist() == [1, 2, P, 0]
    torch.testing.assert_close(t["prompt_coords"][0, 2, -1], torch.tensor([110 / 160, 55 / 120]))
    assert t["prompt_labels"][0].tolist() == [0, 1, 1, 1]
    assert 0 < t["prompt_masks"][0, 3].sum() and t["prompt_masks"][0, :3].sum() == 0


def _run(model, inputs, prompt_tensors):
    with torch.no_grad():
        return model(**{**inputs, **prompt_tensors}).actions


@pytest.mark.parametrize("prompt", [Point(40.0, 30.0), Line([(5, 5), (60, 40), (100, 100)]),
                                    Box(20, 10, 90, 70), Mask(_mask())], ids=lambda p: type(p).__name__)
def test_each_prompt_type_yields_a_token_and_changes_the_output(tiny_model, tiny_config, prompt):
    inputs = example_inputs(tiny_config, batch_size=1)
    none = batch_prompts([None], HW, tiny_config)
    one = batch_prompts([[prompt]], HW, tiny_config)
    tokens, valid = tiny_model.prompt_encoder(one["prompt_coords"], one["prompt_point_mask"], one["prompt_types"],
                                              one["prompt_labels"], one["prompt_masks"])
    assert tokens.shape == (1, tiny_config.max_prompts, tiny_config.llm_hidden)
    assert valid[0].tolist() == [True] + [False] * (tiny_config.max_prompts - 1)
    assert tokens[0, 0].abs().sum() > 0 and tokens[0, 1:].abs().sum() == 0
    assert not torch.allclose(_run(tiny_model, inputs, none), _run(tiny_model, inputs, one))


def test_prompt_label_and_position_matter(tiny_model, tiny_config):
    inputs = example_inputs(tiny_config, batch_size=1)
    a = _run(tiny_model, inputs, batch_prompts([[Point(40.0, 30.0, label=1)]], HW, tiny_config))
    b = _run(tiny_model, inputs, batch_prompts([[Point(40.0, 30.0, label=0)]], HW, tiny_config))
    c = _run(tiny_model, inputs, batch_prompts([[Point(140.0, 100.0, label=1)]], HW, tiny_config))
    assert not torch.allclose(a, b) and not torch.allclose(a, c)


def test_place_prompts_need_a_model_trained_with_them(tiny_config):
    with pytest.raises(ValueError, match="prompt 1 \\(Box\\): a place prompt.*place_prompts is false"):
        batch_prompts([[Point(1.0, 1.0), Box(10, 10, 50, 40, label=PLACE)]], HW, tiny_config)
    placed = PixelVLAConfig.from_preset("tiny", place_prompts=True)
    t = batch_prompts([[Point(1.0, 1.0), Box(10, 10, 50, 40, label=PLACE)]], HW, placed)
    assert t["prompt_labels"][0, :2].tolist() == [1, 2]


def test_enable_place_prompts_grows_the_label_embedding_and_keeps_every_other_output(tiny_config):
    torch.manual_seed(0)
    model = PixelVLA(PixelVLAConfig.from_preset("tiny")).eval()
    inputs = example_inputs(model.config, batch_size=1)
    target = batch_prompts([[Point(40.0, 30.0), Box(10, 10, 50, 40, label=0)]], HW, model.config)
    before = _run(model, inputs, target)
    model.enable_place_prompts()
    model.enable_place_prompts()  # idempotent
    assert model.config.place_prompts and model.prompt_encoder.label_embed.weight.shape[0] == 3
    torch.testing.assert_close(_run(model, inputs, target), before, rtol=0, atol=0)
    place = _run(model, inputs, batch_prompts([[Point(40.0, 30.0), Box(10, 10, 50, 40, label=PLACE)]], HW,
                                              model.config))
    assert not torch.allclose(place, before)  # place differs from background at the same spot
    built = PixelVLA(PixelVLAConfig.from_dict(model.config.to_dict()))
    built.load_state_dict(model.state_dict())  # the grown model is what a place_prompts config builds


def test_an_engine_bundle_of_a_place_model_takes_place_prompts(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pixelvla_model import PixelVLAPolicy
    from pixelvla_model.export import export_bundle
    from pixelvla_model.runtime.policy import load_policy
    from tiny_models import save_tiny_checkpoint

    save_tiny_checkpoint(tmp_path / "ckpt", seed=2, place_prompts=True)
    export_bundle(tmp_path / "ckpt", tmp_path / "bundle")
    image = np.random.default_rng(1).integers(0, 255, (*HW, 3), dtype=np.uint8)
    prompts = [Point(40.0, 30.0), Box(100, 70, 150, 110, label=PLACE)]
    engine = load_policy(tmp_path / "bundle", backend="onnxruntime").predict(image, "put this cube on the plate",
                                                                            prompts=prompts)
    reference = PixelVLAPolicy.from_pretrained(tmp_path / "ckpt").predict(image, "put this cube on the plate",
                                                                         prompts=prompts)
    assert np.abs(engine - reference).max() < 1e-4
