"""Where the prompts are from the gripper (config.prompt_offsets): the anchor pixel of each prompt type, the
prompts placed in the network through the camera's click map (the words' clicks too), the zero-initialised
module grown onto a model, the processor, export."""
import numpy as np
import pytest
import torch

from pixelvla_model import (PLACE, Box, Line, Mask, PixelVLA, PixelVLAConfig, Point, batch_prompts, example_inputs,
                            input_names, prompt_anchor)
from pixelvla_model.modeling import TextGrounding, place_prompts


def test_each_prompt_type_stands_for_one_pixel():
    assert prompt_anchor(Point(3.0, 4.0)) == (3.0, 4.0)
    assert prompt_anchor(Line([(0.0, 0.0), (4.0, 2.0), (8.0, 10.0)])) == (4.0, 4.0)
    assert prompt_anchor(Box(2.0, 4.0, 6.0, 10.0)) == (4.0, 7.0)
    m = np.zeros((10, 10), bool)
    m[2:4, 6:9] = True  # rows 2-3, columns 6-8: pixel centres at (7, 2.5) + half a pixel
    assert prompt_anchor(Mask(m)) == (7.5, 3.0)


# A top-down view 1 m wide: a click (x, y) in [0, 1] lies at (x, y) m on the table 0.15 m below the TCP at the
# origin. [dx, dy, dz, w] = M @ [x, y, 1].
TOP_DOWN = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -0.15], [0.0, 0.0, 1.0]])


def placed(config, prompts, mask=None, size=100, click_map=TOP_DOWN):
    """place_prompts on one sample of `prompts` (pixels of a size x size image) and its target mask."""
    pt = batch_prompts([prompts], (size, size), config)
    target = torch.zeros(1, size, size) if mask is None else torch.as_tensor(mask, dtype=torch.float32)[None]
    return place_prompts(click_map[None], target, pt["prompt_coords"], pt["prompt_point_mask"], pt["prompt_types"],
                         pt["prompt_labels"], pt["prompt_masks"])[0].numpy()


def test_the_prompts_are_placed_from_the_tcp_in_metres():
    config = PixelVLAConfig.from_preset("tiny", place_prompts=True)
    out = placed(config, [Point(30.0, 20.0, PLACE), Point(12.0, 25.0)])
    np.testing.assert_allclose(out, [[0.12, 0.25, -0.15, 1.0], [0.30, 0.20, -0.15, 1.0]], atol=1e-6)
    assert not placed(config, []).any()
    only_target = placed(config, [Point(12.0, 25.0)])
    assert only_target[0, 3] == 1.0 and not only_target[1].any()  # no place prompt: zeros, not known
    assert not placed(config, [Point(12.0, 25.0)], click_map=torch.zeros(4, 3)).any()  # no calibration
    behind = TOP_DOWN.clone()
    behind[3, 2] = -1.0  # w < 0: the ray meets the plane behind the camera
    assert not placed(config, [Point(12.0, 25.0)], click_map=behind).any()
    assert not placed(config, [Point(12.0, 25.0, 0)]).any()  # a background click places nothing


def test_each_prompt_type_is_placed_at_its_anchor():
    config = PixelVLAConfig.from_preset("tiny")
    m = np.zeros((100, 100), bool)
    m[20:40, 60:80] = True  # mask prompts enter at 16 x 16: the centroid of the cells it covers
    for prompt in [Line([(0.0, 0.0), (40.0, 20.0), (80.0, 100.0)]), Box(20.0, 40.0, 60.0, 100.0), Mask(m)]:
        x, y = prompt_anchor(prompt)
        np.testing.assert_allclose(placed(config, [prompt])[0, :2], [x / 100, y / 100], atol=0.02)


def test_the_tracked_mask_places_the_target_not_where_the_click_landed():
    config = PixelVLAConfig.from_preset("tiny")
    mask = np.zeros((100, 100), bool)
    mask[10:14, 20:24] = True  # pixel centres at (21.5, 11.5) + half a pixel
    np.testing.assert_allclose(placed(config, [Point(20.2, 10.3)], mask)[0, :2], [0.22, 0.12], atol=1e-6)
    np.testing.assert_allclose(placed(config, [Point(20.2, 10.3)])[0, :2], [0.202, 0.103], atol=1e-6)
    assert not placed(config, [], mask).any()  # no prompt, no target row: the tracked mask alone is not a prompt


