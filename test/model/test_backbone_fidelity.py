"""What the paper preset and the image preprocessing share with OpenVLA's backbone: preset values without
the from-scratch additions, and Pillow's Lanczos resize (OpenVLA's training images) with an optional
centre crop."""
import numpy as np
import pytest
import torch
from PIL import Image

from pixelvla_model import PixelVLAConfig, PixelVLAProcessor, Point, build_byte_tokenizer
from pixelvla_model.processing import center_crop_box, preprocess_image, preprocess_mask


def test_paper_preset_has_llama2_eps_and_no_from_scratch_additions():
    c = PixelVLAConfig.from_preset("prismatic-7b")
    assert c.rms_norm_eps == 1e-5 and c.pixel_where_octaves == 0
    assert c == PixelVLAConfig(preset="prismatic-7b")  # the dataclass defaults are the paper's model
    for small in ("tiny", "small"):  # the small presets keep what their checkpoints were trained with
        s = PixelVLAConfig.from_preset(small)
        assert s.pixel_where_octaves == 6 and s.rms_norm_eps == 1e-6
    # the addition stays an option for any model
    assert PixelVLAConfig.from_preset("prismatic-7b", pixel_where_octaves=6).pixel_where_octaves == 6


def _test_image(h=480, w=640) -> np.ndarray:
    """Smooth gradients, a sharp-edged square and noise: resize filters differ on each."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], -1).astype(np.int32)
    img[h // 3: h // 2, w // 4: w // 2] = (250, 10, 10)
    return np.clip(img + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)


def test_resize_is_pillows_lanczos():
    img = _test_image()
    x = preprocess_image(img, 224)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    expected = np.asarray(Image.fromarray(img).resize((224, 224), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(np.rint(x.permute(1, 2, 0).numpy() * 255).astype(np.uint8), expected)
    bicubic = np.asarray(Image.fromarray(img).resize((224, 224), Image.Resampling.BICUBIC))
    assert (bicubic != expected).any()  # the check tells the filters apart
    # an image already at the input size is only scaled to [0, 1]
    small = _test_image(224, 224)
    np.testing.assert_array_equal(np.rint(preprocess_image(small).permute(1, 2, 0).numpy() * 255), small)


def test_center_crop_keeps_the_centre_area_then_resizes():
    img = _test_image()
    rows, cols = center_crop_box(img.shape[:2], 0.9)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (455, 607)  # sqrt(0.9) of each side
    assert rows.start == (480 - 455) // 2 and cols.start == (640 - 607) // 2
    expected = np.asarray(Image.fromarray(img[rows, cols]).resize((224, 224), Image.Resampling.LANCZOS))
    got = np.rint(preprocess_image(img, 224, center_crop=0.9).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)
    mask = np.zeros(img.shape[:2], bool)
    mask[:10] = True  # the top rows: cut away by the crop
    assert preprocess_mask(mask, img.shape[:2], 224, center_crop=0.9).sum() == 0
    assert preprocess_mask(mask, img.shape[:2], 224).sum() > 0
    with pytest.raises(ValueError, match="area fraction"):
        preprocess_image(img, 224, center_crop=1.5)


def test_processor_crops_images_and_masks_and_refuses_prompts_with_a_crop():
    config = PixelVLAConfig.from_preset("tiny")
    img = _test_image()
    processor = PixelVLAProcessor(config, build_byte_tokenizer(), center_crop=0.9)
    batch = processor([img], ["pick up the cup"])
    torch.testing.assert_close(batch["pixel_values"][0], preprocess_image(img, 224, center_crop=0.9))
    with pytest.raises(ValueError, match="center_crop"):
        processor([img], ["pick up the cup"], prompts=[[Point(320.0, 240.0)]])
