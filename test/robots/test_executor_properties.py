"""A seeded random search over chunk streams and measured states: the executor never sends a command
beyond a limit, never moves the arm from a stale or invalid state, never exceeds the control rate.

Each case is a random executor configuration and a random sequence of events: chunks (stamps in the
past, present and far future, dt 0 / tiny / huge / NaN, values normal, huge or NaN, horizons 1-8),
joint states (following the arm, random anywhere in or beyond the joint limits, a hair beyond, NaN,
stale, with the publisher's clock off), e-stops and resets, and ticks at random times; then the final
hold. The limits are checked here from their definitions, not with the executor's own
`SafetyGate.violation`.
"""
import math

import numpy as np

from pixelvla_robots.executor import HOLD, MOVE, STOP, Chunk, ChunkExecutor, ChunkRejected, ChunkSchedule, JointReading, SafetyGate
from pixelvla_robots.executor import JOINT_LIMIT_TOLERANCE
from pixelvla_robots import wx250s

CASES = 3000
LOW, HIGH = np.array([0.1, -0.35, 0.02]), np.array([0.5, 0.35, 0.45])
STEP, TURN = 0.05, 0.35


def outside(position):
    return float(np.linalg.norm(position - np.clip(position, LOW, HIGH)))


def random_chunk(rng, now, period):
    horizon = int(rng.integers(1, 9))
    actions = rng.normal(0.0, [0.03, 0.03, 0.03, 0.2, 0.2, 0.2, 0.5], size=(horizon, 7))
    kind = rng.random()
    if kind < 0.05:
        actions.flat[rng.integers(actions.size)] = np.nan
    elif kind < 0.1:
        actions *= 10.0 ** rng.integers(2, 300)
    stamp = now - rng.uniform(0.0, 0.1)
    if rng.random() < 0.15:
        stamp = now + rng.choice([-1e6, -2.0, -0.9, 0.05, 0.5, 10.0, 1e6])
    dt = period if rng.random() < 0.6 else rng.choice([0.0, 1e-4, 0.01, 0.05, 0.9, 1.5, 1e9, np.nan, np.inf, -0.2])
    return stamp, dt, actions.ravel(), horizon


def random_joints(rng, last_target, q):
    kind = rng.random()
    if kind < 0.55 and last_target is not None:  # the arm moves towards its target
        return q + rng.uniform(0.3, 1.0) * (last_target - q)
    if kind < 0.7:
        return q  # it did not move
    if kind < 0.85:
        return rng.uniform(wx250s.JOINT_LOWER, wx250s.JOINT_UPPER)  # anywhere: often out of the box
    if kind < 0.9:  # a hair beyond a limit
        q = q.copy()
        i = int(rng.integers(6))
        q[i] = (wx250s.JOINT_UPPER if rng.random() < 0.5 else wx250s.JOINT_LOWER)[i] + rng.uniform(-1, 1) * JOINT_LIMIT_TOLERANCE
        return q
    if kind < 0.97:  # beyond a limit
        q = q.copy()
        i = int(rng.integers(6))
        q[i] = wx250s.JOINT_UPPER[i] + rng.uniform(0.02, 0.5) if rng.random() < 0.5 else wx250s.JOINT_LOWER[i] - rng.uniform(0.02, 0.5)
        return q
    return np.full(6, np.nan)


def check_reading(now, reading, ex):
    """Assert that a target may be sent from `reading` at `now`."""
    assert not ex.estopped, "a target under the e-stop"
    q_m = reading.joints
    assert np.all(np.isfinite(q_m)), "a target from an invalid joint state"
    assert now - reading.received <= ex.max_joint_state_age, "a target from a stale joint state"
    assert np.all(q_m >= wx250s.JOINT_LOWER - JOINT_LIMIT_TOLERANCE) and np.all(q_m <= wx250s.JOINT_UPPER + JOINT_LIMIT_TOLERANCE)


