"""sensor_msgs/Image and CompressedImage <-> numpy without cv_bridge (not installable for ROS 2 from PyPI).

Compressed images are what image_transport's `compressed` plugin publishes on `<topic>/compressed`:
JPEG or PNG bytes, `format` such as "rgb8; jpeg compressed bgr8" (Pillow decodes them). A camera frame
is checked when it arrives (`CameraFrame.received`: sizes from the header, no pixel touched) and
decoded only when a model uses it (`CameraFrame.rgb`): a node that receives 30 frames a second and
uses 5 converts 5.

Decoding and its checks are pixelvla_robots.images (ROS-free, shared with the bag readers and labeling);
this module adds what needs the ROS message classes. Every check a camera driver or an operator tool can fail
raises `ImageError` with a message a person can act on; nodes catch it, report it in their status and
publish nothing from that input.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from pixelvla_robots.images import (  # noqa: F401  (the decoder, also imported from here by the nodes)
    COMPRESSED_FORMATS, ImageError, compressed_size, compressed_to_rgb, image_size, image_to_mono, image_to_rgb,
)

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
            height, width = image_size(msg)
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


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90, header=None) -> CompressedImage:
    """(H, W, 3) uint8 RGB -> a CompressedImage as image_transport's `compressed` plugin publishes it."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format=COMPRESSED_FORMATS[fmt], **({"quality": quality} if fmt == "jpeg" else {}))
    msg = CompressedImage(format=f"rgb8; {fmt} compressed rgb8", data=buffer.getvalue())
    if header is not None:
        msg.header = header
    return msg


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
