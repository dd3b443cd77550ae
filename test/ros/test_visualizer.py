"""The visualizer draws the mask, the prompts and the projected path, and publishes path markers."""
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import Point
from sensor_msgs.msg import Image, JointState
from visualization_msgs.msg import MarkerArray

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import image_to_rgb, rgb_to_image
from pixelvla_ros.msg import ActionChunk, VisualPrompt
from pixelvla_robots import wx250s
from support import start_launch

pytestmark = pytest.mark.ros
NODE_SET = str(Path(__file__).parent / "node_sets" / "sim_visualizer.nodes.yaml")


def test_overlay_and_markers(ros_node):
    overlays = ros_node.collect(Image, "/pixelvla/overlay", qos.SENSOR)
    raw = ros_node.collect(Image, "/camera/image_raw", qos.SENSOR)
    markers = ros_node.collect(MarkerArray, "/pixelvla/markers")
    runner = start_launch(NODE_SET)

    def pairs():  # (overlay, camera image it was drawn on); best effort: either may have been dropped
        by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in raw}
        return [(o, by_stamp[k]) for o in overlays if (k := (o.header.stamp.sec, o.header.stamp.nanosec)) in by_stamp]

    def drawn(pair) -> float:  # share of the pixels the overlay changed
        overlay, original = pair
        return float(np.any(image_to_rgb(overlay) != image_to_rgb(original), axis=2).mean())

    def place_drawn() -> bool:  # the operator stand-in's place prompt on the plate, in its own colour
        return any(np.all(image_to_rgb(o) == (60, 140, 255), axis=2).sum() >= 9 for o in overlays[-3:])

    try:
        # the first overlays may come before the mask, the prompts and the first chunk reach the visualizer
        assert ros_node.spin_until(lambda: markers and any(drawn(p) > 0.001 for p in pairs()[-3:]), timeout=60), (
            f"{len(overlays)} overlays, {len(markers)} marker arrays; drawn shares {[drawn(p) for p in pairs()[-3:]]}")
        assert ros_node.spin_until(place_drawn, timeout=60), "no overlay shows the place prompt"
    finally:
        runner.send_signal(signal.SIGINT)
        runner.communicate(timeout=30)
    line = markers[-1].markers[0]
    assert line.header.frame_id == "wx250s/base_link" and len(line.points) == 2  # TCP now + one expert action


def test_bad_inputs_never_stop_the_overlays(ros_node):
    """NaN joint states (used to kill the node with a ValueError) and a LINE prompt to x = 1e7 (used to cost
    ~0.4 s and ~0.4 GB per frame): the visualizer warns, keeps the last good state and goes on drawing."""
    node = subprocess.Popen([sys.executable, "-m", "pixelvla_ros.nodes.visualizer_node"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    overlays = ros_node.collect(Image, "/pixelvla/overlay", qos.SENSOR)
    markers = ros_node.collect(MarkerArray, "/pixelvla/markers")
    images = ros_node.publisher(Image, "/camera/image_raw", qos.SENSOR)
    joints = ros_node.publisher(JointState, "/joint_states", qos.SENSOR)
    chunks = ros_node.publisher(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND)
    prompts = ros_node.publisher(VisualPrompt, "/pixelvla/prompt", qos.LATCHED)
    names = list(wx250s.JOINT_NAMES)
    frame = np.zeros((48, 64, 3), np.uint8)

    def joint_state(value: float) -> JointState:
        return JointState(name=names, position=[value] * len(names))

    def chunk(stamp_sec: int) -> ActionChunk:  # the markers carry the chunk's stamp
        msg = ActionChunk(horizon=1, action_dim=7, dt=0.2, actions=[0.01, 0, 0, 0, 0, 0, 1.0])
        msg.header.stamp.sec = stamp_sec
        return msg

    try:
        assert ros_node.spin_until(lambda: ros_node.node.count_subscribers("/pixelvla/action_chunk") > 0, timeout=30)
        # a good joint state first (best effort: repeat until a chunk's path shows it arrived)
        for _ in range(100):
            joints.publish(joint_state(0.0))
            ros_node.spin_for(0.05)
            chunks.publish(chunk(0))
            if ros_node.spin_until(lambda: markers, timeout=0.5):
                break
        assert markers, "the visualizer never published markers for a chunk"

        for _ in range(5):  # NaN joint states, each followed by a chunk: the crash of before
            joints.publish(joint_state(float("nan")))
            ros_node.spin_for(0.1)
            chunks.publish(chunk(1))
            ros_node.spin_for(0.1)
        prompts.publish(VisualPrompt(type=VisualPrompt.LINE, points=[Point(x=0.0, y=5.0), Point(x=1e7, y=5.0)]))

        def drawn_after_bad_input() -> bool:  # the LINE prompt, clipped, across row 5 of a new frame
            msg = rgb_to_image(frame)
            msg.header.frame_id = "after"
            images.publish(msg)
            ros_node.spin_for(0.1)
            return any(o.header.frame_id == "after" and np.all(image_to_rgb(o)[5] == (60, 255, 60)) for o in overlays)

        assert ros_node.spin_until(drawn_after_bad_input, timeout=30), "no overlay with the LINE prompt came"
        assert node.poll() is None, "the visualizer died"
        # the chunks after the NaN joint states got a path from the last good state
        after = [m for m in markers if m.markers[0].header.stamp.sec == 1]
        assert after and np.isfinite([(p.x, p.y, p.z) for p in after[-1].markers[0].points]).all()
    finally:
        node.send_signal(signal.SIGINT)
        out, _ = node.communicate(timeout=30)
    assert node.returncode == 0, out
    assert "ignoring /joint_states with NaN or inf arm joint positions" in out, out


def test_a_compressed_camera_gets_overlays(ros_node):
    """image_transport compressed: PNG frames on /camera/image_raw/compressed give overlays of the same pixels
    (PNG is lossless), stamped as the frame; frames faster than overlay_rate_hz are not drawn."""
    from sensor_msgs.msg import CompressedImage

    from pixelvla_ros.image_conversions import rgb_to_compressed

    node = subprocess.Popen([sys.executable, "-m", "pixelvla_ros.nodes.visualizer_node", "--ros-args",
                             "-p", "image_transport:=compressed", "-p", "overlay_rate_hz:=2.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    overlays = ros_node.collect(Image, "/pixelvla/overlay", qos.SENSOR)
    camera = ros_node.publisher(CompressedImage, "/camera/image_raw/compressed", qos.SENSOR)
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    try:
        assert ros_node.spin_until(lambda: ros_node.node.count_subscribers("/camera/image_raw/compressed") > 0,
                                   timeout=30)
        assert ros_node.node.count_subscribers("/camera/image_raw") == 0
        published = 0
        while published < 40:  # 4 s at 10 Hz: 2 Hz allows about 8 overlays
            msg = rgb_to_compressed(rgb, "png")
            msg.header.stamp.sec = published
            camera.publish(msg)
            published += 1
            ros_node.spin_for(0.1)
        ros_node.spin_for(0.5)
    finally:
        node.send_signal(signal.SIGINT)
        out, _ = node.communicate(timeout=30)
    assert node.returncode == 0, out
    assert overlays, out
    assert all(np.array_equal(image_to_rgb(o), rgb) for o in overlays)  # no prompt, mask or path: the frame as sent
    assert len(overlays) <= 10, f"{len(overlays)} overlays from 40 frames at overlay_rate_hz 2"
