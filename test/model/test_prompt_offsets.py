"""Where the prompts are from the gripper (config.prompt_offsets): the anchor pixel of each prompt type, the
offsets in the base frame, the zero-initialised input grown onto a model, the processor, export."""
import numpy as np
import pytest
import torch

from pixelvla_model import (PLACE, Box, Line, Mask, PixelVLA, PixelVLAConfig, Point, example_inputs, input_names,
                            prompt_anchor, prompt_offsets)


def test_each_prompt_type_stands_for_one_pixel():
    assert prompt_anchor(Point(3.0, 4.0)) == (3.0, 4.0)
    assert prompt_anchor(Line([(0.0, 0.0), (4.0, 2.0), (8.0, 10.0)])) == (4.0, 4.0)
    assert prompt_anchor(Box(2.0, 4.0, 6.0, 10.0)) == (4.0, 7.0)
    m = np.zeros((10, 10), bool)
    m[2:4, 6:9] = True  # rows 2-3, columns 6-8: pixel centres at (7, 2.5) + half a pixel
    assert prompt_anchor(Mask(m)) == (7.5, 3.0)


def locate_on_table(x, y):  # a top-down camera: 1 px = 1 cm, the table at z = 0
    return np.array([x / 100, y / 100, 0.0])


def test_offsets_hold_the_target_and_the_place_from_the_tcp_in_metres():
    tcp = np.array([0.10, 0.20, 0.15])
    out = prompt_offsets([Point(30.0, 20.0, PLACE), Point(12.0, 25.0)], locate_on_table, tcp)
    assert out.dtype == np.float32 and out.shape == (2, 4)
    np.testing.assert_allclose(out, [[0.02, 0.05, -0.15, 1.0], [0.20, 0.0, -0.15, 1.0]], atol=1e-6)
    np.testing.assert_array_equal(prompt_offsets(None, locate_on_table, tcp), np.zeros((2, 4)))
    only_target = prompt_offsets([Point(12.0, 25.0)], locate_on_table, tcp)
    assert only_target[0, 3] == 1.0 and not only_target[1].any()  # no place prompt: zeros, not known
    nowhere = prompt_offsets([Point(12.0, 25.0)], lambda x, y: np.full(3, np.nan), tcp)
    assert not nowhere.any()  # a pixel the camera cannot place counts as no prompt


def test_the_tracked_mask_places_the_target_not_where_the_click_landed():
    mask = np.zeros((40, 40), bool)
    mask[10:14, 20:24] = True  # pixel centres at (21.5, 11.5) + half a pixel
    edge = prompt_offsets([Point(20.2, 10.3)], locate_on_table, np.zeros(3), target_mask=mask)
    np.testing.assert_allclose(edge[0, :2], [0.22, 0.12], atol=1e-6)
    empty = prompt_offsets([Point(20.2, 10.3)], locate_on_table, np.zeros(3), target_mask=np.zeros((40, 40), bool))
    np.testing.assert_allclose(empty[0, :2], [0.202, 0.103], atol=1e-6)  # the target hidden: the click
    assert not prompt_offsets([], locate_on_table, np.zeros(3), target_mask=mask).any()  # text-only: none


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
        assert model.config.prompt_offsets and input_names(model.config)[-1] == "prompt_offsets"
        x = example_inputs(model.config, batch_size=2)
        assert torch.equal(model(**x).actions, before)
        torch.nn.init.normal_(model.prompt_offsets.mlp[4].weight, std=0.5)
        moved = model(**{**x, "prompt_offsets": x["prompt_offsets"] * 2}).actions
    assert (moved[0] - model(**x).actions[0]).abs().max() > 1e-3
    assert torch.equal(moved[1], model(**x).actions[1])  # nothing known: zeros in, the same actions out
    assert any(n.startswith("prompt_offsets.") for n in model.freeze_for_stage("cat"))  # trains with the decoder
    with pytest.raises(ValueError, match="prompt_offsets"):
        model(**{k: v for k, v in x.items() if k != "prompt_offsets"})


def test_the_processor_and_the_policy_take_the_offsets(offsets_model):
    from pixelvla_model import PixelVLAPolicy, build_byte_tokenizer
    from pixelvla_model.processing import identity_norm_stats

    policy = PixelVLAPolicy(offsets_model, build_byte_tokenizer(), identity_norm_stats(proprio_dim=7))
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    state = np.zeros(7)
    near = np.array([[0.02, 0.0, -0.1, 1.0], [0.0, 0.0, 0.0, 0.0]])
    a = policy.predict(image, "put this cube in the bowl", [Point(40.0, 30.0)], proprio=state, prompt_offsets=near)
    b = policy.predict(image, "put this cube in the bowl", [Point(40.0, 30.0)], proprio=state,
                       prompt_offsets=near * [[10, 10, 1, 1], [1, 1, 1, 1]])
    assert a.shape == (5, 7) and np.abs(a - b).max() > 1e-6
    with pytest.raises(ValueError, match="pass prompt_offsets"):
        policy.predict(image, "put this cube in the bowl", proprio=state)
    with pytest.raises(ValueError, match=r"finite \(2, 4\)"):
        policy.predict(image, "put this cube in the bowl", proprio=state, prompt_offsets=np.full((2, 4), np.nan))


def test_an_offsets_model_exports_to_onnx_with_the_offsets_input(offsets_model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pixelvla_model.export import check_onnx_parity, export_onnx
    from pixelvla_model.runtime.bundle import io_spec

    path = tmp_path / "offsets.onnx"
    export_onnx(offsets_model, path, text_len=(2, 24, 64))
    assert [i.name for i in ort.InferenceSession(str(path)).get_inputs()][-2:] == ["proprio", "prompt_offsets"]
    assert io_spec(offsets_model.config)[0][-1] == {"name": "prompt_offsets", "shape": [1, 2, 4], "dtype": "float32"}
    assert check_onnx_parity(offsets_model, path, batch_size=1, text_len=30) < 1e-4
