"""Two complete policy stacks in one DDS domain, under namespaces arm1 and arm2: every topic name is relative,
so each arm's camera reaches only its own policy and each policy's chunks only its own executor."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from pixelvla_robots import wx250s
from pixelvla_ros import qos
from pixelvla_ros.benchmarks import synthetic_frame
from pixelvla_ros.image_conversions import rgb_to_image
from pixelvla_ros.msg import ActionChunk, PolicyStatus
from support import publish_calibration

pytestmark = pytest.mark.ros
ARMS = ("arm1", "arm2")


def start_stack(namespace: str, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pixelvla_ros.launching.runner", "policy",
                             f"namespace:={namespace}", "console:=false"],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True)


def test_two_stacks_under_namespaces_never_cross(ros_node, tmp_path):
    logs = {arm: open(tmp_path / f"{arm}.log", "w") for arm in ARMS}
    stacks = {arm: start_stack(arm, logs[arm]) for arm in ARMS}
    chunks = {arm: ros_node.collect(ActionChunk, f"/{arm}/pixelvla/action_chunk", qos.COMMAND) for arm in ARMS}
    status = {arm: ros_node.collect(PolicyStatus, f"/{arm}/pixelvla/status", qos.LATCHED) for arm in ARMS}
    moves = {arm: [] for arm in ARMS}  # trajectories with a target: the executor moved the arm
    for arm in ARMS:
        ros_node.node.create_subscription(JointTrajectory, f"/{arm}/arm_controller/joint_trajectory",
                                          lambda m, arm=arm: moves[arm].append(m) if m.points else None, qos.COMMAND)
    images = {arm: ros_node.publisher(Image, f"/{arm}/camera/image_raw", qos.SENSOR) for arm in ARMS}
    joints = {arm: ros_node.publisher(JointState, f"/{arm}/joint_states", qos.SENSOR) for arm in ARMS}
    for arm in ARMS:
        ros_node.publisher(String, f"/{arm}/pixelvla/instruction", qos.LATCHED).publish(
            String(data="put the red cube on the plate"))
    frame = rgb_to_image(synthetic_frame(224, 224))
    for arm in ARMS:  # each arm's camera calibrated: the shipped policy places its prompts from the gripper
        publish_calibration(ros_node, namespace=arm)
    state = JointState(name=[*wx250s.JOINT_NAMES, "left_finger"], position=[*map(float, wx250s.HOME_Q), 0.037])

    def feed(camera_of: str):
        """Joint states to both arms (both executors are ready to move), the camera to one arm only."""
        def tick():
            now = ros_node.node.get_clock().now().to_msg()
            state.header.stamp = frame.header.stamp = now
            for arm in ARMS:
                joints[arm].publish(state)
            images[camera_of].publish(frame)
        return ros_node.node.create_timer(0.05, tick)

    try:
        assert ros_node.spin_until(lambda: all(any(s.state == PolicyStatus.ACTIVE for s in status[arm])
                                               for arm in ARMS), timeout=180), "a policy never became active"
        graph = ros_node.node
        assert graph.count_publishers("/pixelvla/action_chunk") == 0  # nothing left outside the namespaces
        assert graph.count_subscribers("/camera/image_raw") == 0

        timer = feed("arm1")
        assert ros_node.spin_until(lambda: len(chunks["arm1"]) >= 5 and len(moves["arm1"]) >= 3, timeout=60), (
            f"arm1: {len(chunks['arm1'])} chunks, {len(moves['arm1'])} moves")
        assert (len(chunks["arm2"]), len(moves["arm2"])) == (0, 0), "arm1's camera or chunks reached arm2"
        ros_node.node.destroy_timer(timer)

        before = {arm: (len(chunks[arm]), len(moves[arm])) for arm in ARMS}
        timer = feed("arm2")
        assert ros_node.spin_until(lambda: len(chunks["arm2"]) >= 5 and len(moves["arm2"]) >= 3, timeout=60), (
            f"arm2: {len(chunks['arm2'])} chunks, {len(moves['arm2'])} moves")
        ros_node.node.destroy_timer(timer)
        arm1_after = (len(chunks["arm1"]), len(moves["arm1"]))
        # arm1's last chunk may still have been in flight when its camera stopped: at most one more chunk,
        # and no more moves than its executor's remaining plan (a chunk's actions run out within a second)
        assert arm1_after[0] <= before["arm1"][0] + 1, f"arm1 kept getting chunks: {before['arm1']} -> {arm1_after}"
        assert all(np.isfinite(m.points[0].positions).all() for arm in ARMS for m in moves[arm])
    finally:
        for arm in ARMS:
            if stacks[arm].poll() is None:
                os.killpg(stacks[arm].pid, signal.SIGINT)
        for arm in ARMS:
            try:
                stacks[arm].wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(stacks[arm].pid, signal.SIGKILL)
                stacks[arm].wait()
            logs[arm].close()
