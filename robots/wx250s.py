"""WidowX 250 6DOF (wx250s) kinematics in pure numpy.

Used by the MuJoCo simulator (``pixelvla_sim``) and by the real arm's chunk executor, so it must
never import mujoco or rclpy.

Conventions (everything in this module):
- Units: metres, radians. Joint vectors ``q`` are ``(6,)`` in :data:`JOINT_NAMES` order (the Interbotix
  driver's order): waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate.
- Base frame: origin at ``base_link`` (on the table top), x forward, y left, z up. In the simulator the
  base frame is the world frame.
- Every link frame is aligned with the base frame when all joint angles are zero (table in
  ``shared/robots/wx250s.md``); a link's pose is ``T_parent @ Trans(offset) @ Rot(axis, q)``.
- Tool centre point (TCP): :data:`TCP_OFFSET` metres along ``gripper_link``'s x axis, between the finger
  pads. Its rotation is ``gripper_link``'s rotation: x points out of the gripper (approach direction),
  y along the finger travel (towards the left finger), z completes the right-handed frame.
- Rotations as ``(3, 3)`` matrices mapping TCP-frame vectors into the base frame.
- Roll/pitch/yaw: ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (fixed axes x, then y, then z of the base frame).
  These helpers and the end-effector deltas below live in :mod:`pixelvla_robots.rotations` (any arm).
- End-effector delta commands (Bridge V2 / SimplerEnv WidowX convention): a 7-D action
  ``[dx, dy, dz, droll, dpitch, dyaw, gripper]``; the translation is added to the TCP position in the base
  frame; the rotation ``R_delta = rpy_to_matrix(droll, dpitch, dyaw)`` is applied about the TCP in
  base-frame axes: ``R_target = R_delta @ R_current``. Gripper: 1 = open, 0 = closed.
- Fingers: prismatic, ``left_finger`` in [0.015, 0.037] m (0.015 closed, 0.037 open); ``right_finger``
  mirrors it with the opposite sign.
"""
from __future__ import annotations

import numpy as np

from pixelvla_robots.base import Robot
# Re-exported: callers of this module have long used wx250s.fk next to wx250s.rpy_to_matrix and friends.
from pixelvla_robots.rotations import (  # noqa: F401
    apply_ee_delta, axis_rotation, ee_delta_between, matrix_to_quat, matrix_to_rpy, quat_to_matrix, rotation_log,
    rpy_to_matrix,
)

JOINT_NAMES: tuple[str, ...] = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
FINGER_NAMES: tuple[str, ...] = ("left_finger", "right_finger")
LINK_NAMES: tuple[str, ...] = (
    "shoulder_link", "upper_arm_link", "upper_forearm_link", "lower_forearm_link", "wrist_link", "gripper_link",
)

# Joint i sits at the origin of LINK_NAMES[i], offset from its parent's origin by LINK_OFFSETS[i] (parent frame).
LINK_OFFSETS = np.array([
    [0.0, 0.0, 0.072],       # base_link -> shoulder_link (waist)
    [0.0, 0.0, 0.03865],     # shoulder_link -> upper_arm_link (shoulder)
    [0.04975, 0.0, 0.25],    # upper_arm_link -> upper_forearm_link (elbow)
    [0.175, 0.0, 0.0],       # upper_forearm_link -> lower_forearm_link (forearm_roll)
    [0.075, 0.0, 0.0],       # lower_forearm_link -> wrist_link (wrist_angle)
    [0.065, 0.0, 0.0],       # wrist_link -> gripper_link (wrist_rotate)
])
# Rotation axis of each joint in its own (child) link frame.
JOINT_AXES = np.array([
    [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0],
])
JOINT_LOWER = np.array([-3.1416, -1.8850, -2.1468, -3.1416, -1.7453, -3.1416])
JOINT_UPPER = np.array([3.1416, 1.9897, 1.6057, 3.1416, 2.1468, 3.1416])
# rad/s: the joint velocity limits of the Interbotix wx250s URDF (interbotix_xsarm_descriptions: pi for each arm joint).
VELOCITY_LIMITS = np.full(6, np.pi)
LINK_MASSES = {
    "base_link": 0.539, "shoulder_link": 0.481, "upper_arm_link": 0.431, "upper_forearm_link": 0.235,
    "lower_forearm_link": 0.221, "wrist_link": 0.085, "gripper_link": 0.110,
    "left_finger_link": 0.016, "right_finger_link": 0.016,
}
FINGER_OFFSET = np.array([0.066, 0.0, 0.0])   # gripper_link -> each finger link origin
FINGER_OPEN = 0.037                           # left finger position (m) for gripper command 1 (open)
FINGER_CLOSED = 0.015                         # left finger position (m) for gripper command 0 (closed)

