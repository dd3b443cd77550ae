"""The Robot interface and its registry: a robot is chosen by its robot_model, and wx250s's is its module's."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from pixelvla_robots import rotations, wx250s
from pixelvla_robots.base import NoKinematics, get_robot, known_robots
from pixelvla_robots.executor import SafetyGate

ROBOT_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "config" / "robots").glob("*.yaml"))


def test_wx250s_robot_is_the_module():
    robot = get_robot("wx250s")
    assert robot.has_kinematics and robot.joint_names == wx250s.JOINT_NAMES and robot.finger_joint == "left_finger"
    np.testing.assert_array_equal(robot.joint_lower, wx250s.JOINT_LOWER)
    np.testing.assert_array_equal(robot.home_q, wx250s.HOME_Q)
    q = wx250s.HOME_Q + np.array([0.1, 0.2, -0.1, 0.3, 0.1, -0.2])
    for got, want in zip(robot.fk(q), wx250s.fk(q)):
        np.testing.assert_array_equal(got, want)
    target = rotations.apply_ee_delta(*wx250s.fk(q), [0.02, 0.0, -0.01], [0.0, 0.1, 0.0])
    np.testing.assert_array_equal(robot.ik(q, *target), wx250s.solve_ik(q, *target))
    assert robot.gripper_to_finger(1.0) == wx250s.FINGER_OPEN
    assert robot.finger_to_gripper(wx250s.FINGER_CLOSED) == 0.0
    np.testing.assert_array_equal(robot.clamp_to_limits(np.full(6, 9.0)), wx250s.JOINT_UPPER)


def test_google_robot_has_no_kinematics_and_says_what_to_do():
    robot = get_robot("google_robot")
    assert not robot.has_kinematics and robot.joint_names == ()
    for call in (lambda: robot.fk(np.zeros(0)), lambda: robot.ik(np.zeros(0), np.zeros(3), np.eye(3)),
                 lambda: robot.gripper_to_finger(1.0), lambda: robot.finger_to_gripper(0.02)):
        with pytest.raises(NoKinematics, match="google_robot has no kinematics.*own controller"):
            call()
    with pytest.raises(ValueError, match="no kinematics"):
        SafetyGate([0.1, -0.3, 0.0], [0.5, 0.3, 0.4], 0.05, 0.35, robot=robot)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown robot_model 'ur5'; known models: wx250s, google_robot"):
        get_robot("ur5")


def test_the_gate_needs_its_robot():
    with pytest.raises(TypeError, match="robot"):
        SafetyGate([0.1, -0.3, 0.0], [0.5, 0.3, 0.4], 0.05, 0.35)


@pytest.mark.parametrize("path", ROBOT_CONFIGS, ids=lambda p: p.stem)
def test_every_robot_config_names_a_known_robot(path):
    parameters = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
    robot = get_robot(parameters["robot_model"])
    assert robot.model == parameters["robot_model"] and robot.model in known_robots()
    if "joint_names" in parameters:
        assert tuple(parameters["joint_names"]) == robot.joint_names