def test_the_words_clicks_are_placed_like_an_operators():
    torch.manual_seed(0)
    config = PixelVLAConfig.from_preset("tiny", proprio_dim=7, place_prompts=True, max_prompts=2)
    model = PixelVLA(config).eval()
    model.enable_text_grounding()
    model.enable_prompt_offsets()
    torch.nn.init.normal_(model.prompt_offsets.mlp[4].weight, std=0.5)
    x = {k: v[-1:] for k, v in example_inputs(model.config, batch_size=2).items()}  # no mask, no prompt
    x["prompt_types"] = torch.zeros_like(x["prompt_types"])
    seen = []
    model.prompt_offsets.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        words = model(**{**x, "click_to_tcp": TOP_DOWN[None]})
        uncalibrated = model(**x)  # example_inputs' last sample: all zeros, nothing placed
    clicks = [TextGrounding.click(words.grounding_logits[0, r:r + 1], config.grid_size)[1][0] for r in range(2)]
    for row, xy in enumerate(clicks):
        np.testing.assert_allclose(seen[0][0, row].numpy(), [*xy.tolist(), -0.15, 1.0], atol=1e-6)
    assert not seen[1].any()
    assert (words.actions - uncalibrated.actions).abs().max() > 1e-3


@pytest.fixture(scope="module")
def offsets_model():
    torch.manual_seed(0)
    model = PixelVLA(PixelVLAConfig.from_preset("tiny", proprio_dim=7)).eval()
    model.enable_prompt_offsets()
    torch.nn.init.normal_(model.prompt_offsets.mlp[4].weight, std=0.5)  # as if trained
    return model


def test_grown_onto_a_model_it_starts_silent_and_then_moves_the_actions():
    torch.manual_seed(0)
    model = PixelVLA(PixelVLAConfig.from_preset("tiny", proprio_dim=7)).eval()
    x = example_inputs(model.config, batch_size=2)
    with torch.no_grad():
        before = model(**x).actions
        model.enable_prompt_offsets()  # zero-initialised: the actions are as they were
        assert model.config.prompt_offsets and input_names(model.config)[-1] == "click_to_tcp"
        x = example_inputs(model.config, batch_size=2)
        assert torch.equal(model(**x).actions, before)
        torch.nn.init.normal_(model.prompt_offsets.mlp[4].weight, std=0.5)
        moved = model(**{**x, "click_to_tcp": x["click_to_tcp"] * torch.tensor([[2.0], [2.0], [2.0], [1.0]])}).actions
    assert (moved[0] - model(**x).actions[0]).abs().max() > 1e-3
    assert torch.equal(moved[1], model(**x).actions[1])  # nothing calibrated: nothing placed, the same actions
    assert any(n.startswith("prompt_offsets.") for n in model.freeze_for_stage("cat"))  # trains with the decoder
    with pytest.raises(ValueError, match="click_to_tcp"):
        model(**{k: v for k, v in x.items() if k != "click_to_tcp"})


def test_the_processor_and_the_policy_take_the_click_map(offsets_model):
    from pixelvla_model import PixelVLAPolicy, build_byte_tokenizer
    from pixelvla_model.processing import identity_norm_stats

    policy = PixelVLAPolicy(offsets_model, build_byte_tokenizer(), identity_norm_stats(proprio_dim=7))
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    state = np.zeros(7)
    near = TOP_DOWN.numpy() * [[0.1], [0.1], [1.0], [1.0]]  # a view 0.1 m wide
    a = policy.predict(image, "put this cube in the bowl", [Point(40.0, 30.0)], proprio=state, click_to_tcp=near)
    b = policy.predict(image, "put this cube in the bowl", [Point(40.0, 30.0)], proprio=state, click_to_tcp=TOP_DOWN.numpy())
    assert a.shape == (5, 7) and np.abs(a - b).max() > 1e-6
    with pytest.raises(ValueError, match="pass click_to_tcp"):
        policy.predict(image, "put this cube in the bowl", proprio=state)
    with pytest.raises(ValueError, match=r"finite \(4, 3\)"):
        policy.predict(image, "put this cube in the bowl", proprio=state, click_to_tcp=np.full((4, 3), np.nan))


def test_an_offsets_model_exports_to_onnx_with_the_offsets_input(offsets_model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pixelvla_model.export import check_onnx_parity, export_onnx
    from pixelvla_model.runtime.bundle import io_spec

    path = tmp_path / "offsets.onnx"
    export_onnx(offsets_model, path, text_len=(2, 24, 64))
    assert [i.name for i in ort.InferenceSession(str(path)).get_inputs()][-2:] == ["proprio", "click_to_tcp"]
    assert io_spec(offsets_model.config)[0][-1] == {"name": "click_to_tcp", "shape": [1, 4, 3], "dtype": "float32"}
    assert check_onnx_parity(offsets_model, path, batch_size=1, text_len=30) < 1e-4
