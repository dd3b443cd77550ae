"""Helpers for tests that talk to real nodes over DDS."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Callable

from rclpy.executors import Executor
from rclpy.node import Node


class Probe:
    """The test's own node: subscribe, publish, and spin until something happened (or time is up)."""

    def __init__(self, node: Node, executor: Executor) -> None:
        self.node = node
        self.executor = executor

    def collect(self, msg_type: Any, topic: str, qos: Any = 10) -> list:
        """Subscribe to `topic`; the returned list fills up as messages arrive while spinning."""
        received: list = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def publisher(self, msg_type: Any, topic: str, qos: Any = 10):
        return self.node.create_publisher(msg_type, topic, qos)

    def spin_until(self, condition: Callable[[], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return condition()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, timeout=seconds)


def start_launch(*args: str) -> subprocess.Popen:
    """`pixelvla-launch *args` as a child process, output captured (text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pixelvla_ros.launching.runner", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )


def publish_calibration(probe: Probe, camera=None, namespace: str = "") -> None:
    """A camera's calibration as its driver publishes it, under `namespace`: the optical frame's pose in the
    base frame on camera/pose (latched) and the camera info on camera/camera_info at 5 Hz. Default camera: 60 cm
    above the table, looking straight down (what a policy that places its prompts from the gripper needs)."""
    import numpy as np
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CameraInfo

    from pixelvla_robots.camera import CameraModel
    from pixelvla_ros import qos

    if camera is None:
        camera = CameraModel("c", 160, 120, 130.0, 130.0, 79.5, 59.5, np.array([0.25, 0.0, 0.6]),
                             np.diag([1.0, -1.0, -1.0]))
    prefix = f"/{namespace}" if namespace else ""
    pose = PoseStamped()
    pose.header.frame_id = "wx250s/base_link"
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = camera.position.tolist()
    o = pose.pose.orientation
    o.x, o.y, o.z, o.w = map(float, camera.quaternion_xyzw)
    probe.publisher(PoseStamped, f"{prefix}/camera/pose", qos.LATCHED).publish(pose)
    info = probe.publisher(CameraInfo, f"{prefix}/camera/camera_info", qos.SENSOR)
    probe.node.create_timer(0.2, lambda: info.publish(CameraInfo(**camera.camera_info())))
