"""End-to-end latency of the policy node against the bare model: `python -m pixelvla_ros.benchmarks`.

A camera stand-in publishes 224x224 rgb8 frames at `--camera-hz` (default 30) to a policy node in a
separate process (`control_rate_hz:=0`: as fast as the model allows). For every chunk received:
- end-to-end latency = arrival time - the image's stamp (one clock: same machine);
- frame age at inference start = end-to-end latency - the chunk's own inference_latency (the rest is
  transport, ~1-2 ms). Keeping only the latest frame bounds it by one period: the model's (the
  time since the previous chunk) or, for a model faster than the camera, the camera's.
The same model's bare `PixelVLAPolicy.predict` latency is measured in this process; the ratio of
medians is the node's overhead. Prints JSON.

`--camera 640x480,1280x720 --transport raw,compressed` measures instead how the policy node keeps up with
a real camera stream: `--seconds` of frames at `--camera-hz` (rgb8, or JPEG on `<topic>/compressed` as
image_transport publishes it) and joint states at the same rate into the default policy stack settings
(the shipped checkpoint, `control_rate_hz` 5). Per case: frames published / received by the node (its
PolicyStatus), chunks per second, the age of each chunk's frame when inference started (p50/p95, and how
many were older than one model period) and the node's CPU use.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pixelvla_ros.launching.environment import missing_defaults


def bare_latency(preset: str, frames: int, threads: int) -> np.ndarray:
    import torch

    from pixelvla_model import PixelVLAConfig, PixelVLAPolicy

    torch.set_num_threads(threads)
    policy = PixelVLAPolicy.from_config(PixelVLAConfig.from_preset(preset), seed=0)
    image = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    for _ in range(3):
        policy.predict(image, "put the red cube on the plate")
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        policy.predict(image, "put the red cube on the plate")
        times.append(time.perf_counter() - start)
    return np.array(times)


@contextlib.contextmanager
def policy_under_test(params: list[str], probe_name: str):
    """A policy node process (`params`: `name:=value` strings) and a probe node in this process that has
    published the instruction, collects (arrival s, ActionChunk) and PolicyStatus, and waited for ACTIVE.
    Yields (probe node, received, status, the node's pid); stops both afterwards."""
    import rclpy
    from std_msgs.msg import String

    from pixelvla_ros import qos
    from pixelvla_ros.msg import ActionChunk, PolicyStatus

    args = [sys.executable, "-m", "pixelvla_ros.nodes.policy_node", "--ros-args", "-r", "__node:=policy"]
    for param in params:
        args += ["-p", param]
    node_process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    node = rclpy.create_node(probe_name)
    received: list = []
    status: list = []
    node.create_subscription(ActionChunk, "/pixelvla/action_chunk",
                             lambda m: received.append((node.get_clock().now().nanoseconds * 1e-9, m)), qos.COMMAND)
    node.create_subscription(PolicyStatus, "/pixelvla/status", status.append, qos.LATCHED)
    node.create_publisher(String, "/pixelvla/instruction", qos.LATCHED).publish(String(data="put the red cube on the plate"))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(s.state == PolicyStatus.ACTIVE for s in status):
            rclpy.spin_once(node, timeout_sec=0.1)
        yield node, received, status, node_process.pid
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        node_process.send_signal(signal.SIGINT)
        try:
            node_process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node_process.kill()


def node_latency(preset: str, frames: int, camera_hz: float, threads: int) -> dict:
    import rclpy
    from sensor_msgs.msg import Image

    from pixelvla_ros import qos
    from pixelvla_ros.image_conversions import rgb_to_image
    from pixelvla_ros.node_base import stamp_seconds

    params = ["control_rate_hz:=0.0", "model_path:=untrained", f"default_preset:={preset}", f"threads:={threads}"]
    frame = rgb_to_image(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8))
    with policy_under_test(params, "latency_probe") as (node, received, status, _):
        images = node.create_publisher(Image, "/camera/image_raw", qos.SENSOR)
        published = 0
        period = 1.0 / camera_hz
        next_frame = time.monotonic()
        warmup = 5
        deadline = time.monotonic() + 600
        while len(received) < frames + warmup and time.monotonic() < deadline:
            if time.monotonic() >= next_frame:
                frame.header.stamp = node.get_clock().now().to_msg()
                images.publish(frame)
                published += 1
                next_frame += period
            rclpy.spin_once(node, timeout_sec=max(0.0, min(0.005, next_frame - time.monotonic())))
        final_status = status[-1]
        rows = received[warmup:]
        arrival = np.array([t for t, _ in rows])
        stamps = np.array([stamp_seconds(m.header.stamp) for _, m in rows])
        inference = np.array([m.inference_latency for _, m in rows])
    end_to_end = arrival - stamps
    model_period = np.diff(arrival)
    age_at_start = end_to_end - inference
    return {
        "frames_published": published, "chunks": len(rows),
        "end_to_end_s": percentiles(end_to_end), "node_inference_s": percentiles(inference),
        "model_period_s": percentiles(model_period),
        "frame_age_at_inference_start_s": percentiles(age_at_start),
        "frames_older_than_one_period": int(np.sum(age_at_start[1:] > np.maximum(model_period, 1.0 / camera_hz) + 0.002)),
        "status_frames_received": int(final_status.frames_received), "status_frames_used": int(final_status.frames_used),
        "status_frames_dropped": int(final_status.frames_dropped),
    }


