"""sensor_msgs/Image <-> numpy without cv_bridge (not installable for ROS 2 from PyPI).

Every check a camera driver or an operator tool can fail raises `ImageError` with a message a
person can act on; nodes catch it, report it in their status and publish nothing from that input.

Byte order: an image flagged `is_bigendian` is refused whatever its encoding. For the 8-bit encodings
supported here the flag changes nothing, so a driver that sets it is misconfigured or sends another
layout than it names; an operator fixes the driver rather than have the policy guess.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

# encoding -> channels; all are 8 bits per channel.
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
MAX_PIXELS = 4096 * 4096  # larger frames are rejected rather than converted (memory, latency)
MAX_SIDE = 8192  # px: no camera the models are used with is wider or taller
MAX_ASPECT = 8.0  # long side / short side: the models squash every frame to a square; 2x100000 is not a camera


class ImageError(ValueError):
    """An image message that cannot be used; the message says why."""


@dataclass
class Frame:
    """A camera frame converted for the models."""

    rgb: np.ndarray     # (H, W, 3) uint8
    header: Header      # the camera image's header (stamp, optical frame)


def _checked_view(msg: Image) -> np.ndarray:
    """The message's pixels as a (H, W, C) uint8 view of its buffer (no copy), after every check."""
    if msg.encoding not in CHANNELS:
        raise ImageError(f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(CHANNELS)}")
    if msg.is_bigendian:
        raise ImageError(f"a {msg.encoding} image flagged is_bigendian=1: this camera driver's byte-order flag is "
                         "wrong or its layout is not the one it names; publish is_bigendian=0")
    channels = CHANNELS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageError(f"empty image ({width}x{height})")
    if height * width > MAX_PIXELS or max(height, width) > MAX_SIDE:
        raise ImageError(f"image {width}x{height} is larger than accepted (at most {MAX_SIDE} px a side and "
                         f"{MAX_PIXELS} pixels)")
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise ImageError(f"image {width}x{height} is more than {MAX_ASPECT:g} times as wide as high (or high as "
                         "wide): not a camera frame the model can use")
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
