"""Ctrl-C never aborts a policy node that is busy inferring: one SIGINT, or two (a terminal's Ctrl-C under a
launcher) 5-400 ms apart, end the process with exit code 0 every time.

The node runs the untrained `small` preset (~0.15 s per chunk on 2 CPU cores) on a continuous frame stream,
so most signals land while the inference thread is inside torch. Each process starts in a session of its
own with the default SIGINT disposition (a background shell may hand its children SIGINT ignored).
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from std_msgs.msg import String

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import rgb_to_image

pytestmark = [pytest.mark.ros, pytest.mark.slow]
RUNS = 10  # per kind: single and double SIGINT
PARALLEL = 5  # node processes stopped per round (distinct node names, one DDS domain)


def start_node(name: str, log) -> subprocess.Popen:
    return subprocess.Popen(
        ["env", "--default-signal=INT", sys.executable, "-m", "pixelvla_ros.nodes.policy_node", "--ros-args",
         "-r", f"__node:={name}", "-p", "model_path:=untrained", "-p", "default_preset:=small",
         "-p", "control_rate_hz:=0.0"],
        start_new_session=True, stdout=log, stderr=subprocess.STDOUT)


def frames_used(diagnostics: list, name: str) -> int:
    """The node's latest `used` counter (chunks computed) from /diagnostics; 0 before its first report."""
    for array in reversed(diagnostics):
        for status in array.status:
            if status.hardware_id == name:
                return int({kv.key: kv.value for kv in status.values}["used"])
    return 0


def test_sigint_while_inferring_exits_cleanly(ros_node, tmp_path):
    rng = np.random.default_rng(0)
    diagnostics = ros_node.collect(DiagnosticArray, "/diagnostics", 50)
    camera = ros_node.publisher(Image, "/camera/image_raw", qos.SENSOR)
    ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED).publish(String(data="pick up the cube"))
    image = rgb_to_image(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    ros_node.node.create_timer(0.02, lambda: camera.publish(image))  # 50 Hz: the nodes never run out of frames
    kinds = ["single"] * RUNS + ["double"] * RUNS
    results = []
    for start in range(0, len(kinds), PARALLEL):
        batch = [(f"policy_{start + i}", kind) for i, kind in enumerate(kinds[start:start + PARALLEL])]
        logs = {name: tmp_path / f"{name}.log" for name, _ in batch}
        procs = {name: start_node(name, logs[name].open("w")) for name, _ in batch}
        try:
            # every node has computed chunks: it is in its inference loop
            assert ros_node.spin_until(lambda: all(frames_used(diagnostics, n) >= 2 for n in procs), timeout=240), (
                {n: (frames_used(diagnostics, n), procs[n].poll(), logs[n].read_text()[-1500:]) for n in procs})
            for name, kind in batch:
                ros_node.spin_for(rng.uniform(0.0, 0.2))  # a random point of an inference
                procs[name].send_signal(signal.SIGINT)
                if kind == "double":
                    time.sleep(rng.uniform(0.005, 0.4))
                    if procs[name].poll() is None:
                        procs[name].send_signal(signal.SIGINT)
            for name, kind in batch:
                procs[name].wait(timeout=60)
                results.append((name, kind, procs[name].returncode, logs[name].read_text()))
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    failed = [(name, kind, code, out[-2000:]) for name, kind, code, out in results if code != 0]
    assert not failed, f"{len(failed)} of {len(results)} stops failed: " + "\n\n".join(map(str, failed))
