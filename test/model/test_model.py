import pytest
import torch

from pixelvla_model import INPUT_NAMES, PixelVLA, PixelVLAConfig, example_inputs


def test_example_inputs_shapes(tiny_config):
    c = tiny_config
    x = example_inputs(c, batch_size=2, text_len=20)
    assert tuple(x) == INPUT_NAMES
    K, P, S = c.max_prompts, c.max_prompt_points, c.prompt_mask_size
    assert x["pixel_values"].shape == (2, 3, 224, 224) and x["pixel_values"].dtype == torch.float32
    assert x["input_ids"].shape == x["attention_mask"].shape == (2, 20)
    assert x["target_mask"].shape == (2, 224, 224)
    assert x["prompt_coords"].shape == (2, K, P, 2) and x["prompt_point_mask"].shape == (2, K, P)
    assert x["prompt_types"].shape == x["prompt_labels"].shape == (2, K)
    assert x["prompt_masks"].shape == (2, K, S, S)


def test_forward_shapes_and_l1_loss(tiny_model, tiny_config):
    x = example_inputs(tiny_config, batch_size=2)
    target = torch.rand(2, tiny_config.chunk_size, 7) * 2 - 1
    out = tiny_model(**x, actions=target)
    seq = x["input_ids"].shape[1] + tiny_config.prefix_tokens
    assert out.actions.shape == (2, tiny_config.chunk_size, 7)
    assert out.last_hidden_state.shape == (2, seq, tiny_config.llm_hidden)
    assert out.action_hidden.shape == (2, tiny_config.llm_hidden)
    torch.testing.assert_close(out.loss, (out.actions - target).abs().mean())
    # the action state is the hidden state of the last valid text token
    torch.testing.assert_close(out.action_hidden[0], out.last_hidden_state[0, -1])
    torch.testing.assert_close(out.action_hidden[1], out.last_hidden_state[1, -4])


def test_batch_of_two_equals_two_batches_of_one(tiny_model, tiny_config):
    x = example_inputs(tiny_config, batch_size=2)
    with torch.no_grad():
        both = tiny_model(**x).actions
        singles = [tiny_model(**{k: v[i:i + 1] for k, v in x.items()}).actions for i in range(2)]
    torch.testing.assert_close(both, torch.cat(singles), rtol=1e-4, atol=1e-5)


def test_deterministic_in_eval_and_seeded_construction(tiny_model, tiny_config):
    x = example_inputs(tiny_config, batch_size=2)
    with torch.no_grad():
        a, b = tiny_model(**x).actions, tiny_model(**x).actions
    assert torch.equal(a, b)
    torch.manual_seed(0)
    again = PixelVLA(tiny_config).eval()
    with torch.no_grad():
        assert torch.equal(again(**x).actions, a)


def test_target_mask_changes_output_and_defaults(tiny_model, tiny_config):
    x = example_inputs(tiny_config, batch_size=1)
    with torch.no_grad():
        with_mask = tiny_model(**x).actions
        no_mask = tiny_model(**{**x, "target_mask": torch.zeros_like(x["target_mask"])}).actions
        defaults = tiny_model(x["pixel_values"], x["input_ids"], x["attention_mask"]).actions
    assert not torch.allclose(with_mask, no_mask)
    assert torch.isfinite(defaults).all() and defaults.shape == (1, tiny_config.chunk_size, 7)


