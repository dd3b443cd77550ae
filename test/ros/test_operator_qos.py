"""Operator-facing topics reach the policy and the segmenter from both kinds of publisher: a latched one
(transient local) started before the node, and the `ros2 topic pub` an operator types (reliable + volatile,
the CLI's default QoS). A message from a latched publisher, which both of the node's subscriptions
receive, is handled once. Both nodes refuse the same prompt, and keep their previous target."""
import subprocess
import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Point
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image
from std_msgs.msg import String

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import image_to_mono, mono_to_image, rgb_to_image
from pixelvla_ros.msg import ActionChunk, VisualPrompt

pytestmark = pytest.mark.ros
CLI = QoSProfile(depth=10)  # what `ros2 topic pub` uses by default: reliable, volatile
H, W = 120, 160


def start(module, *params):
    args = [sys.executable, "-m", f"pixelvla_ros.nodes.{module}", "--ros-args"]
    for p in params:
        args += ["-p", p]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def frame(sec):
    msg = rgb_to_image(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8))
    msg.header.stamp.sec = sec
    return msg


def test_policy_hears_a_latched_publisher_that_was_first_and_the_cli(ros_node):
    latched = ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED)
    latched.publish(String(data="put the red cube on the plate"))  # before the node exists
    cli = {topic: ros_node.publisher(kind, topic, CLI) for topic, kind in
           [("/pixelvla/instruction", String), ("/pixelvla/prompt", VisualPrompt), ("/pixelvla/mask", Image)]}
    chunks = ros_node.collect(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND)
    camera = ros_node.publisher(Image, "/camera/image_raw", qos.SENSOR)
    node = start("policy_node", "model_path:=untrained", "control_rate_hz:=0.0")
    sec = iter(range(1000, 2000))

    def next_chunk():
        """The chunk for a new frame (same pixels, a new stamp)."""
        msg = frame(next(sec))
        mine = lambda: [c for c in chunks if c.header.stamp.sec == msg.header.stamp.sec]  # noqa: E731
        assert ros_node.spin_until(lambda: (camera.publish(msg), mine())[1], timeout=60), "no chunk"
        return np.array(chunks[-1].actions)

    def changes(publish, before):
        """publish(); then chunks differ from `before` (the node has used the message)."""
        publish()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after = next_chunk()
            if not np.allclose(after, before):
                return after
        raise AssertionError("the message never changed the chunks")

    try:
        first = next_chunk()  # the latched instruction reached the late node
        assert ros_node.spin_until(lambda: all(p.get_subscription_count() > 0 for p in cli.values()), timeout=30)
        bowl = String(data="pick up the bowl")
        second = changes(lambda: [cli["/pixelvla/instruction"].publish(bowl) for _ in range(2)], first)  # the CLI repeats
        box = VisualPrompt(type=VisualPrompt.BOX, points=[Point(x=40.0, y=30.0), Point(x=90.0, y=80.0)], prompt_id="b")
        third = changes(lambda: cli["/pixelvla/prompt"].publish(box), second)
        mask = np.zeros((H, W), bool)
        mask[30:80, 40:90] = True
        fourth = changes(lambda: cli["/pixelvla/mask"].publish(mono_to_image(mask)), third)
        changes(lambda: latched.publish(String(data="put the green cube in the bowl")), fourth)
        ros_node.spin_for(0.5)
    finally:
        node.terminate()
        out, _ = node.communicate(timeout=30)
    assert node.returncode == 0, out
    # each instruction once: the latched publisher's reached both subscriptions, the CLI's came twice
    for instruction in ("put the red cube on the plate", "pick up the bowl", "put the green cube in the bowl"):
        assert out.count(f"instruction: {instruction!r}") == 1, out
    assert out.count("prompt 'b' received") == 1, out
    assert "incompatible QoS" not in out, out  # the CLI does not match the transient-local twin: expected, not logged


def segmenter_errors(diagnostics, text):
    return [s for a in diagnostics for s in a.status
            if s.name == "pixelvla: segmenter" and s.level == DiagnosticStatus.ERROR and text in s.message]


def test_segmenter_hears_both_publishers_and_refuses_what_the_policy_refuses(ros_node):
    point = VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=60.5, y=50.5)], prompt_id="latched")
    ros_node.publisher(VisualPrompt, "/pixelvla/prompt", qos.LATCHED).publish(point)  # before the node exists
    cli = ros_node.publisher(VisualPrompt, "/pixelvla/prompt", CLI)
    masks = ros_node.collect(Image, "/pixelvla/mask", qos.LATCHED)
    diagnostics = ros_node.collect(DiagnosticArray, "/diagnostics", 10)
    camera = ros_node.publisher(Image, "/camera/image_raw", qos.SENSOR)
    node = start("segmenter_node", "rate_hz:=0.0")

    def mask_for(sec):
        msg = frame(sec)
        assert ros_node.spin_until(lambda: (camera.publish(msg), [m for m in masks if m.header.stamp.sec == sec])[1],
                                   timeout=60), f"no mask for {sec}"
        return image_to_mono([m for m in masks if m.header.stamp.sec == sec][0])

    try:
        mask_for(1001)  # the latched prompt reached the late node
        assert ros_node.spin_until(lambda: cli.get_subscription_count() > 0, timeout=30)
        target = np.zeros((H, W), bool)
        target[20:50, 30:70] = True
        for _ in range(2):  # `ros2 topic pub` repeats its message: the same prompt again does not restart the track
            cli.publish(VisualPrompt(type=VisualPrompt.MASK, mask=mono_to_image(target), prompt_id="cli"))
        # SAM 2 passes a mask prompt through on the frame it is applied to. A frame is published until its first
        # mask comes back, so the prompt may land on a later copy of it, whose mask can arrive after the next
        # frame's: look for the target among all masks received.
        sec = 1002
        while not any(np.array_equal(image_to_mono(m) > 0, target) for m in list(masks)):
            mask_for(sec)
            sec += 1
            assert sec < 1100, "the CLI's prompt never reached the segmenter"
        five = VisualPrompt(type=VisualPrompt.POINT, prompt_id="five",
                            points=[Point(x=10.5 + 10 * k, y=20.5) for k in range(5)])
        cli.publish(five)  # the policy's model takes 4: both nodes refuse it
        assert ros_node.spin_until(lambda: segmenter_errors(diagnostics, "at most 4"), timeout=30)
        mask_for(sec + 1)  # the track goes on
    finally:
        node.terminate()
        out, _ = node.communicate(timeout=30)
    assert node.returncode == 0, out
    assert out.count("prompt 'latched' received") == 1 and out.count("prompt 'cli' received") == 1, out
