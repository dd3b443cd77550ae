"""The segmenter node over DDS: prompt + frames -> a mono8 mask stamped with its image, clear, bad input refused."""
import subprocess
import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Point
from sensor_msgs.msg import Image

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import image_to_mono, mono_to_image, rgb_to_image
from pixelvla_ros.msg import VisualPrompt

pytestmark = pytest.mark.ros

H, W = 96, 128


@pytest.fixture
def segmenter(ros_node):
    node = subprocess.Popen([sys.executable, "-m", "pixelvla_ros.nodes.segmenter_node", "--ros-args",
                             "-p", "rate_hz:=0.0", "-p", "threads:=1", "-r", "__node:=segmenter"])
    io = {
        "masks": ros_node.collect(Image, "/pixelvla/mask", qos.LATCHED),
        "diagnostics": ros_node.collect(DiagnosticArray, "/diagnostics", 10),
        "image": ros_node.publisher(Image, "/camera/image_raw", qos.SENSOR),
        "prompt": ros_node.publisher(VisualPrompt, "/pixelvla/prompt", qos.LATCHED),
    }
    assert ros_node.spin_until(lambda: statuses(io), timeout=60), "the segmenter never published diagnostics"
    yield ros_node, io
    node.terminate()
    node.wait(timeout=20)
    assert node.returncode == 0, f"segmenter exited with {node.returncode}"


def statuses(io):
    return [s for a in io["diagnostics"] for s in a.status if s.name == "pixelvla: segmenter"]


def frame(sec, seed=0):
    msg = rgb_to_image(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8))
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, 456
    msg.header.frame_id = "camera_color_optical_frame"
    return msg


def target():
    m = np.zeros((H, W), bool)
    m[30:60, 40:90] = True
    return m


def masks_for(io, sec):
    return [m for m in io["masks"] if m.header.stamp.sec == sec]


def mask_for(probe, io, msg, timeout=30.0):
    """Publish `msg` until a mask stamped with its stamp arrives; return that mask message."""
    sec = msg.header.stamp.sec
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not masks_for(io, sec):
        io["image"].publish(msg)
        probe.spin_for(0.2)
    found = masks_for(io, sec)
    assert found, f"no mask for the image stamped {sec}"
    return found[0]


def test_prompt_and_frames_give_tracked_masks_with_the_image_stamp_and_size(segmenter):
    probe, io = segmenter
    box = VisualPrompt(type=VisualPrompt.BOX, points=[Point(x=40.0, y=30.0), Point(x=90.0, y=60.0)], prompt_id="b1")
    io["prompt"].publish(box)
    probe.spin_for(0.3)
    first = mask_for(probe, io, frame(1001))
    assert (first.encoding, first.height, first.width, first.step) == ("mono8", H, W, W)
    assert first.header.stamp.nanosec == 456 and first.header.frame_id == "camera_color_optical_frame"
    assert set(np.unique(image_to_mono(first)).tolist()) <= {0, 255}
    # a mask prompt passes through on its frame and is tracked on the next ones
    io["prompt"].publish(VisualPrompt(type=VisualPrompt.MASK, mask=mono_to_image(target()), prompt_id="m1"))
    probe.spin_for(0.3)
    prompted = mask_for(probe, io, frame(1002))
    assert np.array_equal(image_to_mono(prompted) > 0, target())
    tracked = mask_for(probe, io, frame(1003, seed=1))
    assert tracked.height == H and tracked.width == W and image_to_mono(tracked).any()


def test_clear_publishes_an_empty_mask(segmenter):
    probe, io = segmenter
    io["prompt"].publish(VisualPrompt(type=VisualPrompt.MASK, mask=mono_to_image(target()), prompt_id="m2"))
    probe.spin_for(0.3)
    assert image_to_mono(mask_for(probe, io, frame(2001))).any()
    io["prompt"].publish(VisualPrompt(type=VisualPrompt.POINT, prompt_id="clear"))
    assert probe.spin_until(lambda: any(not image_to_mono(m).any() for m in io["masks"]), timeout=10)
    empty = [m for m in io["masks"] if not image_to_mono(m).any()][0]
    assert (empty.height, empty.width, empty.header.stamp.sec) == (H, W, 2001)  # the latest frame's
    count = len(io["masks"])
    for sec in (2002, 2003):  # no prompt: frames give no masks
        io["image"].publish(frame(sec))
        probe.spin_for(0.5)
    assert len(io["masks"]) == count


BAD_PROMPTS = [
    (VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=500.0, y=3.0)], prompt_id="p1"), "outside"),
    (VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=float("nan"), y=3.0)], prompt_id="p2"), "NaN"),
    (VisualPrompt(type=VisualPrompt.BOX, points=[Point(x=5.0, y=5.0)], prompt_id="p3"), "exactly 2 corner"),
    (VisualPrompt(type=VisualPrompt.MASK, mask=mono_to_image(np.ones((10, 10), bool)), prompt_id="p4"), "mask is 10x10"),
]


def wait_error(probe, io, text):
    assert probe.spin_until(lambda: any(s.level == DiagnosticStatus.ERROR and text in s.message
                                        for s in statuses(io)), timeout=20), f"no diagnostics error with {text!r}"


def test_bad_prompts_and_images_are_refused_and_the_node_lives_on(segmenter):
    probe, io = segmenter
    for i, (prompt, error) in enumerate(BAD_PROMPTS):  # one node for all cases: each start costs seconds
        io["prompt"].publish(prompt)
        probe.spin_for(0.3)
        io["image"].publish(frame(3001 + i))
        wait_error(probe, io, error)
    probe.spin_for(0.5)
    assert not io["masks"]
    bad = Image(height=4, width=4, encoding="16UC1", step=8, data=bytes(32))
    bad.header.stamp.sec = 3100
    io["image"].publish(bad)
    wait_error(probe, io, "unsupported image encoding")
    good = VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=60.0, y=50.0)], prompt_id="good")
    io["prompt"].publish(good)
    probe.spin_for(0.3)
    mask_for(probe, io, frame(3101))  # still alive and working
    assert not masks_for(io, 3100) and not [m for m in io["masks"] if 3001 <= m.header.stamp.sec < 3100]
    # a bad prompt while tracking is refused and the running track goes on
    io["prompt"].publish(BAD_PROMPTS[0][0])
    probe.spin_for(0.3)
    io["image"].publish(frame(3102))
    probe.spin_for(0.3)
    mask_for(probe, io, frame(3103))