def test_visual_where_grows_without_changing_outputs_then_locates_patches(tmp_path, tiny_config):
    """enable_visual_where: zero-initialised, so the grown model predicts what it did; once its weights are
    non-zero each visual token carries its patch's position; it saves and loads with the model."""
    from pixelvla_model.modeling import patch_position_encoding

    torch.manual_seed(0)
    model = PixelVLA(tiny_config).eval()
    x = example_inputs(tiny_config, batch_size=2)
    with torch.no_grad():
        before = model(**x).actions
        model.enable_visual_where(3)
        assert model.config.visual_where_octaves == 3
        torch.testing.assert_close(model(**x).actions, before, rtol=0, atol=0)
        torch.nn.init.normal_(model.visual_where.weight)
        after = model(**x).actions
    assert not torch.allclose(after, before)
    grid = tiny_config.grid_size
    assert model.visual_positions.shape == (grid * grid, 12)
    torch.testing.assert_close(model.visual_positions, patch_position_encoding(grid, 3))
    model.save_pretrained(tmp_path)
    loaded = PixelVLA.from_pretrained(tmp_path)
    assert loaded.config.visual_where_octaves == 3
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).actions, after)
    model.enable_visual_where(3)  # already there: no-op
    with pytest.raises(ValueError, match="3-octave"):  # a second, different position term
        model.enable_visual_where(4)


def test_decoder_prefix_grows_without_changing_outputs_then_reads_where_to_act(tmp_path, tiny_config):
    """enable_decoder_prefix: zero-initialised, so the grown model predicts what it did; its term trains
    wherever the decoder trains; with the LLM's path cut, the actions follow the target mask and not the words,
    so the term reads the prefix tokens past the LLM; it saves and loads with the model."""
    torch.manual_seed(0)
    model = PixelVLA(tiny_config).eval()
    model.freeze_for_stage("cat")
    x = example_inputs(tiny_config, batch_size=2)
    with torch.no_grad():
        before = model(**x).actions
        model.enable_decoder_prefix()
        assert model.config.decoder_reads_prefix
        torch.testing.assert_close(model(**x).actions, before, rtol=0, atol=0)
    assert model.decoder.prefix.weight.requires_grad
    n = tiny_config.pixel_tokens + tiny_config.max_prompts + (1 if tiny_config.proprio_dim else 0)
    assert model.decoder.prefix.in_features == n * tiny_config.llm_hidden

    with torch.no_grad():
        torch.nn.init.normal_(model.decoder.prefix.weight, std=0.1)
        model.decoder.proj.weight.zero_(), model.decoder.proj.bias.zero_()  # the LLM's state no longer reaches it
        after = model(**x).actions
        other_words = model(**{**x, "input_ids": x["input_ids"].flip(1)}).actions
        other_target = model(**{**x, "target_mask": x["target_mask"].flip(-1)}).actions
    assert not torch.allclose(after, before)
    torch.testing.assert_close(other_words, after, rtol=0, atol=0)
    assert not torch.allclose(other_target, after)
    model.save_pretrained(tmp_path)
    loaded = PixelVLA.from_pretrained(tmp_path)
    assert loaded.config.decoder_reads_prefix
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).actions, after)
    weight = model.decoder.prefix.weight
    model.enable_decoder_prefix()  # already there: no-op
    assert model.decoder.prefix.weight is weight


def test_pixel_where_centroid_locates_the_target_inside_its_patch(tiny_config):
    """Two targets inside the same patch, with the same area: the patch grid cannot tell them apart, so without
    pixel_where_centroid the pixel token is the same; with it the token differs, and the centroid is exact."""
    from pixelvla_model.modeling import mask_centroid

    x = example_inputs(tiny_config, batch_size=1)
    s, p = tiny_config.image_size, tiny_config.patch_size
    left, right = torch.zeros(1, s, s), torch.zeros(1, s, s)
    left[0, p:p + 4, p:p + 4] = 1.0  # rows and columns p .. p+3: the second patch of the second patch row
    right[0, p + 6:p + 10, p + 8:p + 12] = 1.0
    torch.testing.assert_close(mask_centroid(left), torch.tensor([[(p + 2) / s, (p + 2) / s]]))
    torch.testing.assert_close(mask_centroid(right), torch.tensor([[(p + 10) / s, (p + 8) / s]]))
    torch.testing.assert_close(mask_centroid(torch.zeros(2, s, s)), torch.full((2, 2), 0.5))
    tokens = {}
    for centroid in (False, True):
        torch.manual_seed(0)
        model = PixelVLA(PixelVLAConfig(**{**tiny_config.__dict__, "pixel_where_centroid": centroid})).eval()
        with torch.no_grad():
            tokens[centroid] = [model(**{**x, "target_mask": m}).last_hidden_state[0, 1 + tiny_config.grid_size ** 2]
                                for m in (left, right)]
    torch.testing.assert_close(tokens[False][0], tokens[False][1])
    assert not torch.allclose(tokens[True][0], tokens[True][1])
    with pytest.raises(ValueError, match="pixel_where_octaves > 0"):
        PixelVLAConfig(**{**tiny_config.__dict__, "pixel_where_centroid": True, "pixel_where_octaves": 0})