TCP_OFFSET = 0.1                              # m beyond gripper_link's origin along its x axis
HOME_Q = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0])   # rad, Menagerie home pose
# Relative cost of moving each joint in the IK's weighted least-norm steps (see solve_ik).
IK_JOINT_COSTS = np.array([1.0, 1.0, 1.0, 10.0, 1.0, 1.0])
# Task-space weight of the IK's rotation error (rad) against its position error (m).
ROTATION_WEIGHT = 0.2


# ---------------------------------------------------------------------------------------------- kinematics
def _check_q(q) -> np.ndarray:
    q = np.asarray(q, dtype=float)
    if q.shape != (6,):
        raise ValueError(f"joint vector must have shape (6,) in order {JOINT_NAMES}, got {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError(f"joint vector must be finite, got {q}")
    return q


def link_poses(q) -> tuple[np.ndarray, np.ndarray]:
    """Poses of the six joint links for joints `q` (6,) rad.

    Returns ``(positions (6, 3) m, rotations (6, 3, 3))`` of LINK_NAMES in the base frame; link i's origin
    is joint i's position.
    """
    q = _check_q(q)
    pos = np.zeros(3)
    rot = np.eye(3)
    positions = np.empty((6, 3))
    rotations = np.empty((6, 3, 3))
    for i in range(6):
        pos = pos + rot @ LINK_OFFSETS[i]
        rot = rot @ axis_rotation(JOINT_AXES[i], q[i])
        positions[i] = pos
        rotations[i] = rot
    return positions, rotations


def fk(q) -> tuple[np.ndarray, np.ndarray]:
    """Forward kinematics of the TCP: joints `q` (6,) rad -> (position (3,) m, rotation (3, 3)), base frame."""
    positions, rotations = link_poses(q)
    rot = rotations[-1]
    return positions[-1] + rot[:, 0] * TCP_OFFSET, rot


def jacobian(q) -> np.ndarray:
    """(6, 6) geometric Jacobian of the TCP in the base frame.

    Rows 0-2: linear velocity (m/s per rad/s), rows 3-5: angular velocity (rad/s per rad/s); column j is
    joint j of JOINT_NAMES.
    """
    positions, rotations = link_poses(q)
    tcp = positions[-1] + rotations[-1][:, 0] * TCP_OFFSET
    jac = np.empty((6, 6))
    for j in range(6):
        axis = rotations[j] @ JOINT_AXES[j]
        jac[:3, j] = np.cross(axis, tcp - positions[j])
        jac[3:, j] = axis
    return jac


def clamp_to_limits(q) -> np.ndarray:
    """`q` (6,) clipped into [JOINT_LOWER, JOINT_UPPER]."""
    return np.clip(q, JOINT_LOWER, JOINT_UPPER)


def solve_ik(
    q_start,
    target_pos,
    target_rot,
    iterations: int = 30,
    damping: float = 0.02,
    rotation_weight: float = ROTATION_WEIGHT,
    max_joint_step: float = 0.3,
    tol_pos: float = 1e-4,
    tol_rot: float = 1e-3,
    joint_costs=None,
) -> np.ndarray:
    """Damped-least-squares IK from `q_start` (6,) rad to a TCP pose (target_pos (3,) m, target_rot (3, 3)).

    Each iteration takes the weighted DLS step ``dq = C J^T (J C J^T + damping^2 I)^-1 e`` on the task error
    ``e = [p_target - p (m); rotation_weight * log(R_target R^T) (rad)]`` (J's rotation rows scaled alike),
    with ``C = diag(1 / joint_costs)``; limits ``|dq|`` to `max_joint_step` rad and clamps q to the joint
    limits; stops when the position error < `tol_pos` m and the rotation error < `tol_rot` rad, or when three
    iterations in a row gain less than 1 %. The best q
    seen (lowest weighted error) is then polished with a few position-only steps, so position wins
    whenever the orientation is out of reach: near the wrist singularity (wrist_angle ~ 0, forearm_roll
    and wrist_rotate axes aligned) the damping gives up a little orientation rather than swinging the
    wrist, never position. `joint_costs` (6,) (default :data:`IK_JOINT_COSTS`) make a joint's motion dearer:
    forearm_roll is dear, so the solver rotates the wrist with wrist_angle/wrist_rotate like a 5-DOF arm.
    An unreachable target gives the closest reachable pose (within the limits), never an exception.
    Returns q_target (6,) rad.
    """
    q = clamp_to_limits(_check_q(q_start))
    target_pos = np.asarray(target_pos, dtype=float).reshape(3)
    target_rot = np.asarray(target_rot, dtype=float).reshape(3, 3)
    if not (np.all(np.isfinite(target_pos)) and np.all(np.isfinite(target_rot))):
        raise ValueError("IK target must be finite")
    eye3, eye6 = np.eye(3), np.eye(6)
    scale = 1.0 / np.sqrt(np.asarray(IK_JOINT_COSTS if joint_costs is None else joint_costs, dtype=float))
    weights = np.array([1.0, 1.0, 1.0, rotation_weight, rotation_weight, rotation_weight])

    def limited(dq):
        biggest = float(np.max(np.abs(dq)))
        return dq * (max_joint_step / biggest) if biggest > max_joint_step else dq

    best_q, best_err, stalled = q, np.inf, 0
    for i in range(iterations + 1):
        pos, rot = fk(q)
        err_pos = target_pos - pos
        err_rot = rotation_log(target_rot @ rot.T)
        err = np.concatenate([err_pos, err_rot]) * weights
        norm = float(np.linalg.norm(err))
        stalled = stalled + 1 if norm > 0.99 * best_err else 0
        if norm < best_err:
            best_q, best_err = q, norm
        converged = np.linalg.norm(err_pos) < tol_pos and np.linalg.norm(err_rot) < tol_rot
        if converged or stalled >= 3 or i == iterations:
            break
        jac = jacobian(q) * weights[:, None] * scale  # weighted task rows, joint-cost-scaled columns
        dq = scale * (jac.T @ np.linalg.solve(jac @ jac.T + damping**2 * eye6, err))
        q = clamp_to_limits(q + limited(dq))
    # Polish: position-only steps from the best q while they reduce the position error.
    q = best_q
    err_pos = target_pos - fk(q)[0]
    for _ in range(10):
        if np.linalg.norm(err_pos) < tol_pos:
            break
        jp = jacobian(q)[:3] * scale
        dq = scale * (jp.T @ np.linalg.solve(jp @ jp.T + (0.25 * damping) ** 2 * eye3, err_pos))
        q_new = clamp_to_limits(q + limited(dq))
        err_new = target_pos - fk(q_new)[0]
        if np.linalg.norm(err_new) >= np.linalg.norm(err_pos):
            break
        q, err_pos = q_new, err_new
    return q


# ------------------------------------------------------------------------------------------------- gripper
def gripper_to_finger(command) -> float:
    """Bridge gripper command in [0, 1] (1 = open, 0 = closed; clipped) -> left finger position (m).

    Linear: 0 -> FINGER_CLOSED (0.015 m), 1 -> FINGER_OPEN (0.037 m). The right finger is its negative.
    """
    command = float(command)
    if not np.isfinite(command):
        raise ValueError(f"gripper command must be finite, got {command}")
    return FINGER_CLOSED + float(np.clip(command, 0.0, 1.0)) * (FINGER_OPEN - FINGER_CLOSED)


def finger_to_gripper(finger: float) -> float:
    """Left finger position (m) -> Bridge gripper state in [0, 1] (1 = open), clipped."""
    return float(np.clip((float(finger) - FINGER_CLOSED) / (FINGER_OPEN - FINGER_CLOSED), 0.0, 1.0))


def binarize_gripper(command: float, threshold: float = 0.5) -> float:
    """Bridge binarised gripper: 1.0 (open) if command > threshold else 0.0 (closed)."""
    return 1.0 if float(command) > threshold else 0.0


# --------------------------------------------------------------------------------------------------- robot
class WX250s(Robot):
    """This module's kinematics, limits and gripper mapping behind the :class:`~pixelvla_robots.base.Robot`
    interface; the IK is :func:`solve_ik` with its defaults."""

    model = "wx250s"
    has_kinematics = True
    joint_names = JOINT_NAMES
    finger_names = FINGER_NAMES
    joint_lower = JOINT_LOWER
    joint_upper = JOINT_UPPER
    velocity_limits = VELOCITY_LIMITS
    home_q = HOME_Q

    def fk(self, q):
        return fk(q)

    def ik(self, q_start, target_pos, target_rot):
        return solve_ik(q_start, target_pos, target_rot)

    def gripper_to_finger(self, command):
        return gripper_to_finger(command)

    def finger_to_gripper(self, finger):
        return finger_to_gripper(finger)

    def clamp_to_limits(self, q):
        return clamp_to_limits(q)


ROBOT = WX250s()
