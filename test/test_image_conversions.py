"""Image <-> numpy: every encoding, row padding, and each malformed message rejected clearly."""
import numpy as np
import pytest
from sensor_msgs.msg import Image

from pixelvla_ros.image_conversions import ImageError, image_to_mono, image_to_rgb, mono_to_image, rgb_to_image

RGB = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)


def make(encoding, pixels, pad=0):
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, step=rows.shape[1], data=rows.tobytes())


@pytest.mark.parametrize("pad", [0, 3])
def test_every_encoding_gives_rgb(pad):
    assert np.array_equal(image_to_rgb(make("rgb8", RGB, pad)), RGB)
    assert np.array_equal(image_to_rgb(make("bgr8", RGB[:, :, ::-1].copy(), pad)), RGB)
    alpha = np.full((4, 5, 1), 7, np.uint8)
    assert np.array_equal(image_to_rgb(make("rgba8", np.concatenate([RGB, alpha], 2), pad)), RGB)
    assert np.array_equal(image_to_rgb(make("bgra8", np.concatenate([RGB[:, :, ::-1], alpha], 2), pad)), RGB)
    gray = RGB[:, :, :1].copy()
    assert np.array_equal(image_to_rgb(make("mono8", gray, pad)), np.repeat(gray, 3, 2))


def test_round_trips():
    assert np.array_equal(image_to_rgb(rgb_to_image(RGB)), RGB)
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2] = True
    assert np.array_equal(image_to_mono(mono_to_image(mask)) > 0, mask)


@pytest.mark.parametrize(
    "msg, message",
    [
        (Image(height=2, width=2, encoding="16UC1", step=4, data=bytes(8)), "unsupported image encoding '16UC1'"),
        (Image(height=0, width=0, encoding="rgb8", step=0, data=b""), "empty image"),
        (Image(height=2, width=2, encoding="rgb8", step=4, data=bytes(8)), "step 4 is smaller than width 2"),
        (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(10)), "data has 10 bytes, expected"),
        (Image(height=5000, width=5000, encoding="mono8", step=5000, data=b""), "larger than"),
        (Image(height=2, width=100000, encoding="rgb8", step=300000, data=bytes(600000)), "larger than accepted"),
        (Image(height=2, width=4000, encoding="rgb8", step=12000, data=bytes(24000)), "more than 8 times as wide"),
        (Image(height=4, width=4, encoding="mono16", is_bigendian=1, step=8, data=bytes(32)),
         r"unsupported image encoding 'mono16'"),
        (Image(height=4, width=4, encoding="rgb8", is_bigendian=1, step=12, data=bytes(48)), "is_bigendian=1"),
    ],
)
def test_malformed_images_are_rejected(msg, message):
    with pytest.raises(ImageError, match=message):
        image_to_rgb(msg)


def test_mask_must_be_mono8():
    with pytest.raises(ImageError, match="mono8"):
        image_to_mono(make("rgb8", RGB))
