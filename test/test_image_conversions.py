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


def test_compressed_images_decode_as_image_transport_publishes_them():
    from pixelvla_ros.image_conversions import CameraFrame, compressed_to_rgb, rgb_to_compressed

    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([x * 4, y * 5, x + y], axis=-1).astype(np.uint8)  # smooth, like a camera picture
    assert np.array_equal(compressed_to_rgb(rgb_to_compressed(rgb, "png")), rgb)
    jpeg = rgb_to_compressed(rgb, "jpeg", quality=95)
    assert jpeg.format == "rgb8; jpeg compressed rgb8"
    frame = CameraFrame.received(jpeg)
    assert (frame.height, frame.width) == (48, 64) and frame._rgb is None  # checked, not decoded
    assert frame.rgb.shape == (48, 64, 3) and np.abs(frame.rgb.astype(int) - rgb).mean() < 3


@pytest.mark.parametrize(
    "fmt, data, message",
    [
        ("16UC1; compressedDepth png", b"\x89PNG", "not supported"),
        ("rgb8; jpeg compressed bgr8", b"not a jpeg at all", "not a readable JPEG"),
    ],
)
def test_unreadable_compressed_images_are_refused(fmt, data, message):
    from sensor_msgs.msg import CompressedImage

    from pixelvla_ros.image_conversions import CameraFrame

    with pytest.raises(ImageError, match=message):
        CameraFrame.received(CompressedImage(format=fmt, data=data))


def test_a_truncated_jpeg_is_refused_when_decoded():
    from pixelvla_ros.image_conversions import CameraFrame, rgb_to_compressed

    jpeg = rgb_to_compressed(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    jpeg.data = bytes(jpeg.data)[: len(jpeg.data) // 2]
    frame = CameraFrame.received(jpeg)  # the header is intact
    with pytest.raises(ImageError, match="could not be decoded"):
        frame.rgb
