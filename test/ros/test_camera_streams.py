"""Real camera streams into the policy node over DDS: 640x480 at 30 Hz, raw and compressed (JPEG)."""
import subprocess
import sys
import time

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from pixelvla_ros import qos
from pixelvla_ros.benchmarks import synthetic_frame
from pixelvla_ros.image_conversions import compressed_to_rgb, rgb_to_compressed, rgb_to_image
from pixelvla_ros.msg import ActionChunk, PolicyStatus
from pixelvla_ros.node_base import stamp_seconds

pytestmark = pytest.mark.ros

INSTRUCTION = "put the red cube on the plate"


def start_policy(name: str, *params: str) -> subprocess.Popen:
    """An untrained tiny policy node (deterministic weights) named `name`, chunks on /<name>/action_chunk."""
    args = [sys.executable, "-m", "pixelvla_ros.nodes.policy_node", "--ros-args", "-r", f"__node:={name}",
            "-r", f"/pixelvla/action_chunk:=/{name}/action_chunk", "-r", f"/pixelvla/status:=/{name}/status",
            "-p", "model_path:=untrained"]
    for param in params:
        args += ["-p", param]
    return subprocess.Popen(args)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=20)


def wait_active(probe, status: list) -> None:
    assert probe.spin_until(lambda: any(s.state == PolicyStatus.ACTIVE for s in status), timeout=90), "policy never active"


def test_a_640x480_30hz_stream_gives_chunks_at_the_control_rate_from_the_newest_frame(ros_node):
    """Every chunk is computed from a frame at most one model period (0.2 s at 5 Hz) older than the newest
    frame sent before its inference started; chunks keep coming (a loose count: the machine may be busy)."""
    node = start_policy("policy", "control_rate_hz:=5.0")
    try:
        chunks = []
        ros_node.node.create_subscription(ActionChunk, "/policy/action_chunk",
                                          lambda m: chunks.append((time.monotonic(), m)), qos.COMMAND)
        status = ros_node.collect(PolicyStatus, "/policy/status", qos.LATCHED)
        images = ros_node.publisher(Image, "/camera/image_raw", qos.SENSOR)
        ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED).publish(String(data=INSTRUCTION))
        wait_active(ros_node, status)
        frames = [rgb_to_image(synthetic_frame(640, 480, seed)) for seed in range(3)]
        sent = []  # (monotonic time published, stamp s)
        start, period, seconds = time.monotonic(), 1.0 / 30.0, 5.0
        while time.monotonic() - start < seconds:
            if time.monotonic() >= start + len(sent) * period:
                msg = frames[len(sent) % len(frames)]
                msg.header.stamp = ros_node.node.get_clock().now().to_msg()
                images.publish(msg)
                sent.append((time.monotonic(), stamp_seconds(msg.header.stamp)))
            ros_node.executor.spin_once(timeout_sec=0.002)
        ros_node.spin_for(0.5)
        settled = [(t, m) for t, m in chunks if t > start + 1.0]  # after the first second (warm-up)
        assert len(settled) >= 0.5 * 5.0 * (seconds - 1.0), f"{len(settled)} chunks in {seconds - 1.0} s at 5 Hz"
        sent_times = np.array([t for t, _ in sent])
        sent_stamps = np.array([s for _, s in sent])
        for arrival, chunk in settled:
            started = arrival - chunk.inference_latency
            newest = sent_stamps[np.searchsorted(sent_times, started) - 1]
            age = newest - stamp_seconds(chunk.header.stamp)
            assert age <= 0.2, f"chunk {chunk.sequence} came from a frame {age:.3f} s older than the newest one"
            assert chunk.dt == pytest.approx(0.2)  # one action per control period
        assert ros_node.spin_until(lambda: status[-1].frames_received >= 0.9 * len(sent), timeout=3.0), (
            f"the node received {status[-1].frames_received} of {len(sent)} frames")
    finally:
        stop(node)


def test_compressed_frames_give_the_chunks_of_the_same_raw_frames(ros_node):
    """JPEG on /camera/image_raw/compressed: the chunk equals the raw node's chunk for the decoded pixels,
    and differs from the original frame's chunk by far less than another picture's chunk does."""
    raw_node = start_policy("policy_raw", "control_rate_hz:=0.0")
    jpeg_node = start_policy("policy_jpeg", "control_rate_hz:=0.0", "image_transport:=compressed")
    try:
        got = {"policy_raw": [], "policy_jpeg": []}
        for name, received in got.items():
            ros_node.node.create_subscription(ActionChunk, f"/{name}/action_chunk", received.append, qos.COMMAND)
        status = {name: ros_node.collect(PolicyStatus, f"/{name}/status", qos.LATCHED) for name in got}
        raw = ros_node.publisher(Image, "/camera/image_raw", qos.SENSOR)
        compressed = ros_node.publisher(CompressedImage, "/camera/image_raw/compressed", qos.SENSOR)
        ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED).publish(String(data=INSTRUCTION))
        for name in got:
            wait_active(ros_node, status[name])

        def chunk(publisher, msg, name: str, sec: int) -> np.ndarray:
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec, 0

            def found():
                return [c for c in got[name] if c.header.stamp.sec == sec]

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not found():
                publisher.publish(msg)
                ros_node.spin_for(0.2)
            assert found(), f"{name}: no chunk for the frame stamped {sec}"
            return np.array(found()[0].actions)

        original = synthetic_frame(320, 240, 0)
        other = 255 - original  # a different picture: the scale of a chunk's change when the image changes
        jpeg = rgb_to_compressed(original, "jpeg", quality=90)
        from_jpeg = chunk(compressed, jpeg, "policy_jpeg", 101)
        from_decoded = chunk(raw, rgb_to_image(compressed_to_rgb(jpeg)), "policy_raw", 102)
        from_original = chunk(raw, rgb_to_image(original), "policy_raw", 103)
        from_other = chunk(raw, rgb_to_image(other), "policy_raw", 104)
        np.testing.assert_allclose(from_jpeg, from_decoded, atol=1e-5)
        jpeg_error = np.abs(from_jpeg - from_original).max()
        assert jpeg_error < 0.25 * np.abs(from_other - from_original).max(), jpeg_error
        png = chunk(compressed, rgb_to_compressed(original, "png"), "policy_jpeg", 105)
        np.testing.assert_allclose(png, from_original, atol=1e-5)  # PNG is lossless
    finally:
        stop(raw_node)
        stop(jpeg_node)
