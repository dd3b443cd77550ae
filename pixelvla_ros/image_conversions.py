"""sensor_msgs/Image and CompressedImage <-> numpy without cv_bridge (not installable for ROS 2 from PyPI).

Compressed images are what image_transport's `compressed` plugin publishes on `<topic>/compressed`:
JPEG or PNG bytes, `format` such as "rgb8; jpeg compressed bgr8" (Pillow decodes them). A camera frame
is checked when it arrives (`CameraFrame.received`: sizes from the header, no pixel touched) and
decoded only when a model uses it (`CameraFrame.rgb`): a node that receives 30 frames a second and
uses 5 converts 5.

Every check a camera driver or an operator tool can fail raises `ImageError` with a message a
person can act on; nodes catch it, report it in their status and publish nothing from that input.

Byte order: an image flagged `is_bigendian` is refused whatever its encoding. For the 8-bit encodings
supported here the flag changes nothing, so a driver that sets it is misconfigured or sends another
layout than it names; an operator fixes the driver rather than have the policy guess.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

# encoding -> channels; all are 8 bits per channel.
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
MAX_PIXELS = 4096 * 4096  # larger frames are rejected rather than converted (memory, latency)
MAX_SIDE = 8192  # px: no camera the models are used with is wider or taller
MAX_ASPECT = 8.0  # long side / short side: the models squash every frame to a square; 2x100000 is not a camera


class ImageError(ValueError):
    """An image message that cannot be used; the message says why."""


COMPRESSED_FORMATS = {"jpeg": "JPEG", "png": "PNG"}  # image_transport's names -> Pillow's
TRANSPORTS = ("raw", "compressed")  # image_transport plugins a camera input can read


@dataclass
class CameraFrame:
    """A camera message as received, checked, decoded on first use of `rgb`."""

    msg: Image | CompressedImage
    height: int                 # px
    width: int                  # px
    _rgb: np.ndarray | None = field(default=None, repr=False)

    @staticmethod
    def received(msg: Image | CompressedImage) -> "CameraFrame":
        """Check a camera message without decoding it; ImageError says what is wrong."""
        if isinstance(msg, CompressedImage):
            height, width = compressed_size(msg)
        else:
            height, width = _checked_view(msg).shape[:2]
        return CameraFrame(msg, height, width)

    @property
    def header(self) -> Header:
        return self.msg.header  # the camera's stamp and optical frame

    @property
    def rgb(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB; ImageError if the pixels cannot be decoded (a corrupt JPEG)."""
        if self._rgb is None:
            self._rgb = compressed_to_rgb(self.msg) if isinstance(self.msg, CompressedImage) else image_to_rgb(self.msg)
        return self._rgb


def _check_size(height: int, width: int) -> None:
    if height == 0 or width == 0:
        raise ImageError(f"empty image ({width}x{height})")
    if height * width > MAX_PIXELS or max(height, width) > MAX_SIDE:
        raise ImageError(f"image {width}x{height} is larger than accepted (at most {MAX_SIDE} px a side and "
                         f"{MAX_PIXELS} pixels)")
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise ImageError(f"image {width}x{height} is more than {MAX_ASPECT:g} times as wide as high (or high as "
                         "wide): not a camera frame")


def _open_compressed(msg: CompressedImage):
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


def compressed_size(msg: CompressedImage) -> tuple[int, int]:
    """(H, W) px of a compressed image, from its file header (nothing decoded)."""
    image = _open_compressed(msg)
    return image.height, image.width


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """A JPEG/PNG CompressedImage -> (H, W, 3) uint8 RGB (grey and RGBA converted)."""
    image = _open_compressed(msg)
    try:
        return np.array(image.convert("RGB"))  # a writable copy (torch refuses read-only arrays)
    except OSError as exc:  # truncated or corrupt data shows when the pixels are decoded
        raise ImageError(f"compressed image could not be decoded: {exc}") from exc


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90, header=None) -> CompressedImage:
    """(H, W, 3) uint8 RGB -> a CompressedImage as image_transport's `compressed` plugin publishes it."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format=COMPRESSED_FORMATS[fmt], **({"quality": quality} if fmt == "jpeg" else {}))
    msg = CompressedImage(format=f"rgb8; {fmt} compressed rgb8", data=buffer.getvalue())
    if header is not None:
        msg.header = header
    return msg


def _checked_view(msg: Image) -> np.ndarray:
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


def image_to_rgb(msg: Image) -> np.ndarray:
    """Any supported encoding -> (H, W, 3) uint8 RGB, C-contiguous."""
    pixels = _checked_view(msg)
    if msg.encoding == "mono8":
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    if msg.encoding.startswith("bgr"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


def image_to_mono(msg: Image) -> np.ndarray:
    """A mono8 image -> (H, W) uint8 (masks)."""
    if msg.encoding != "mono8":
        raise ImageError(f"a mask must be mono8, got {msg.encoding!r}")
    return np.ascontiguousarray(_checked_view(msg)[:, :, 0])


def rgb_to_image(rgb: np.ndarray, header=None) -> Image:
    """(H, W, 3) uint8 RGB -> an rgb8 Image."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0, step=rgb.shape[1] * 3)
    msg.data = np.ascontiguousarray(rgb).tobytes()
    if header is not None:
        msg.header = header
    return msg


def mono_to_image(mask: np.ndarray, header=None) -> Image:
    """(H, W) uint8 or bool -> a mono8 Image (bool True -> 255)."""
    if mask.ndim != 2:
        raise ImageError(f"expected (H, W), got {mask.shape}")
    pixels = (mask.astype(np.uint8) * 255) if mask.dtype == bool else mask.astype(np.uint8, copy=False)
    msg = Image(height=mask.shape[0], width=mask.shape[1], encoding="mono8", is_bigendian=0, step=mask.shape[1])
    msg.data = np.ascontiguousarray(pixels).tobytes()
    if header is not None:
        msg.header = header
    return msg
