"""`pixelvla-launch policy robot:=google_robot`: the policy publishes chunks, no executor starts, the log says why."""
import signal
import subprocess

import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import String

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import rgb_to_image
from pixelvla_ros.msg import ActionChunk
from support import start_launch

pytestmark = pytest.mark.ros


def test_google_robot_policy_publishes_chunks_and_starts_no_executor(ros_node):
    chunks = ros_node.collect(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND)
    image = ros_node.publisher(Image, "/camera/image_raw", qos.SENSOR)
    ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED).publish(String(data="pick up the coke can"))
    frame = rgb_to_image(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    ros_node.node.create_timer(0.2, lambda: image.publish(frame))  # a 5 Hz camera

    runner = start_launch("policy", "robot:=google_robot", "model:=untrained", "console:=false")
    try:
        got_chunks = ros_node.spin_until(lambda: len(chunks) >= 2, timeout=120)
    finally:
        runner.send_signal(signal.SIGINT)
        try:
            out, _ = runner.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            runner.kill()
            out, _ = runner.communicate()
    assert got_chunks, f"no chunks from the policy:\n{out}"
    assert chunks[-1].horizon >= 1 and len(chunks[-1].actions) == chunks[-1].horizon * 7
    assert ("[launch] executor not started: robot_model google_robot has no kinematics in this package: no executor; "
            "send /pixelvla/action_chunk to the robot's own controller") in out, out
    assert "started executor" not in out and "[executor]" not in out, out
    assert "required node" not in out, out  # nothing stopped the stack before the Ctrl-C
