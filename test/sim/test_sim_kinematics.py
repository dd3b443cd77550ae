"""wx250s numpy kinematics: FK against MuJoCo's model, Jacobian, IK, gripper mapping, no simulator import."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pixelvla_robots import wx250s


@pytest.fixture(scope="module")
def mj():
    import pixelvla_sim  # noqa: F401  (GL backend before mujoco)
    import mujoco

    from pixelvla_sim.env import SCENE_XML

    model = mujoco.MjModel.from_xml_path(str(SCENE_XML))
    return mujoco, model, mujoco.MjData(model)


def random_q(rng, n):
    return rng.uniform(wx250s.JOINT_LOWER, wx250s.JOINT_UPPER, size=(n, 6))


def test_fk_matches_mujoco_site(mj):
    mujoco, model, data = mj
    qadr = [model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n)] for n in wx250s.JOINT_NAMES]
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "tcp")
    worst_pos, worst_rot = 0.0, 0.0
    for q in np.vstack([wx250s.HOME_Q, np.zeros(6), random_q(np.random.default_rng(0), 200)]):
        data.qpos[qadr] = q
        mujoco.mj_kinematics(model, data)
        pos, rot = wx250s.fk(q)
        worst_pos = max(worst_pos, np.linalg.norm(pos - data.site_xpos[site]))
        worst_rot = max(worst_rot, np.abs(rot - data.site_xmat[site].reshape(3, 3)).max())
    assert worst_pos < 1e-3
    assert worst_pos < 1e-6  # same frames: agreement is exact up to rounding
    assert worst_rot < 1e-6


def test_model_limits_and_masses_match_table(mj):
    mujoco, model, _ = mj
    for i, name in enumerate(wx250s.JOINT_NAMES):
        j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        np.testing.assert_allclose(model.jnt_range[j], [wx250s.JOINT_LOWER[i], wx250s.JOINT_UPPER[i]], atol=1e-4)
    for link, mass in wx250s.LINK_MASSES.items():
        if link == "base_link":
            continue
        b = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, link)
        assert model.body_mass[b] == pytest.approx(mass, rel=1e-6), link


def test_jacobian_matches_finite_differences():
    rng = np.random.default_rng(1)
    eps = 1e-6
    for q in random_q(rng, 10):
        jac = wx250s.jacobian(q)
        pos0, rot0 = wx250s.fk(q)
        for j in range(6):
            dq = np.zeros(6)
            dq[j] = eps
            pos1, rot1 = wx250s.fk(q + dq)
            np.testing.assert_allclose(jac[:3, j], (pos1 - pos0) / eps, atol=1e-5)
            np.testing.assert_allclose(jac[3:, j], wx250s.rotation_log(rot1 @ rot0.T) / eps, atol=1e-5)


def test_rotation_conversions_round_trip():
    rng = np.random.default_rng(2)
    for rpy in rng.uniform([-np.pi, -1.5, -np.pi], [np.pi, 1.5, np.pi], size=(50, 3)):
        rot = wx250s.rpy_to_matrix(*rpy)
        np.testing.assert_allclose(wx250s.matrix_to_rpy(rot), rpy, atol=1e-9)
        np.testing.assert_allclose(wx250s.quat_to_matrix(wx250s.matrix_to_quat(rot)), rot, atol=1e-12)
    # rpy is fixed-axis x, then y, then z
    np.testing.assert_allclose(wx250s.rpy_to_matrix(0, 0, np.pi / 2) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def _ik_errors(starts, rng):
    """Bridge deltas solved as the chunk executor solves them: solve_ik from q to apply_ee_delta(fk(q))."""
    pos_err, rot_err = [], []
    for q in starts:
        dxyz, drpy = rng.uniform(-0.03, 0.03, 3), rng.uniform(-0.1, 0.1, 3)
        pos, rot = wx250s.fk(q)
        want_pos, want_rot = wx250s.apply_ee_delta(pos, rot, dxyz, drpy)
        q_target = wx250s.solve_ik(q, want_pos, want_rot)
        got_pos, got_rot = wx250s.fk(q_target)
        pos_err.append(np.linalg.norm(got_pos - want_pos))
        rot_err.append(np.linalg.norm(wx250s.rotation_log(want_rot @ got_rot.T)))
        if rot_err[-1] < 1e-3:  # the Bridge delta between the two poses is the command again
            np.testing.assert_allclose(wx250s.ee_delta_between(pos, rot, got_pos, got_rot), np.r_[dxyz, drpy], atol=2e-3)
    return np.array(pos_err), np.array(rot_err)


def test_ik_reaches_small_deltas_in_working_poses():
    """Bridge-sized deltas from gripper-down poses over the table: position and orientation converge."""
    rng = np.random.default_rng(3)
    down = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # TCP x pointing down
    starts = []
    for _ in range(100):
        target = np.array([rng.uniform(0.2, 0.42), rng.uniform(-0.2, 0.2), rng.uniform(0.04, 0.2)])
        yaw = wx250s.rpy_to_matrix(0, 0, np.arctan2(target[1], target[0]) + rng.uniform(-0.5, 0.5))
        starts.append(wx250s.solve_ik(wx250s.HOME_Q, target, yaw @ down, iterations=100))
    pos_err, rot_err = _ik_errors(starts, rng)
    assert np.mean(pos_err < 1e-3) >= 0.98 and np.mean(pos_err) < 2e-4
    assert np.mean(rot_err < 1e-2) >= 0.95 and np.mean(rot_err) < 5e-3


def test_ik_near_wrist_singularity_keeps_position():
    """Around home the wrist is near its singularity (wrist_angle ~ 0): some rotations are out of reach in
    one step; the IK then gives up a little orientation, never position."""
    rng = np.random.default_rng(4)
    pos_err, rot_err = _ik_errors(wx250s.HOME_Q + rng.uniform(-0.3, 0.3, (200, 6)), rng)
    assert np.mean(pos_err < 1e-3) >= 0.98 and np.mean(pos_err) < 3e-4
    assert np.mean(rot_err) < np.deg2rad(2.5)


def test_ik_clamps_to_joint_limits_and_rejects_bad_input():
    pos, rot = wx250s.fk(wx250s.HOME_Q)
    q_target = wx250s.solve_ik(wx250s.HOME_Q, pos + [2.0, 0.0, 0.0], rot)  # far out of reach
    assert np.all(q_target >= wx250s.JOINT_LOWER) and np.all(q_target <= wx250s.JOINT_UPPER)
    assert np.all(np.isfinite(q_target))
    with pytest.raises(ValueError):
        wx250s.solve_ik(np.zeros(5), pos, rot)
    with pytest.raises(ValueError):
        wx250s.solve_ik(wx250s.HOME_Q, [np.nan, 0, 0], rot)


def test_gripper_mapping_bridge_convention():
    assert wx250s.gripper_to_finger(1.0) == pytest.approx(0.037)
    assert wx250s.gripper_to_finger(0.0) == pytest.approx(0.015)
    assert wx250s.gripper_to_finger(7.0) == pytest.approx(0.037)  # clipped
    assert wx250s.finger_to_gripper(0.026) == pytest.approx(0.5)
    assert wx250s.binarize_gripper(0.7) == 1.0 and wx250s.binarize_gripper(0.2) == 0.0
    with pytest.raises(ValueError):
        wx250s.gripper_to_finger(float("nan"))


def test_kinematics_module_does_not_import_mujoco():
    code = "import sys, pixelvla_robots.wx250s; assert 'mujoco' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