def test_resize_images_resamples_the_position_embeddings_onto_the_finer_grid(tmp_path):
    """resize_images: a model trained at 112 px (8 x 8 patches) goes on at 224 px (16 x 16). The towers' learned
    position tables are resampled: a table that is linear in the patch column stays linear at the new patch
    centres; the fixed position encodings are rebuilt for 16 x 16; what was frozen stays frozen."""
    from pixelvla_model import PixelVLAConfig
    from pixelvla_model.modeling import patch_position_encoding

    torch.manual_seed(0)
    model = PixelVLA(PixelVLAConfig.from_preset("tiny", image_size=112)).eval()
    model.enable_visual_where(3)
    siglip = model.vision.siglip.embeddings.position_embedding.weight
    columns = torch.arange(64).remainder(8).float()  # (N,) row-major patch column, 0..7
    with torch.no_grad():
        siglip.copy_(columns[:, None] * torch.arange(1, siglip.shape[1] + 1).float())
    dino_class = model.vision.dino.embeddings.position_embeddings[:, :1].detach().clone()
    model.vision.dino.requires_grad_(False)

    model.resize_images(224)
    assert model.config.image_size == 224 and model.config.grid_size == 16
    table = model.vision.siglip.embeddings.position_embedding.weight.detach()
    assert table.shape == (256, siglip.shape[1])
    # new column j lies at old column (j + 0.5) / 2 - 0.5; the ramp stays a ramp along the columns (within
    # bicubic's small overshoot) and every row of the new grid is the same, so rows and columns were not swapped
    ramp = table[:, 0].view(16, 16)
    torch.testing.assert_close(ramp, ramp[:1].expand(16, 16), rtol=0, atol=1e-5)
    assert (ramp[0, 1:] > ramp[0, :-1]).all()
    torch.testing.assert_close(ramp[0], torch.arange(16).float().add(0.5).div(2).sub(0.5), rtol=0, atol=0.15)
    torch.testing.assert_close(table, table[:, :1] * torch.arange(1, table.shape[1] + 1).float(), rtol=1e-5, atol=1e-5)
    assert model.vision.dino.embeddings.position_embeddings.shape[1] == 1 + 256
    torch.testing.assert_close(model.vision.dino.embeddings.position_embeddings[:, :1], dino_class)
    assert not any(p.requires_grad for p in model.vision.dino.parameters())
    assert all(p.requires_grad for p in model.vision.siglip.parameters())
    torch.testing.assert_close(model.visual_positions, patch_position_encoding(16, 3))
    torch.testing.assert_close(model.pixel_encoder.patch_positions,
                               patch_position_encoding(16, model.config.pixel_where_octaves))

    x = example_inputs(model.config, batch_size=2)  # 224 px
    with torch.no_grad():
        actions = model(**x).actions
    assert torch.isfinite(actions).all()
    model.save_pretrained(tmp_path)
    loaded = PixelVLA.from_pretrained(tmp_path)
    assert loaded.config.image_size == 224
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).actions, actions)
    model.resize_images(224)  # the current size: no-op
    with pytest.raises(ValueError, match="multiple of patch_size 14"):
        model.resize_images(230)
