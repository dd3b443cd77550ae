"""Camera images as numpy, without ROS: the one decoder of sensor_msgs/Image and CompressedImage data.

Works on anything shaped like those messages (rclpy's messages in the nodes, rosbags' in the bag readers):
an Image has `encoding`, `height`, `width`, `step`, `is_bigendian`, `data`; a CompressedImage has `format`
("rgb8; jpeg compressed bgr8", as image_transport's `compressed` plugin writes it) and `data` (JPEG or PNG
bytes, decoded with Pillow). Every check a camera driver or a recording can fail raises `ImageError` with a
message a person can act on.

Byte order: an image flagged `is_bigendian` is refused whatever its encoding. For the 8-bit encodings
supported here the flag changes nothing, so a driver that sets it is misconfigured or sends another
layout than it names; an operator fixes the driver rather than have the policy guess.
"""
from __future__ import annotations

import io

import numpy as np

# encoding -> channels; all are 8 bits per channel.
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
MAX_PIXELS = 4096 * 4096  # larger frames are rejected rather than converted (memory, latency)
MAX_SIDE = 8192  # px: no camera the models are used with is wider or taller
MAX_ASPECT = 8.0  # long side / short side: the models squash every frame to a square; 2x100000 is not a camera
COMPRESSED_FORMATS = {"jpeg": "JPEG", "png": "PNG"}  # image_transport's names -> Pillow's


class ImageError(ValueError):
    """An image message that cannot be used; the message says why."""


def image_size(msg) -> tuple[int, int]:
    """(H, W) px of an Image after every check of its header and buffer size (no pixel converted)."""
    return _checked_view(msg).shape[:2]


def _check_size(height: int, width: int) -> None:
    if height == 0 or width == 0:
        raise ImageError(f"empty image ({width}x{height})")
    if height * width > MAX_PIXELS or max(height, width) > MAX_SIDE:
        raise ImageError(f"image {width}x{height} is larger than accepted (at most {MAX_SIDE} px a side and "
                         f"{MAX_PIXELS} pixels)")
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise ImageError(f"image {width}x{height} is more than {MAX_ASPECT:g} times as wide as high (or high as "
                         "wide): not a camera frame")


def _open_compressed(msg):
    """A Pillow image of the message's bytes; only the file header is read until pixels are asked for."""
    from PIL import Image as PILImage, UnidentifiedImageError

    name = next((k for k in COMPRESSED_FORMATS if k in msg.format.lower()), None)
    if name is None or "compresseddepth" in msg.format.lower():
        raise ImageError(f"compressed format {msg.format!r} is not supported: JPEG or PNG, as image_transport's "
                         "`compressed` plugin publishes them (not compressedDepth)")
    try:
        image = PILImage.open(io.BytesIO(bytes(msg.data)), formats=[COMPRESSED_FORMATS[name]])
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"compressed image is not a readable {name.upper()} ({len(msg.data)} bytes): {exc}") from exc
    _check_size(image.height, image.width)
    return image


def compressed_size(msg) -> tuple[int, int]:
    """(H, W) px of a compressed image, from its file header (nothing decoded)."""
    image = _open_compressed(msg)
    return image.height, image.width


def compressed_to_rgb(msg) -> np.ndarray:
    """A JPEG/PNG CompressedImage -> (H, W, 3) uint8 RGB (grey and RGBA converted)."""
    image = _open_compressed(msg)
    try:
        return np.array(image.convert("RGB"))  # a writable copy (torch refuses read-only arrays)
    except OSError as exc:  # truncated or corrupt data shows when the pixels are decoded
        raise ImageError(f"compressed image could not be decoded: {exc}") from exc


def _checked_view(msg) -> np.ndarray:
    """The message's pixels as a (H, W, C) uint8 view of its buffer (no copy), after every check."""
    if msg.encoding not in CHANNELS:
        raise ImageError(f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(CHANNELS)}")
    if msg.is_bigendian:
        raise ImageError(f"a {msg.encoding} image flagged is_bigendian=1: this camera driver's byte-order flag is "
                         "wrong or its layout is not the one it names; publish is_bigendian=0")
    channels = CHANNELS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(height, width)
    if step < width * channels:
        raise ImageError(f"step {step} is smaller than width {width} x {channels} channels ({msg.encoding})")
    data = msg.data
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data, dtype=np.uint8)
    if buffer.size != step * height:
        raise ImageError(f"data has {buffer.size} bytes, expected step {step} x height {height} = {step * height}")
    return buffer.reshape(height, step)[:, : width * channels].reshape(height, width, channels)


def image_to_rgb(msg) -> np.ndarray:
    """Any supported encoding -> (H, W, 3) uint8 RGB, C-contiguous."""
    pixels = _checked_view(msg)
    if msg.encoding == "mono8":
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    if msg.encoding.startswith("bgr"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


def image_to_mono(msg) -> np.ndarray:
    """A mono8 image -> (H, W) uint8 (masks)."""
    if msg.encoding != "mono8":
        raise ImageError(f"a mask must be mono8, got {msg.encoding!r}")
    return np.ascontiguousarray(_checked_view(msg)[:, :, 0])
