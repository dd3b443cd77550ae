import math

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


def test_text_grounding_stands_in_for_a_missing_mask(tiny_config):
    from pixelvla_model.modeling import PixelVLA, example_inputs

    torch.manual_seed(0)
    config = PixelVLAConfig(**{**tiny_config.__dict__, "text_grounding": True})
    model = PixelVLA(config).eval()
    seen = []
    model.pixel_encoder.register_forward_hook(lambda module, args, out: seen.append(args[1]))
    inputs = example_inputs(config, batch_size=2)
    inputs["target_mask"] = torch.zeros_like(inputs["target_mask"])
    inputs["target_mask"][1, 28:42, 14:28] = 1.0  # sample 1 has a mask (patch (2, 1)); sample 0 has none
    with torch.no_grad():
        out = model(**inputs)
    weights = seen[-1]
    assert out.grounding_logits.shape == (2, config.grid_size ** 2)
    torch.testing.assert_close(weights[0], out.grounding_logits[0].softmax(-1))  # the words' map, pooled as a mask
    torch.testing.assert_close(weights[1], mask_to_patch_weights(inputs["target_mask"], config.patch_size)[1])
    # the map follows the words: another instruction, another map
    inputs["input_ids"][0, 3] = (inputs["input_ids"][0, 3] + 1) % config.vocab_size
    with torch.no_grad():
        assert not torch.allclose(model(**inputs).grounding_logits[0], out.grounding_logits[0])
