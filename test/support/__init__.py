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
