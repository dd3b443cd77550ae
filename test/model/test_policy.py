import logging

import numpy as np
import pytest

from pixelvla_model import (Box, Mask, Point, PixelVLAConfig, PixelVLAPolicy, build_byte_tokenizer,
                            load_tokenizer, unnormalize_actions)
from pixelvla_model.processing import build_prompt

STATS = {"q01": [-0.02, -0.03, -0.01, -0.1, -0.2, -0.3, 0.0], "q99": [0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 1.0],
         "mask": [True] * 6 + [False]}


@pytest.fixture(scope="module")
def policy():
    return PixelVLAPolicy.from_config(PixelVLAConfig.from_preset("tiny"), seed=0,
                                      norm_stats={"bridge_orig": {"action": STATS}})


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)


def test_untrained_policy_warns_loudly(caplog):
    with caplog.at_level(logging.WARNING):
        PixelVLAPolicy.from_config(PixelVLAConfig.from_preset("tiny"), seed=0)
    assert "UNTRAINED" in caplog.text


def test_predict_shape_units_and_prompts(policy, image):
    mask = np.zeros(image.shape[:2], bool)
    mask[50:100, 60:200] = True
    a = policy.predict(image, "Pick up the cup", prompts=[Point(10, 20), Box(5, 5, 100, 90), Mask(mask)], mask=mask)
    assert a.shape == (5, 7) and np.isfinite(a).all()
    q01, q99 = np.array(STATS["q01"]), np.array(STATS["q99"])
    assert np.all(a[:, :6] >= q01[:6] - (q99[:6] - q01[:6])) and np.all(a[:, :6] <= q99[:6] + (q99[:6] - q01[:6]))
    b = policy.predict(image, "Pick up the cup")
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="prompt 0 \\(Point\\).*outside"):
        policy.predict(image, "pick", prompts=[Point(321, 20)])
    with pytest.raises(ValueError, match="uint8"):
        policy.predict(image.astype(np.float32), "pick")


def test_unnormalisation_follows_openvla():
    norm = np.array([[-1, 0, 1, 0.5, -0.5, 1, 0.7]])
    out = unnormalize_actions(norm, {"action": STATS})
    q01, q99 = np.array(STATS["q01"]), np.array(STATS["q99"])
    np.testing.assert_allclose(out[0, :6], 0.5 * (norm[0, :6] + 1) * (q99[:6] - q01[:6]) + q01[:6])
    assert out[0, 6] == 0.7  # gripper (mask false) passes through


def test_unnorm_key_resolution(image):
    stats = {"bridge_orig": {"action": STATS}, "fractal": {"action": STATS}}
    p = PixelVLAPolicy.from_config(PixelVLAConfig.from_preset("tiny"), seed=0, norm_stats=stats)
    with pytest.raises(ValueError, match="unknown unnorm_key 'libero'.*bridge_orig.*fractal"):
        p.predict(image, "pick", unnorm_key="libero")
    with pytest.raises(ValueError, match="pass unnorm_key"):
        p.predict(image, "pick")
    assert p.predict(image, "pick", unnorm_key="fractal").shape == (5, 7)


def test_prompt_template_and_tokenizer_roundtrip(tmp_path):
    assert build_prompt("Put the spoon on the towel.") == \
        "In: What action should the robot take to put the spoon on the towel?\nOut:"
    tok = build_byte_tokenizer()
    tok.save_pretrained(str(tmp_path))
    again = load_tokenizer(tmp_path)
    text = build_prompt("stack the blocks")
    assert again(text).input_ids == tok(text).input_ids
    assert tok(text).input_ids[0] == tok.bos_token_id == 1
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text


def test_policy_save_load_identical(policy, image, tmp_path):
    policy.save_pretrained(tmp_path)
    again = PixelVLAPolicy.from_pretrained(tmp_path)
    assert again.norm_stats == policy.norm_stats
    np.testing.assert_array_equal(again.predict(image, "pick"), policy.predict(image, "pick"))
