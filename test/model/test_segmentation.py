"""Sam2Segmenter with a tiny random-weight SAM 2: shapes, prompt handling, tracking, memory bound, loading."""
import numpy as np
import pytest
import torch

from pixelvla_model import Box, Line, Mask, Point
from pixelvla_model.segmentation import Sam2Segmenter, tiny_config

H, W = 96, 128


@pytest.fixture(scope="module")
def seg():
    return Sam2Segmenter.from_config(tiny=True, seed=0)


def image(seed=0, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def target_mask():
    m = np.zeros((H, W), bool)
    m[30:60, 40:90] = True
    return m


PROMPTS = {
    "point": [Point(60.0, 50.0)],
    "points fg+bg": [Point(60.0, 50.0), Point(5.0, 5.0, label=0)],
    "line": [Line([(10.0, 10.0), (50.0, 60.0), (100.0, 20.0)])],
    "box": [Box(40.0, 30.0, 90.0, 80.0)],
    "box + point": [Box(40.0, 30.0, 90.0, 80.0), Point(60.0, 50.0, label=0)],
    "edge point": [Point(float(W), float(H))],
}


@pytest.mark.parametrize("name", list(PROMPTS))
def test_each_prompt_gives_a_mask_of_the_image_size(seg, name):
    mask = seg.segment(image(), PROMPTS[name])
    assert mask.shape == (H, W) and mask.dtype == bool


@pytest.mark.parametrize("hw", [(48, 200), (240, 320)])
def test_mask_is_resized_back_to_any_input_size(seg, hw):
    mask = seg.segment(image(h=hw[0], w=hw[1]), [Point(hw[1] / 2, hw[0] / 2)])
    assert mask.shape == hw and mask.dtype == bool


def test_mask_prompt_passes_through(seg):
    target = target_mask()
    out = seg.segment(image(), [Mask(target)])
    assert out.dtype == bool and np.array_equal(out, target)


def test_prompt_coordinates_reach_sam_in_its_input_frame(seg):
    # corner convention -> SAM's index convention: x * S / W - 0.5 (the prompt encoder adds the 0.5 back)
    s = seg.image_size
    points, labels, mask = seg._prompt_inputs([Box(0.0, 0.0, W, H), Point(W / 2, H / 2, label=0)], (H, W))
    assert mask is None
    np.testing.assert_allclose(points, [[-0.5, -0.5], [s - 0.5, s - 0.5], [s / 2 - 0.5, s / 2 - 0.5]])
    assert labels.tolist() == [2, 3, 0]  # the box first, as SAM 2 expects
    line_points, line_labels, _ = seg._prompt_inputs([Line([(0.0, 0.0), (W, 0.0)])], (H, W))
    assert len(line_points) == seg.line_points and set(line_labels.tolist()) == {1}


@pytest.mark.parametrize(
    "prompts, words",
    [
        ([Point(float("nan"), 3.0)], "prompt 0 (Point)"),
        ([Point(10.0, 10.0), Point(500.0, 3.0)], "prompt 1 (Point)"),
        ([Box(50.0, 50.0, 40.0, 60.0)], "prompt 0 (Box): degenerate"),
        ([Line([(5.0, 5.0)])], "prompt 0 (Line)"),
        ([Mask(np.zeros((H, W), bool))], "prompt 0 (Mask): empty"),
        ([Mask(np.ones((10, 10), bool))], "prompt 0 (Mask)"),
        ([Box(1.0, 1.0, 9.0, 9.0), Box(2.0, 2.0, 8.0, 8.0)], "prompt 1 (Box): SAM 2 takes at most one box"),
        ([Box(1.0, 1.0, 9.0, 9.0, label=0)], "prompt 0 (Box): must be foreground"),
        ([Point(1.0, 1.0), Mask(np.ones((H, W), bool))], "prompt 1 (Mask): a Mask prompt stands alone"),
        ([Point(1.0, 1.0, label=7)], "prompt 0 (Point): label"),
        ([], "no prompts"),
        (["box"], "prompt 0: unknown prompt type"),
    ],
)
def test_invalid_prompts_raise_naming_the_prompt(seg, prompts, words):
    with pytest.raises(ValueError) as info:
        seg.segment(image(), prompts)
    assert words.split(":")[0] in str(info.value) and words.split(":")[-1].strip() in str(info.value)


@pytest.mark.parametrize("bad", [np.zeros((H, W), np.uint8), np.zeros((H, W, 3), np.float32), np.zeros((1, 1, 3), np.uint8)])
def test_invalid_images_raise(seg, bad):
    with pytest.raises(ValueError, match="image"):
        seg.segment(bad, [Point(0.5, 0.5)])


def test_tracking_returns_a_mask_for_every_new_frame(seg):
    first = seg.start_tracking(image(0), [Box(40.0, 30.0, 90.0, 80.0)])
    assert seg.tracking and first.shape == (H, W) and first.dtype == bool
    for i in range(1, 5):
        mask = seg.track(np.roll(image(0), 3 * i, axis=1))
        assert mask.shape == (H, W) and mask.dtype == bool
    seg.stop_tracking()
    assert not seg.tracking
    with pytest.raises(RuntimeError, match="start_tracking"):
        seg.track(image(1))


def test_tracking_a_mask_prompt_follows_the_target(seg):
    target = target_mask()
    first = seg.start_tracking(image(0), [Mask(target)])
    assert np.array_equal(first, target)
    follow = seg.track(image(0))
    assert follow.shape == (H, W) and follow.any()  # the mask input is the memory the track starts from
    seg.stop_tracking()


def test_tracking_memory_stays_bounded():
    seg = Sam2Segmenter.from_config(tiny=True, seed=0, memory_window=3)
    seg.start_tracking(image(0), [Point(60.0, 50.0)])
    for i in range(7):
        seg.track(image(i))
        assert seg.session_frames() <= 1 + 3  # the prompted frame + the window
        assert len(seg._session.processed_frames) == 1  # only the current frame's pixels
    assert seg._frame_idx == 7


def test_pruning_to_the_default_window_changes_nothing():
    # the default window is exactly what SAM 2 reads, so pruned and unpruned tracks agree
    config = tiny_config()
    config.num_maskmem, config.max_object_pointers_in_encoder = 3, 4  # a short window keeps the test fast
    seg = Sam2Segmenter.from_config(config=config, seed=0)
    assert seg.memory_window == 3
    frames = [np.roll(image(0), 2 * i, axis=0) for i in range(seg.memory_window + 4)]
    seg.start_tracking(frames[0], [Mask(target_mask())])
    pruned = [seg.track(f) for f in frames[1:]]
    assert seg.session_frames() == 1 + 3
    unbounded = Sam2Segmenter(seg.model, memory_window=10_000)
    unbounded.start_tracking(frames[0], [Mask(target_mask())])
    full = [unbounded.track(f) for f in frames[1:]]
    assert unbounded.session_frames() == len(frames)
    assert all(np.array_equal(a, b) for a, b in zip(pruned, full))


def test_a_bad_prompt_leaves_the_running_track_alone(seg):
    seg.start_tracking(image(0), [Mask(target_mask())])
    with pytest.raises(ValueError):
        seg.start_tracking(image(1), [Point(-4.0, 2.0)])
    assert seg.tracking and seg._frame_idx == 0
    seg.stop_tracking()


def test_same_seed_same_weights_same_masks(seg):
    other = Sam2Segmenter.from_config(tiny=True, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(seg.model.state_dict().values(), other.model.state_dict().values()))
    different = Sam2Segmenter.from_config(tiny=True, seed=1)
    assert not torch.equal(seg.model.mask_decoder.iou_token.weight, different.model.mask_decoder.iou_token.weight)
    for prompts in (PROMPTS["box"], PROMPTS["line"]):
        assert np.array_equal(seg.segment(image(3), prompts), other.segment(image(3), prompts))
    a = [seg.start_tracking(image(0), [Mask(target_mask())])] + [seg.track(image(i)) for i in (1, 2)]
    b = [other.start_tracking(image(0), [Mask(target_mask())])] + [other.track(image(i)) for i in (1, 2)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    seg.stop_tracking()


def test_untrained_model_warns_loudly(caplog):
    with caplog.at_level("WARNING", logger="pixelvla_model.segmentation"):
        seg = Sam2Segmenter.from_config(tiny=True, seed=0)
    assert "UNTRAINED" in caplog.text and not seg.trained


def test_from_pretrained_round_trip(seg, tmp_path):
    seg.model.save_pretrained(tmp_path)
    loaded = Sam2Segmenter.from_pretrained(tmp_path)
    assert loaded.trained and loaded.image_size == seg.image_size
    assert np.array_equal(loaded.segment(image(2), PROMPTS["box"]), seg.segment(image(2), PROMPTS["box"]))


def test_from_pretrained_errors_name_the_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        Sam2Segmenter.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="no config.json in " + str(tmp_path)):
        Sam2Segmenter.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(FileNotFoundError, match="safetensors"):
        Sam2Segmenter.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=str(tmp_path)):
        Sam2Segmenter.from_pretrained(tmp_path)


def test_bfloat16_tracks_like_float32():
    """What a GPU robot runs (segmenter dtype bfloat16); bf16 kernels run on the CPU too."""
    fp32 = Sam2Segmenter.from_config(tiny=True, seed=0)
    bf16 = Sam2Segmenter.from_config(tiny=True, seed=0, dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16 and "dtype=bfloat16" in repr(bf16)
    masks = {}
    for name, s in (("fp32", fp32), ("bf16", bf16)):
        s.start_tracking(image(0), [Point(60, 50)])
        masks[name] = [s.track(image(k)) for k in (1, 2)]
    for a, b in zip(masks["fp32"], masks["bf16"]):
        assert b.dtype == bool and b.shape == (H, W)
        assert (a != b).mean() < 0.05  # bf16 rounding flips only pixels at the mask's edge
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, float16"):
        Sam2Segmenter.from_config(tiny=True, dtype="int8")
