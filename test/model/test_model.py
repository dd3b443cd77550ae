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


def test_target_view_cuts_a_window_around_the_mask_inside_the_image():
    """preprocess_target_view: a square of fraction x the shorter side, centred on the mask's centroid, shifted
    to lie inside the image, cut at the image's resolution; its box in fractions of width and height."""
    import numpy as np

    from pixelvla_model.processing import preprocess_image, preprocess_target_view

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    mask = np.zeros((200, 300), bool)
    mask[90:110, 140:160] = True  # centroid (x, y) = (150, 100) in continuous pixel coordinates
    values, box = preprocess_target_view(image, mask, 0.4, size=112)  # side 80 px
    torch.testing.assert_close(box, torch.tensor([110 / 300, 60 / 200, 190 / 300, 140 / 200]))
    torch.testing.assert_close(values, preprocess_image(image[60:140, 110:190], 112))

    corner = np.zeros((200, 300), bool)
    corner[0:4, 290:300] = True  # near the top-right corner: the window stays inside the image
    _, box = preprocess_target_view(image, corner, 0.4, size=112)
    torch.testing.assert_close(box, torch.tensor([220 / 300, 0.0, 1.0, 80 / 200]))

    for empty in (None, np.zeros((200, 300), bool)):  # no mask: no view
        values, box = preprocess_target_view(image, empty, 0.4, size=112)
        assert not values.any() and not box.any()


def test_target_view_adds_tokens_that_only_a_valid_view_lets_in(tmp_path):
    """enable_target_view: one more set of visual tokens from the window, attended only where the box is
    non-empty; it needs the visual tokens' position term, and saves and loads with the model."""
    import numpy as np

    from pixelvla_model import PixelVLAConfig
    from pixelvla_model.processing import preprocess_target_view

    with pytest.raises(ValueError, match="visual_where_octaves"):
        PixelVLAConfig.from_preset("tiny", target_view=0.4, visual_where_octaves=0)
    torch.manual_seed(0)
    model = PixelVLA(PixelVLAConfig.from_preset("tiny", visual_where_octaves=3)).eval()
    torch.nn.init.normal_(model.visual_where.weight)
    model.enable_target_view(0.4)
    c = model.config
    assert c.target_view == 0.4 and c.prefix_tokens == 2 * c.num_patches + c.pixel_tokens + c.max_prompts
    x = example_inputs(c, batch_size=2)
    image = (x["pixel_values"][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    values, box = preprocess_target_view(image, x["target_mask"][0].numpy(), 0.4, c.image_size)
    x["target_view_values"] = torch.stack([values, torch.rand_like(values)])
    x["target_view_box"] = torch.stack([box, torch.zeros(4)])  # sample 1: no view
    with torch.no_grad():
        out = model(**x)
        assert out.last_hidden_state.shape[1] == x["input_ids"].shape[1] + c.prefix_tokens
        other = dict(x, target_view_values=torch.rand_like(x["target_view_values"]))
        changed = model(**other).actions
    assert not torch.allclose(changed[0], out.actions[0])  # a valid view is read
    torch.testing.assert_close(changed[1], out.actions[1], rtol=0, atol=0)  # an empty box is not
    model.save_pretrained(tmp_path)
    loaded = PixelVLA.from_pretrained(tmp_path)
    assert loaded.config.target_view == 0.4
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).actions, out.actions)
    with pytest.raises(ValueError, match="target_view_values"):
        loaded(**{k: v for k, v in x.items() if not k.startswith("target_view")})


def test_a_model_with_a_target_view_exports_with_its_inputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pixelvla_model import PixelVLAConfig, input_names
    from pixelvla_model.export import check_onnx_parity, export_onnx
    from pixelvla_model.runtime.bundle import io_spec

    torch.manual_seed(0)
    model = PixelVLA(PixelVLAConfig.from_preset("tiny", proprio_dim=7, visual_where_octaves=3, target_view=0.4)).eval()
    torch.nn.init.normal_(model.visual_where.weight)
    names = input_names(model.config)
    assert names[-3:] == ("proprio", "target_view_values", "target_view_box")
    assert [i["name"] for i in io_spec(model.config)[0]] == list(names)
    path = tmp_path / "view.onnx"
    export_onnx(model, path, text_len=(2, 24, 64))
    assert [i.name for i in ort.InferenceSession(str(path)).get_inputs()] == list(names)
    assert check_onnx_parity(model, path, batch_size=1, text_len=30) < 1e-4
