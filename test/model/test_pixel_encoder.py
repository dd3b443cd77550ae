import math

import numpy as np

import pytest
import torch

from pixelvla_model import PixelVLAConfig
from pixelvla_model.modeling import PixelEncoder, mask_to_patch_weights, patch_position_encoding


def test_mask_to_patch_weights_is_patch_coverage(tiny_config):
    m = torch.zeros(1, 224, 224)
    m[0, 0:14, 0:7] = 1  # half of patch (0, 0)
    m[0, 14:28, 14:28] = 1  # all of patch (1, 1)
    w = mask_to_patch_weights(m, 14)
    assert w.shape == (1, 256)
    assert torch.isclose(w[0, 0], torch.tensor(0.5)) and w[0, 16 + 1] == 1.0
    assert w.sum() == 1.5


def test_pixel_encoder_equals_formula(tiny_config):
    torch.manual_seed(0)
    enc = PixelEncoder(tiny_config)
    L, B, N, D = len(tiny_config.pixel_layers), 2, 256, tiny_config.siglip_hidden
    feats = torch.randn(L, B, N, D)
    p = torch.zeros(B, N)
    p[0, [3, 7, 100]] = torch.tensor([1.0, 0.5, 1.0])
    p[1, 200:210] = 1.0
    out = enc(feats, p)
    for b in range(B):
        z = 0
        for i in range(L):
            f_p = (p[b, :, None] * feats[i, b]).sum(0) / p[b].sum()  # sum(p * f) / |p|
            z = z + enc.gammas[i](f_p)
        z = z + enc.where((p[b, :, None] * enc.patch_positions).sum(0) / p[b].sum())  # where the target is
        expected = enc.mlp(z).view(tiny_config.pixel_tokens, -1)
        torch.testing.assert_close(out[b], expected, rtol=1e-5, atol=1e-6)


def test_empty_mask_uses_no_target_embedding(tiny_config):
    enc = PixelEncoder(tiny_config)
    torch.nn.init.normal_(enc.no_target)
    feats = torch.randn(len(tiny_config.pixel_layers), 2, 256, tiny_config.siglip_hidden)
    p = torch.zeros(2, 256)
    p[1, 5] = 1.0
    out = enc(feats, p)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], enc.no_target)
    assert not torch.allclose(out[1], enc.no_target)
    # gradients stay finite through the guarded division
    out.sum().backward()
    assert all(torch.isfinite(q.grad).all() for q in enc.parameters() if q.grad is not None)


def test_patch_position_encoding_values():
    pos = patch_position_encoding(grid=4, octaves=2)  # columns: sin x, cos x, sin y, cos y (2 octaves each)
    assert pos.shape == (16, 8)
    x, y = 2.5 / 4, 1.5 / 4  # patch 6 = row 1, column 2
    want = [math.sin(math.pi * x), math.sin(2 * math.pi * x), math.cos(math.pi * x), math.cos(2 * math.pi * x),
            math.sin(math.pi * y), math.sin(2 * math.pi * y), math.cos(math.pi * y), math.cos(2 * math.pi * y)]
    torch.testing.assert_close(pos[6], torch.tensor(want), rtol=1e-5, atol=1e-6)


def test_the_pixel_token_tells_where_identical_features_are(tiny_config):
    """Two masks over patches with the same features still give different tokens: the position term."""
    torch.manual_seed(0)
    enc = PixelEncoder(tiny_config)
    feats = torch.ones(len(tiny_config.pixel_layers), 2, 256, tiny_config.siglip_hidden)
    p = torch.zeros(2, 256)
    p[0, 3], p[1, 250] = 1.0, 1.0
    out = enc(feats, p)
    assert (out[0] - out[1]).abs().max() > 1e-4


@pytest.mark.parametrize("place_prompts", [False, True])
def test_the_words_click_where_no_operator_did(tiny_config, place_prompts):
    from pixelvla_model.modeling import PixelVLA, TextGrounding, example_inputs

    torch.manual_seed(0)
    config = PixelVLAConfig(**{**tiny_config.__dict__, "text_grounding": True, "place_prompts": place_prompts})
    model = PixelVLA(config).eval()
    pooled, prompted = [], []
    model.pixel_encoder.register_forward_hook(lambda module, args, out: pooled.append(args[1]))
    model.prompt_encoder.register_forward_hook(lambda module, args, out: prompted.append(args))
    inputs = example_inputs(config, batch_size=3)
    inputs["target_mask"] = torch.zeros_like(inputs["target_mask"])
    inputs["target_mask"][1, 28:42, 14:28] = 1.0  # sample 1 has a mask (patch (2, 1))
    for name in ("prompt_coords", "prompt_point_mask", "prompt_types", "prompt_labels", "prompt_masks"):
        inputs[name][0] = 0  # sample 0: no mask and no prompt, the words alone
    inputs["prompt_types"][2, 0] = 1  # sample 2: a point prompt without a mask
    with torch.no_grad():
        out = model(**inputs)
    weights, (coords, point_mask, types, labels, _) = pooled[-1], prompted[-1]
    roles = 2 if place_prompts else 1  # the target (, where it goes)
    assert out.grounding_logits.shape == (3, roles, config.grid_size ** 2)
    click_weights, click_xy = TextGrounding.click(out.grounding_logits[:, 0], config.grid_size)
    torch.testing.assert_close(weights[0], click_weights[0])  # sample 0: the words' click as its mask ...
    assert types[0].tolist() == [1] * roles + [0] * (types.shape[1] - roles)  # ... and as points
    assert labels[0, :roles].tolist() == [1, 2][:roles] and point_mask[0].sum() == roles
    torch.testing.assert_close(coords[0, 0, 0], click_xy[0])
    if place_prompts:
        torch.testing.assert_close(coords[0, 1, 0], TextGrounding.click(out.grounding_logits[:, 1], config.grid_size)[1][0])
    torch.testing.assert_close(weights[1], mask_to_patch_weights(inputs["target_mask"], config.patch_size)[1])
    assert weights[2].sum() == 0 and torch.equal(types[1:], inputs["prompt_types"][1:])  # the operator's, as given
    # the map follows the words: another instruction, another map
    inputs["input_ids"][0, 3] = (inputs["input_ids"][0, 3] + 1) % config.vocab_size
    with torch.no_grad():
        assert not torch.allclose(model(**inputs).grounding_logits[0], out.grounding_logits[0])


