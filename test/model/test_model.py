import pytest
import torch

from pixelvla_model import INPUT_NAMES, PixelVLA, example_inputs


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
