"""Chunk scheduling, safety gate and IK adapter of the chunk executor."""
import numpy as np
import pytest

from pixelvla_training.control import Chunk, ChunkExecutor, ChunkRejected, ChunkSchedule, SafetyGate
from pixelvla_training.robots import wx250s

GATE = dict(workspace_min=[0.1, -0.35, 0.02], workspace_max=[0.5, 0.35, 0.45], max_step_translation=0.05, max_step_rotation=0.35)


def chunk(stamp, rows, dt=0.2):
    actions = np.asarray(rows, dtype=float)
    return Chunk.checked(stamp, dt, actions.ravel(), len(actions), 7)


def step(dx=0.0, gripper=1.0):
    return [dx, 0, 0, 0, 0, 0, gripper]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(actions=np.zeros(13), horizon=2, action_dim=7), "13 values do not make horizon 2"),
        (dict(actions=np.zeros(12), horizon=2, action_dim=6), "action_dim 6"),
        (dict(actions=[np.nan] + [0] * 6, horizon=1, action_dim=7), "NaN or inf"),
        (dict(actions=np.zeros(7), horizon=1, action_dim=7, dt=0.0), "dt must be positive"),
    ],
)
def test_bad_chunks_are_rejected(kwargs, message):
    dt = kwargs.pop("dt", 0.2)
    with pytest.raises(ChunkRejected, match=message):
        Chunk.checked(0.0, dt, **kwargs)


def test_receding_horizon_executes_first_k_in_time_order():
    schedule = ChunkSchedule(execute_steps=2)
    schedule.add(chunk(9.9, [step(0.01), step(0.02), step(0.03)]), now=10.0)  # due from its arrival
    assert schedule.due(10.05)[0][0] == pytest.approx(0.01)
    assert schedule.due(10.25)[0][0] == pytest.approx(0.02)
    assert schedule.due(10.45)[0] is None  # only the first 2 are executed
    schedule.add(chunk(10.4, [step(0.04)]), now=10.45)  # a newer chunk replaces the old one
    assert schedule.due(10.5)[0][0] == pytest.approx(0.04)
    assert schedule.due(10.66)[0] is None


def test_temporal_ensemble_weights_older_chunks_more():
    schedule = ChunkSchedule(strategy="temporal_ensemble", ensemble_decay=0.5)
    schedule.add(chunk(0.0, [step(0.0), step(0.01)]), now=0.0)
    schedule.add(chunk(0.2, [step(0.03)]), now=0.2)
    w = np.exp(-0.5 * np.arange(2))
    assert schedule.due(0.25)[0][0] == pytest.approx((w[0] * 0.01 + w[1] * 0.03) / w.sum())


def test_stale_chunk_is_rejected():
    schedule = ChunkSchedule(max_chunk_age=0.5)
    with pytest.raises(ChunkRejected, match="old"):
        schedule.add(chunk(0.0, [step()]), now=0.8)


def test_gate_scales_steps_and_clips_to_the_workspace():
    gate = SafetyGate(**GATE)
    action, notes = gate.limit(np.array([0.3, 0, 0, 1.0, 0, 0, 2.0]), tcp_position=np.array([0.3, 0, 0.2]))
    assert np.linalg.norm(action[:3]) == pytest.approx(0.05)
    assert np.linalg.norm(action[3:6]) == pytest.approx(0.35)
    assert action[6] == 1.0 and len(notes) == 2
    action, notes = gate.limit(np.array([0.04, 0, 0, 0, 0, 0, 1]), tcp_position=np.array([0.49, 0, 0.2]))
    assert action[0] == pytest.approx(0.01) and "workspace" in notes[0]


def test_executor_commands_ik_targets_inside_every_limit():
    executor = ChunkExecutor(ChunkSchedule(), SafetyGate(**GATE), watchdog_timeout=1.0)
    q = wx250s.HOME_Q.copy()
    executor.add_chunk(chunk(0.0, [[0.2, 0.0, -0.1, 0.5, 0, 0, 0.0]] * 5), now=0.0)
    pos0, _ = wx250s.fk(q)
    for t in np.arange(0.0, 1.0, 0.2):
        command = executor.tick(t + 0.01, q, 1.0)
        assert not command.hold
        pos, _ = wx250s.fk(command.joints)
        assert np.linalg.norm(pos - wx250s.fk(q)[0]) <= 0.05 + 1e-3
        assert np.all(command.joints >= wx250s.JOINT_LOWER) and np.all(command.joints <= wx250s.JOINT_UPPER)
        assert np.all(pos >= np.array(GATE["workspace_min"]) - 2e-3) and np.all(pos <= np.array(GATE["workspace_max"]) + 2e-3)
        q = command.joints
    assert command.gripper == 0.0
    assert np.linalg.norm(wx250s.fk(q)[0] - pos0) > 0.1  # it did move