def test_patch_colour_histogram_counts_each_patchs_pixels_by_colour():
    from pixelvla_model.modeling import patch_colour_histogram

    image = torch.zeros(1, 3, 4, 8)  # two 4 x 4 patches: the left black, the right half red, half white
    image[0, 0, :, 4:] = 1.0
    image[0, :, 2:, 4:] = 1.0
    hist = patch_colour_histogram(image, 4, 2)  # cells (R, G, B) in {0, 1}: index 4 R + 2 G + B
    assert hist.shape == (1, 2, 8)
    torch.testing.assert_close(hist[0, 0], torch.eye(8)[0])
    torch.testing.assert_close(hist[0, 1], 0.5 * torch.eye(8)[4] + 0.5 * torch.eye(8)[7])


def test_grown_grounding_colours_keep_the_maps_until_they_train(tiny_config, tmp_path):
    from pixelvla_model.modeling import PixelVLA, example_inputs

    torch.manual_seed(0)
    config = PixelVLAConfig(**{**tiny_config.__dict__, "text_grounding": True, "place_prompts": True})
    model = PixelVLA(config).eval()
    inputs = example_inputs(config, batch_size=2)
    with torch.no_grad():
        before = model(**inputs).grounding_logits
        model.enable_grounding_colours(2)
        torch.testing.assert_close(model(**inputs).grounding_logits, before)  # new key columns start at zero
        model.text_grounding.key.weight.normal_()
        after = model(**inputs).grounding_logits
        inputs["pixel_values"][:, 0] = 1 - inputs["pixel_values"][:, 0]  # other colours, other maps
        assert not torch.allclose(model(**inputs).grounding_logits, after)
    assert model.config.grounding_colours == 2
    model.enable_grounding_colours(2)  # no-op
    with pytest.raises(ValueError, match="2 colour bins"):
        model.enable_grounding_colours(4)
    model.save_pretrained(tmp_path)
    loaded = PixelVLA.from_pretrained(tmp_path).eval()
    assert loaded.config.grounding_colours == 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).grounding_logits, model(**inputs).grounding_logits)
    with pytest.raises(ValueError, match="needs text_grounding"):
        PixelVLAConfig(**{**tiny_config.__dict__, "grounding_colours": 2})


def test_the_click_is_the_map_peak_and_its_neighbours():
    from pixelvla_model.modeling import TextGrounding

    logits = torch.full((1, 16), -30.0)
    logits[0, [5, 6]] = 3.0  # grid 4: row 1, columns 1 and 2
    logits[0, 15] = 2.9  # a second peak far away is not part of the click
    weights, xy = TextGrounding.click(logits, 4)
    assert weights[0, 15] == 0 and torch.allclose(weights[0, [5, 6]], torch.tensor([0.5, 0.5]), atol=1e-4)
    torch.testing.assert_close(xy[0], torch.tensor([0.5, 0.375]), atol=1e-4, rtol=0)


def test_the_words_prompts_are_the_clicks_the_network_prompts_itself_with(tiny_config):
    """RuntimePolicy.words_prompts: a box one patch wide around the target map's click and a place point at the
    place map's, in the image's pixels; the same clicks forward() uses when no prompt is given."""
    from pixelvla_model import PLACE, Box, PixelVLAConfig, PixelVLAPolicy, Point
    from pixelvla_model.modeling import TextGrounding

    config = PixelVLAConfig(**{**tiny_config.__dict__, "text_grounding": True, "place_prompts": True})
    policy = PixelVLAPolicy.from_config(config, seed=3)
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)  # W 128, H 96
    box, place = policy.words_prompts(image, "put the red cube on the plate")
    with torch.no_grad():
        logits = policy.model(**policy.processor([image], ["put the red cube on the plate"])).grounding_logits
    target_xy, place_xy = (TextGrounding.click(logits[:, r], config.grid_size)[1][0].numpy() * [128, 96] for r in (0, 1))
    assert isinstance(box, Box) and isinstance(place, Point) and place.label == PLACE
    np.testing.assert_allclose([place.x, place.y], place_xy, rtol=1e-5)
    half = np.array([128, 96]) / (2 * config.grid_size)
    np.testing.assert_allclose([box.x0, box.y0, box.x1, box.y1],
                               np.clip([*(target_xy - half), *(target_xy + half)], 0, [128, 96, 128, 96]), rtol=1e-5)
    without = PixelVLAPolicy.from_config(tiny_config)
    with pytest.raises(ValueError, match="no text grounding"):
        without.words_prompts(image, "put the red cube on the plate")
