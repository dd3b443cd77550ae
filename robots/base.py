"""What the rest of the package needs to know about a robot arm, and which arms it knows.

A robot is configuration: `robot_model` in config/robots/<robot>.yaml names one of :func:`known_robots`
and every node that touches the arm's joints or kinematics takes it from :func:`get_robot`.

Conventions (every :class:`Robot`): metres, radians, the arm's base frame (x forward, y left, z up);
joint vectors ``q`` are ``(n,)`` in :attr:`Robot.joint_names` order; a TCP pose is
``(position (3,) m, rotation (3, 3))``, the rotation mapping TCP-frame vectors into the base frame;
gripper commands are in [0, 1] (1 = open, 0 = closed), as in the 7-D end-effector delta actions.

A robot without kinematics here (:attr:`Robot.has_kinematics` False, e.g. google_robot) can still run
the policy: its chunks go to the robot's own controller; fk, ik and the gripper mapping raise
:class:`NoKinematics`.
"""
from __future__ import annotations

import functools
from abc import ABC, abstractmethod

import numpy as np


class NoKinematics(NotImplementedError):
    """The robot has no kinematics in this package; the message says what to do instead."""


def no_kinematics_reason(robot_model: str) -> str:
    """Why a robot without kinematics gets no chunk executor, and where its chunks go instead (for logs)."""
    return (f"robot_model {robot_model} has no kinematics in this package: no executor; "
            "send /pixelvla/action_chunk to the robot's own controller")


class Robot(ABC):
    """One robot arm: joints, limits, kinematics (the IK the chunk executor uses) and gripper mapping."""

    model: str                           # the `robot_model` parameter that selects it
    has_kinematics: bool                 # False: fk, ik and the gripper mapping raise NoKinematics
    joint_names: tuple[str, ...]         # arm joints, kinematics order
    finger_names: tuple[str, ...]        # gripper finger joints; the first is the one a gripper command moves
    joint_lower: np.ndarray              # (n,) rad
    joint_upper: np.ndarray              # (n,) rad
    velocity_limits: np.ndarray          # (n,) rad/s, the arm's own limits (the executor's are lower)
    home_q: np.ndarray                   # (n,) rad

    @abstractmethod
    def fk(self, q) -> tuple[np.ndarray, np.ndarray]:
        """TCP pose (position (3,) m, rotation (3, 3)) in the base frame for joints `q` (n,) rad."""

    @abstractmethod
    def ik(self, q_start, target_pos, target_rot) -> np.ndarray:
        """Joints (n,) rad within the limits that bring the TCP from `q_start` (n,) rad towards the pose
        (target_pos (3,) m, target_rot (3, 3)); the closest reachable pose for an unreachable one."""

    @abstractmethod
    def gripper_to_finger(self, command: float) -> float:
        """Gripper command in [0, 1] (clipped) -> position of :attr:`finger_joint`."""

    @abstractmethod
    def finger_to_gripper(self, finger: float) -> float:
        """Position of :attr:`finger_joint` -> gripper state in [0, 1] (clipped)."""

    @property
    def finger_joint(self) -> str:
        """The finger joint a gripper command moves (empty: none known)."""
        return self.finger_names[0] if self.finger_names else ""

    def clamp_to_limits(self, q) -> np.ndarray:
        """`q` (n,) clipped into [joint_lower, joint_upper]."""
        return np.clip(q, self.joint_lower, self.joint_upper)


class RobotWithoutKinematics(Robot):
    """A robot whose chunks go to its own controller: no joints, kinematics or gripper mapping here."""

    has_kinematics = False
    joint_names = ()
    finger_names = ()
    joint_lower = joint_upper = velocity_limits = home_q = np.zeros(0)

    def __init__(self, model: str) -> None:
        self.model = model

    def no_kinematics(self) -> NoKinematics:
        return NoKinematics(no_kinematics_reason(self.model))

    def fk(self, q):
        raise self.no_kinematics()

    def ik(self, q_start, target_pos, target_rot):
        raise self.no_kinematics()

    def gripper_to_finger(self, command):
        raise self.no_kinematics()

    def finger_to_gripper(self, finger):
        raise self.no_kinematics()


@functools.cache
def known_robots() -> dict[str, Robot]:
    """Every robot this package knows, by `robot_model`."""
    from pixelvla_robots import wx250s  # imported here: wx250s builds its Robot on this module

    return {
        "wx250s": wx250s.ROBOT,
        # Google Robot (Fractal / RT-1 data): the policy's chunks go to its own controller stack.
        "google_robot": RobotWithoutKinematics("google_robot"),
    }


def get_robot(robot_model: str) -> Robot:
    """The robot named by a `robot_model` parameter; ValueError listing the known models otherwise."""
    robots = known_robots()
    if robot_model not in robots:
        raise ValueError(f"unknown robot_model {robot_model!r}; known models: {', '.join(robots)}")
    return robots[robot_model]
