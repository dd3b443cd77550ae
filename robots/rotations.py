"""Rotations and end-effector pose deltas in pure numpy, for any arm (no robot's constants here).

Conventions:
- Rotations as ``(3, 3)`` matrices mapping a body frame's vectors into the base frame.
- Roll/pitch/yaw: ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (fixed axes x, then y, then z of the base frame).
- Quaternions ``(w, x, y, z)`` (MuJoCo order).
- End-effector delta commands (Bridge V2 / SimplerEnv convention): ``[dx, dy, dz, droll, dpitch, dyaw]``;
  the translation (m) is added to the TCP position in the base frame; the rotation
  ``R_delta = rpy_to_matrix(droll, dpitch, dyaw)`` is applied about the TCP in base-frame axes:
  ``R_target = R_delta @ R_current``.
"""
from __future__ import annotations

import numpy as np


def axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by `angle` rad about a unit `axis` (Rodrigues)."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """(3, 3) rotation ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``, angles in rad."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def matrix_to_rpy(rot: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rpy_to_matrix`: (3,) roll, pitch, yaw in rad (pitch in [-pi/2, pi/2])."""
    rot = np.asarray(rot, dtype=float)
    pitch = np.arcsin(np.clip(-rot[2, 0], -1.0, 1.0))
    if abs(rot[2, 0]) < 1.0 - 1e-9:
        roll = np.arctan2(rot[2, 1], rot[2, 2])
        yaw = np.arctan2(rot[1, 0], rot[0, 0])
    else:  # gimbal lock: put everything into yaw
        roll = 0.0
        yaw = np.arctan2(-rot[0, 1], rot[1, 1])
    return np.array([roll, pitch, yaw])


def rotation_log(rot: np.ndarray) -> np.ndarray:
    """(3,) rotation vector (axis * angle, rad) of a (3, 3) rotation matrix."""
    cos_angle = np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos_angle)
    vee = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    if angle < 1e-6:
        return 0.5 * vee
    if np.pi - angle < 1e-4:  # near pi: axis from the symmetric part
        sym = (rot + np.eye(3)) / 2.0
        axis = sym[np.argmax(np.diag(sym))]
        axis = axis / np.linalg.norm(axis)
        if np.dot(axis, vee) < 0:
            axis = -axis
        return angle * axis
    return angle / (2.0 * np.sin(angle)) * vee


def quat_to_matrix(quat: np.ndarray) -> np.ndarray:
    """(3, 3) rotation of a unit quaternion (w, x, y, z) (MuJoCo order)."""
    w, x, y, z = np.asarray(quat, dtype=float) / np.linalg.norm(quat)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (w, x, y, z) with w >= 0 of a (3, 3) rotation."""
    m = np.asarray(rot, dtype=float)
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = np.array([0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s])
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = np.empty(4)
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


# ------------------------------------------------------------------------------------- end-effector deltas
def apply_ee_delta(pos, rot, delta_xyz, delta_rpy) -> tuple[np.ndarray, np.ndarray]:
    """Target TCP pose after a Bridge end-effector delta: (pos + delta_xyz, rpy_to_matrix(delta_rpy) @ rot)."""
    delta_xyz = np.asarray(delta_xyz, dtype=float).reshape(3)
    delta_rpy = np.asarray(delta_rpy, dtype=float).reshape(3)
    return np.asarray(pos, dtype=float) + delta_xyz, rpy_to_matrix(*delta_rpy) @ np.asarray(rot, dtype=float)


def ee_delta_between(pos, rot, target_pos, target_rot) -> np.ndarray:
    """(6,) [dx, dy, dz, droll, dpitch, dyaw] that takes TCP pose (pos, rot) to (target_pos, target_rot).

    The inverse of :func:`apply_ee_delta` (same Bridge convention).
    """
    dxyz = np.asarray(target_pos, dtype=float) - np.asarray(pos, dtype=float)
    return np.concatenate([dxyz, matrix_to_rpy(np.asarray(target_rot) @ np.asarray(rot).T)])
