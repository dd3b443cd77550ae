"""The executor node's callbacks called in process (never spun: no timer tick interferes)."""
import time

import numpy as np
import pytest
import rclpy
from sensor_msgs.msg import JointState

from pixelvla_ros.msg import ActionChunk
from pixelvla_robots import wx250s

pytestmark = pytest.mark.ros


@pytest.fixture
def executor(ros_domain):
    from pixelvla_ros.nodes.executor_node import ExecutorNode

    rclpy.init(domain_id=ros_domain)
    node = ExecutorNode()
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown()


def stamped(msg, seconds: float):
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(seconds), int((seconds % 1.0) * 1e9)
    return msg


def joint_state(q, seconds: float) -> JointState:
    finger = wx250s.FINGER_OPEN
    msg = JointState(name=[*wx250s.JOINT_NAMES, *wx250s.FINGER_NAMES], position=[*map(float, q), finger, -finger])
    return stamped(msg, seconds)


def test_a_new_chunk_starts_from_joints_measured_after_its_image(executor):
    """A joint state published with the image can arrive after the chunk: the plan must not be
    anchored on the pose before it (the arm would be sent back by one step)."""
    t0 = executor.now()
    q_before = wx250s.HOME_Q.copy()
    q_after = wx250s.solve_ik(q_before, *wx250s.apply_ee_delta(*wx250s.fk(q_before), np.array([0.0, 0.03, 0.0]), np.zeros(3)))
    executor.on_joint_state(joint_state(q_before, t0 - 0.15))
    chunk = stamped(ActionChunk(horizon=1, action_dim=7, dt=0.2, action_space="ee_delta"), t0 - 0.05)
    chunk.actions = [0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    executor.on_chunk(chunk)
    assert executor.commands_sent == 0, "started from joints measured before the image"
    executor.on_joint_state(joint_state(q_after, t0 - 0.04))
    assert executor.commands_sent == 1, "the chunk did not start when a fresh joint state came in"
    target, _ = wx250s.fk(executor.chunk_executor.last_command.joints)
    assert target == pytest.approx(wx250s.fk(q_after)[0] + [0.02, 0.0, 0.0], abs=2e-3)


def test_a_chunk_starts_after_one_period_without_a_fresh_joint_state(executor):
    """Joint states stamped by a clock behind the camera's must not stop the arm: the chunk starts
    from the newest joints after one control period."""
    t0 = executor.now()
    executor.on_joint_state(joint_state(wx250s.HOME_Q, t0 - 5.0))
    chunk = stamped(ActionChunk(horizon=2, action_dim=7, dt=0.2, action_space="ee_delta"), t0)
    chunk.actions = [0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0] * 2
    executor.on_chunk(chunk)
    executor.on_timer()
    assert executor.commands_sent == 0
    time.sleep(executor.period)
    executor.on_timer()
    assert executor.commands_sent == 1
    target, _ = wx250s.fk(executor.chunk_executor.last_command.joints)
    assert target == pytest.approx(wx250s.fk(wx250s.HOME_Q)[0] + [0.02, 0.0, 0.0], abs=2e-3)


@pytest.mark.parametrize("params, reason", [
    (["steps_per_inference:=6"], "steps_per_inference 6 exceeds execute_steps 5"),
    (["steps_per_inference:=3", "watchdog_timeout:=0.5"], "reaches watchdog_timeout 0.5 s"),
])
def test_a_policy_rate_the_executor_cannot_follow_stops_the_node_at_start(ros_domain, params, reason):
    import subprocess
    import sys

    args = [sys.executable, "-m", "pixelvla_ros.nodes.executor_node", "--ros-args"]
    for param in params:
        args += ["-p", param]
    node = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert node.returncode != 0 and reason in node.stdout, node.stdout