def test_watchdog_holds_and_estop_latches():
    executor = ChunkExecutor(ChunkSchedule(execute_steps=50), SafetyGate(**GATE), watchdog_timeout=0.5)
    q = wx250s.HOME_Q.copy()
    executor.add_chunk(chunk(0.0, [step(0.01)] * 50), now=0.0)
    target = executor.tick(0.1, q, 1.0)
    assert not target.hold
    held = executor.tick(0.7, q, 1.0)  # the plan stops; its action in flight finishes
    assert held.hold and "watchdog" in held.reason and np.array_equal(held.joints, target.joints)
    assert executor.tick(0.9, q, 1.0).hold
    executor.add_chunk(chunk(1.0, [step(0.01)] * 50), now=1.0)
    executor.estop()
    assert executor.tick(1.1, q, 1.0).hold
    with pytest.raises(ChunkRejected, match="e-stop"):
        executor.add_chunk(chunk(1.2, [step(0.01)]), now=1.2)
    assert executor.tick(1.3, q, 1.0).reason == "e-stop latched"  # still latched
    executor.reset_estop()
    executor.add_chunk(chunk(1.4, [step(0.01)]), now=1.4)
    assert not executor.tick(1.45, q, 1.0).hold


def test_a_chunk_is_executed_open_loop_from_its_first_measured_pose():
    """An arm that lags (joints measured where the previous tick left them) still gets the whole plan."""
    executor = ChunkExecutor(ChunkSchedule(), SafetyGate(**GATE), watchdog_timeout=1.0)
    q = wx250s.HOME_Q.copy()
    start, _ = wx250s.fk(q)
    executor.add_chunk(chunk(0.0, [step(0.01)] * 3), now=0.0)
    targets = [executor.tick(t, q, 1.0).joints for t in (0.01, 0.21, 0.41)]  # q never updated: full lag
    assert wx250s.fk(targets[-1])[0] - start == pytest.approx([0.03, 0.0, 0.0], abs=1e-3)
    executor.add_chunk(chunk(0.5, [step(0.01)]), now=0.5)  # a new plan starts from the measured pose again
    assert wx250s.fk(executor.tick(0.51, q, 1.0).joints)[0] - start == pytest.approx([0.01, 0.0, 0.0], abs=1e-3)


def test_holds_let_the_last_action_finish_and_the_estop_stops_where_the_arm_is():
    """A tick that lands before the arm reached the last action must not stop it half-way, whether
    the plan is used up or the watchdog fired (the last chunk exactly watchdog_timeout ago)."""
    executor = ChunkExecutor(ChunkSchedule(), SafetyGate(**GATE), watchdog_timeout=0.5)
    q = wx250s.HOME_Q.copy()
    executor.add_chunk(chunk(0.0, [step(0.02)] * 2), now=0.0)
    target = [executor.tick(t, q, 1.0).joints for t in (0.01, 0.21)][-1]  # the arm has not moved yet
    held = executor.tick(0.41, q, 1.0)
    assert held.hold and held.reason == "no action due" and np.array_equal(held.joints, target)
    stopped = executor.tick(0.51, q, 1.0)
    assert stopped.hold and "watchdog" in stopped.reason and np.array_equal(stopped.joints, target)
    executor.add_chunk(chunk(0.7, [step(0.02)]), now=0.7)
    executor.tick(0.71, q, 1.0)
    executor.estop()
    assert np.array_equal(executor.tick(0.72, q, 1.0).joints, q)


def test_a_blocked_arm_does_not_wind_up_the_target():
    executor = ChunkExecutor(ChunkSchedule(execute_steps=10), SafetyGate(**GATE), max_tracking_error=0.025)
    q = wx250s.HOME_Q.copy()
    start, _ = wx250s.fk(q)
    executor.add_chunk(chunk(0.0, [step(0.01)] * 10), now=0.0)
    reach = [wx250s.fk(executor.tick(0.01 + 0.2 * i, q, 1.0).joints)[0][0] - start[0] for i in range(6)]
    assert max(reach) <= 0.025 + 0.01 + 1e-3  # restarted from the measured pose once 2.5 cm ahead