def synthetic_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: a tabletop-like picture (smooth shading, a few blocks, sensor noise), so that
    JPEG sizes and decode times are those of a camera, not of white noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([110 + 60 * x / width, 100 + 50 * y / height, 90 + 30 * (x + y) / (width + height)], axis=-1)
    for _ in range(6):
        cx, cy, r = rng.integers(0, width), rng.integers(0, height), rng.integers(height // 20, height // 8)
        block = (abs(x - cx) < r) & (abs(y - cy) < r)
        image[block] = rng.integers(0, 255, 3)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def camera_stream(width: int, height: int, transport: str, seconds: float, camera_hz: float) -> dict:
    """One case of `--camera`: see the module docstring."""
    with policy_under_test([f"image_transport:={transport}"], "camera_probe") as (node, received, status, pid):
        return _camera_stream(node, received, status, pid, width, height, transport, seconds, camera_hz)


def _camera_stream(node, received: list, status: list, pid: int, width: int, height: int, transport: str, seconds: float,
                   camera_hz: float) -> dict:
    import io

    import rclpy
    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage, Image, JointState

    from pixelvla_ros import qos
    from pixelvla_ros.image_conversions import rgb_to_image
    from pixelvla_ros.node_base import stamp_seconds
    from pixelvla_robots import wx250s

    joints_pub = node.create_publisher(JointState, "/joint_states", qos.SENSOR)
    joints = JointState(name=[*wx250s.JOINT_NAMES, "left_finger"], position=[*map(float, wx250s.HOME_Q), wx250s.FINGER_OPEN])
    rgb = [synthetic_frame(width, height, seed) for seed in range(4)]
    if transport == "compressed":
        frames = []
        for picture in rgb:
            buffer = io.BytesIO()
            PILImage.fromarray(picture).save(buffer, format="JPEG", quality=90)
            frames.append(CompressedImage(format="rgb8; jpeg compressed bgr8", data=buffer.getvalue()))
        images = node.create_publisher(CompressedImage, "/camera/image_raw/compressed", qos.SENSOR)
    else:
        frames = [rgb_to_image(picture) for picture in rgb]
        images = node.create_publisher(Image, "/camera/image_raw", qos.SENSOR)
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    received.clear()
    published, period, start = 0, 1.0 / camera_hz, time.monotonic()
    frames_before = status[-1].frames_received
    cpu_before = cpu_seconds()
    while time.monotonic() - start < seconds:
        if time.monotonic() >= start + published * period:
            stamp = node.get_clock().now().to_msg()
            frame = frames[published % len(frames)]
            frame.header.stamp = joints.header.stamp = stamp
            images.publish(frame)
            joints_pub.publish(joints)
            published += 1
        rclpy.spin_once(node, timeout_sec=max(0.0, min(0.005, start + published * period - time.monotonic())))
    cpu = cpu_seconds() - cpu_before
    settle = time.monotonic() + 1.5  # the last status (1 Hz) counts every frame sent
    while time.monotonic() < settle:
        rclpy.spin_once(node, timeout_sec=0.05)
    final = status[-1]
    arrival = np.array([t for t, _ in received])
    age = arrival - np.array([m.inference_latency + stamp_seconds(m.header.stamp) for _, m in received])
    model_period = np.diff(arrival)
    return {
        "camera": f"{width}x{height}", "transport": transport, "frames_published": published,
        "frames_received": int(final.frames_received - frames_before), "chunks_per_s": round(len(received) / seconds, 2),
        "frame_age_at_inference_s": {"p50": round(float(np.percentile(age, 50)), 4), "p95": round(float(np.percentile(age, 95)), 4)},
        "chunks_from_frames_older_than_one_model_period": int(np.sum(age[1:] > model_period)),
        "inference_s": {"p50": round(float(np.median([m.inference_latency for _, m in received])), 4)},
        "policy_node_cpu_percent": round(100 * cpu / seconds, 1),
    }


def percentiles(values: np.ndarray) -> dict:
    return {f"p{q}": round(float(np.percentile(values, q)), 5) for q in (50, 90, 99)} | {"max": round(float(values.max()), 5)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--camera-hz", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same for the node and the bare model")
    parser.add_argument("--camera", default="", help="camera stream cases, e.g. 640x480,1280x720 (see above)")
    parser.add_argument("--transport", default="raw,compressed", help="with --camera: raw, compressed or both")
    parser.add_argument("--seconds", type=float, default=10.0, help="with --camera: length of each stream")
    opts = parser.parse_args(argv)
    os.environ.update(missing_defaults())  # DDS on localhost, the Fast DDS profile for camera frames
    if opts.camera:
        cases = [camera_stream(*map(int, size.split("x")), transport, opts.seconds, opts.camera_hz)
                 for size in opts.camera.split(",") for transport in opts.transport.split(",")]
        print(json.dumps({"camera_hz": opts.camera_hz, "cases": cases}, indent=2))
        return 0
    results = {}
    for preset in opts.presets.split(","):
        bare = bare_latency(preset, opts.frames, opts.threads)
        e2e = node_latency(preset, opts.frames, opts.camera_hz, opts.threads)
        results[preset] = {"bare_predict_s": percentiles(bare), "node": e2e,
                           "overhead_ratio_p50": round(e2e["end_to_end_s"]["p50"] / float(np.median(bare)), 3)}
    print(json.dumps({"camera_hz": opts.camera_hz, "threads": opts.threads, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
