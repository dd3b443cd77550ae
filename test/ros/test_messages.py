"""The package's messages: serialization round trips in-process and between two processes over DDS."""
import subprocess
import sys
import textwrap

import pytest
from geometry_msgs.msg import Point
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image

from pixelvla_ros.msg import ActionChunk, PolicyStatus, VisualPrompt

pytestmark = pytest.mark.ros


def sample_messages():
    chunk = ActionChunk(
        horizon=2, action_dim=7, dt=0.2, actions=[0.01 * i for i in range(14)],
        dimension_names=["x", "y", "z", "roll", "pitch", "yaw", "gripper"],
        action_space="ee_delta", model_id="tiny-untrained", inference_latency=0.0123, sequence=41,
    )
    chunk.header.stamp.sec, chunk.header.stamp.nanosec, chunk.header.frame_id = 17, 250_000_000, "wx250s/base_link"
    mask = Image(height=2, width=3, encoding="mono8", step=3, data=bytes([0, 255, 0, 255, 255, 0]))
    prompt = VisualPrompt(type=VisualPrompt.BOX, points=[Point(x=10.0, y=20.0), Point(x=50.5, y=60.0)],
                          labels=[1, 0], mask=mask, prompt_id="click-7")
    prompt.header.frame_id = "camera_optical"
    status = PolicyStatus(state=PolicyStatus.ACTIVE, backend="onnxruntime", model_id="m", last_latency=0.02,
                          mean_latency=0.021, p99_latency=0.05, frames_received=100, frames_used=40,
                          frames_dropped=60, last_error="unsupported encoding 16UC1")
    return [chunk, prompt, status]


def test_constants_are_distinct():
    assert len({VisualPrompt.POINT, VisualPrompt.LINE, VisualPrompt.BOX, VisualPrompt.MASK}) == 4
    assert len({PolicyStatus.UNCONFIGURED, PolicyStatus.INACTIVE, PolicyStatus.ACTIVE, PolicyStatus.ERROR}) == 4


@pytest.mark.parametrize("msg", sample_messages(), ids=lambda m: type(m).__name__)
def test_serialization_round_trip(msg):
    data = serialize_message(msg)
    assert isinstance(data, bytes) and len(data) > 0
    assert deserialize_message(data, type(msg)) == msg


PUBLISHER = textwrap.dedent(
    """
    import sys, time
    import rclpy
    from rclpy.qos import QoSProfile, DurabilityPolicy, ReliabilityPolicy
    sys.path.insert(0, {test_dir!r})
    from ros.test_messages import sample_messages
    rclpy.init()
    node = rclpy.create_node("sample_publisher")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pubs = [(node.create_publisher(type(m), "/sample/" + type(m).__name__, qos), m) for m in sample_messages()]
    for pub, msg in pubs:
        pub.publish(msg)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    """
)


def test_messages_cross_processes_over_dds(ros_node):
    from pathlib import Path

    from pixelvla_ros import qos

    expected = sample_messages()
    received = {type(m).__name__: ros_node.collect(type(m), "/sample/" + type(m).__name__, qos.LATCHED) for m in expected}
    test_dir = str(Path(__file__).resolve().parents[1])
    child = subprocess.Popen([sys.executable, "-c", PUBLISHER.format(test_dir=test_dir)])
    try:
        assert ros_node.spin_until(lambda: all(received.values()), timeout=25), "not every message type arrived"
    finally:
        child.kill()
        child.wait()
    for msg in expected:
        assert received[type(msg).__name__][0] == msg