def check_move(command, now, reading, ex, last_move_time, velocity):
    """Assert the tick's `command` is within every limit."""
    if command.kind == STOP:
        assert command.joints is None
        return
    assert command.kind == MOVE, "a tick sends moves and stops only"
    check_reading(now, reading, ex)
    assert command.time - last_move_time >= ex.period - 1e-6, "two moves within a period"
    assert now - ex.period / 4 - 1e-6 <= command.time <= now, "a move stamped more than T/4 before it goes out"
    q, q_m = command.joints, reading.joints
    assert q.shape == (6,) and np.all(np.isfinite(q))
    assert np.all(q >= wx250s.JOINT_LOWER) and np.all(q <= wx250s.JOINT_UPPER), "a target beyond the joint limits"
    at_limit = np.clip(q_m, wx250s.JOINT_LOWER, wx250s.JOINT_UPPER)
    assert np.all(np.abs(q - q_m) <= velocity * ex.period + np.abs(at_limit - q_m) + 1e-12), "joint velocity"
    (p, r), (p_m, r_m) = wx250s.fk(q), wx250s.fk(at_limit)
    assert np.linalg.norm(p - p_m) <= STEP + 1e-12, "TCP step"
    assert np.linalg.norm(wx250s.rotation_log(r @ r_m.T)) <= TURN + 1e-12, "TCP rotation"
    assert outside(p) <= outside(p_m) + 1e-12, "TCP left (or went further out of) the workspace"
    assert 0.0 <= command.gripper <= 1.0


def run_case(seed):
    rng = np.random.default_rng(seed)
    period = float(rng.choice([0.1, 0.2, 0.5]))
    velocity = rng.uniform(0.5, 3.0, size=6)
    strategy, execute_steps = str(rng.choice(["receding_horizon", "temporal_ensemble"])), int(rng.integers(1, 6))
    watchdog = float(rng.choice([0.3, 1.0]))
    # a chunk every 1-3 periods, as many as the executor accepts (it refuses a rate it cannot follow)
    most = min(3, execute_steps if strategy == "receding_horizon" else 3, max(1, math.ceil(watchdog / period) - 1))
    ex = ChunkExecutor(
        ChunkSchedule(strategy=strategy, execute_steps=execute_steps, steps_per_inference=int(rng.integers(1, most + 1)),
                      max_chunk_age=1.0, max_future_stamp=0.1),
        SafetyGate(LOW, HIGH, STEP, TURN, velocity, robot=wx250s.ROBOT),
        period=period, watchdog_timeout=watchdog, max_joint_state_age=0.5,
    )
    now = float(rng.uniform(0, 100))
    q = wx250s.HOME_Q + rng.normal(0, 0.2, 6)
    reading = JointReading(q, now, now) if rng.random() < 0.9 else None
    last_target, last_move_time, sent = None, -math.inf, 0
    for _ in range(int(rng.integers(5, 30))):
        now += float(rng.choice([rng.uniform(0.0, 0.05), rng.uniform(0.05, 0.3), rng.uniform(0.3, 1.5)], p=[0.5, 0.4, 0.1]))
        event = rng.random()
        if event < 0.4:
            try:
                ex.offer(Chunk.checked(*random_chunk(rng, now, period), 7), now)
            except ChunkRejected:
                pass
        elif event < 0.75:
            q = random_joints(rng, last_target, q if reading is None or not np.all(np.isfinite(reading.joints)) else reading.joints)
            received = now if rng.random() < 0.9 else now - rng.uniform(0.0, 2.0)
            stamp = received + (rng.uniform(-5, 5) if rng.random() < 0.1 else 0.0)
            reading = JointReading(q, stamp, received)
        elif event < 0.78:
            ex.estop()
        elif event < 0.82:
            ex.reset_estop()
        command = ex.tick(now, reading)
        if command is not None:
            sent += 1
            check_move(command, now, reading, ex, last_move_time, velocity)
            if command.kind == MOVE:
                last_move_time, last_target = command.time, command.joints
    final = ex.final_hold(now, reading)
    if final.kind == HOLD:
        check_reading(now, reading, ex)
        assert np.array_equal(final.joints, np.clip(reading.joints, wx250s.JOINT_LOWER, wx250s.JOINT_UPPER))
    else:
        assert final.kind == STOP and final.joints is None
    return sent


def test_random_streams_and_states_never_break_a_limit():
    sent = [run_case(seed) for seed in range(CASES)]
    assert sum(sent) > CASES  # the search did produce commands to check
