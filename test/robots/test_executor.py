"""Chunk scheduling, safety gate and IK adapter of the chunk executor (ROS-free)."""
import numpy as np
import pytest

from pixelvla_robots.executor import (
    HOLD, MOVE, NO_ACTION_DUE, STOP, Chunk, ChunkExecutor, ChunkRejected, ChunkSchedule, JointReading, SafetyGate,
    chunk_executor_from_parameters,
)
from pixelvla_robots import wx250s

GATE = dict(workspace_min=[0.1, -0.35, 0.02], workspace_max=[0.5, 0.35, 0.45], max_step_translation=0.05, max_step_rotation=0.35,
            robot=wx250s.ROBOT)
PERIOD = 0.2
VELOCITY = 2.0  # rad/s, the gate's default


def chunk(stamp, rows, dt=0.2):
    actions = np.asarray(rows, dtype=float)
    return Chunk.checked(stamp, dt, actions.ravel(), len(actions), 7)


def step(dx=0.0, gripper=1.0):
    return [dx, 0, 0, 0, 0, 0, gripper]


def reading(q, t, stamp=None):
    """Joints `q` measured (and arrived) at `t`."""
    return JointReading(np.asarray(q, dtype=float), t if stamp is None else stamp, t)


def executor(schedule=None, **kwargs):
    return ChunkExecutor(schedule or ChunkSchedule(), SafetyGate(**GATE), period=PERIOD, **kwargs)


def tcp(q):
    return wx250s.fk(q)[0]


def q_at(position, q_start=wx250s.HOME_Q):
    """Joints that put the TCP at `position` (m), orientation as at `q_start`."""
    return wx250s.solve_ik(q_start, np.asarray(position, float), wx250s.fk(q_start)[1])


def run(ex, q, times, follow=True):
    """Tick at `times` from joints `q`; the arm reaches each target before the next tick if `follow`.
    Returns (commands sent, final joints)."""
    sent = []
    for t in times:
        command = ex.tick(t, reading(q, t))
        if command is not None:
            sent.append(command)
            if follow and command.kind != STOP:
                q = command.joints
    return sent, q


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(actions=np.zeros(13), horizon=2, action_dim=7), "13 values do not make horizon 2"),
        (dict(actions=np.zeros(12), horizon=2, action_dim=6), "action_dim 6"),
        (dict(actions=[np.nan] + [0] * 6, horizon=1, action_dim=7), "NaN or inf"),
        (dict(actions=np.zeros(7), horizon=1, action_dim=7, dt=0.0), "dt must be positive"),
        (dict(actions=np.zeros(7), horizon=1, action_dim=7, dt=np.nan), "dt must be positive"),
    ],
)
def test_bad_chunks_are_rejected(kwargs, message):
    dt = kwargs.pop("dt", 0.2)
    with pytest.raises(ChunkRejected, match=message):
        Chunk.checked(0.0, dt, **kwargs)


@pytest.mark.parametrize(
    "stamp, dt, message",
    [
        (100.0 + 10.0, 0.2, "in the future"),      # item 1: now + 10 s
        (100.0 + 1e6, 0.2, "in the future"),       # now + 1e6 s
        (100.0 - 1.5, 0.2, "old"),
        (100.0, 1e9, "outside \\[min_chunk_dt"),  # item 2: dt bounded
        (100.0, 1e-4, "outside \\[min_chunk_dt"),
    ],
)
def test_future_old_and_badly_timed_chunks_are_refused(stamp, dt, message):
    ex = executor()
    with pytest.raises(ChunkRejected, match=message):
        ex.offer(chunk(stamp, [step(0.01)], dt=dt), now=100.0)
    assert run(ex, wx250s.HOME_Q, np.arange(100.0, 103.0, 0.1))[0] == []
    ex.offer(chunk(103.05, [step(0.01)]), now=103.0)  # a camera clock a little ahead: within max_future_stamp
    assert ex.tick(103.01, reading(wx250s.HOME_Q, 103.01, stamp=103.06)).kind == MOVE


def test_receding_horizon_runs_the_first_actions_once_in_order():
    schedule = ChunkSchedule(execute_steps=2)
    schedule.add(chunk(9.9, [step(0.01), step(0.02), step(0.03)]), ready=10.0)
    assert schedule.take(10.0)[0][0] == pytest.approx(0.01)  # the first action at once
    assert schedule.take(10.05)[0] is None  # not yet (the next is due from 10.1: half a dt early)
    assert schedule.take(10.15)[0][0] == pytest.approx(0.02)
    assert schedule.take(10.5)[0] is None and schedule.next_due(wait=0.1) == np.inf  # only the first 2 run
    schedule.add(chunk(10.4, [step(0.04)]), ready=10.5)  # a newer chunk replaces the plan
    assert schedule.take(10.55) == (pytest.approx(step(0.04)), True)


def test_temporal_ensemble_weights_older_chunks_more():
    schedule = ChunkSchedule(strategy="temporal_ensemble", ensemble_decay=0.5)
    schedule.add(chunk(0.0, [step(0.0), step(0.01)]), ready=0.0)
    assert schedule.take(0.0)[0][0] == 0.0
    schedule.add(chunk(0.2, [step(0.03)]), ready=0.19)
    w = np.exp(-0.5 * np.arange(2))
    assert schedule.take(0.19)[0][0] == pytest.approx((w[0] * 0.01 + w[1] * 0.03) / w.sum())  # a tick a bit early
    assert schedule.take(0.4)[0] is None  # every action ran once


@pytest.mark.parametrize("dt", [PERIOD, 0.5, 1.0])
def test_an_action_is_executed_once_whatever_dt(dt):
    """Item 2: a chunk with dt above the period ran its action on every tick (the TCP moved 5 cm for one
    1 cm action). Each action is one displacement: three actions move the arm three times, 1 cm each."""
    ex = executor(watchdog_timeout=5.0)
    q = wx250s.HOME_Q.copy()
    ex.offer(chunk(0.0, [step(0.01)] * 3, dt=dt), now=0.0)
    sent, q_end = run(ex, q, np.arange(0.01, 3 * dt + 0.4, 0.1))
    assert [c.kind for c in sent] == [MOVE] * 3
    assert tcp(q_end) - tcp(q) == pytest.approx([0.03, 0.0, 0.0], abs=1e-3)
    assert np.all(np.diff([c.time for c in sent]) >= dt - 1e-9)  # action i no earlier than i * dt


def test_gate_scales_steps_and_clips_the_gripper():
    gate = SafetyGate(**GATE)
    action, notes = gate.limit(np.array([0.3, 0, 0, 1.0, 0, 0, 2.0]))
    assert np.linalg.norm(action[:3]) == pytest.approx(0.05)
    assert np.linalg.norm(action[3:6]) == pytest.approx(0.35)
    assert action[6] == 1.0 and len(notes) == 2
    huge, _ = gate.limit(np.array([1e308, 1e308, -1e308, 0, 0, 1e300, 0.5]))
    assert np.linalg.norm(huge[:3]) == pytest.approx(0.05) and np.linalg.norm(huge[3:6]) == pytest.approx(0.35)


def test_executor_commands_ik_targets_inside_every_limit():
    ex = executor(watchdog_timeout=1.0)
    q = wx250s.HOME_Q.copy()
    ex.offer(chunk(0.0, [[0.2, 0.0, -0.1, 0.5, 0, 0, 0.0]] * 5), now=0.0)
    pos0 = tcp(q)
    sent, q_end = run(ex, q, np.arange(0.01, 1.0, 0.1))
    assert len(sent) == 5 and all(c.kind == MOVE for c in sent)
    q_before = q
    for command in sent:
        assert np.linalg.norm(tcp(command.joints) - tcp(q_before)) <= 0.05
        assert np.all(np.abs(command.joints - q_before) <= VELOCITY * PERIOD + 1e-12)
        assert np.all(command.joints >= wx250s.JOINT_LOWER) and np.all(command.joints <= wx250s.JOINT_UPPER)
        p = tcp(command.joints)
        assert np.all(p >= np.array(GATE["workspace_min"])) and np.all(p <= np.array(GATE["workspace_max"]))
        q_before = command.joints
    assert sent[-1].gripper == 0.0
    assert np.linalg.norm(tcp(q_end) - pos0) > 0.1  # it did move


def test_an_arm_outside_the_workspace_is_brought_back_one_step_at_a_time():
    """Item 3: with the TCP measured at x = 0 (the box starts at x = 0.1) one command moved it 10-16 cm."""
    q = q_at([0.0, 0.0, 0.35])
    assert tcp(q)[0] == pytest.approx(0.0, abs=1e-3)
    ex = executor()
    ex.offer(chunk(0.0, [step(-0.05)] * 5), now=0.0)  # even actions pointing further out
    sent, q_end = run(ex, q, np.arange(0.01, 1.0, 0.1))
    assert len(sent) == 5
    q_before = q
    for command in sent:
        assert command.kind == MOVE
        assert np.linalg.norm(tcp(command.joints) - tcp(q_before)) <= 0.05
        assert np.all(np.abs(command.joints - q_before) <= VELOCITY * PERIOD + 1e-12)
        if tcp(q_before)[0] < 0.1:
            assert tcp(command.joints)[0] > tcp(q_before)[0]  # towards the box
        else:
            assert tcp(command.joints)[0] >= 0.1  # and then it stays inside
        q_before = command.joints
    assert tcp(q_end)[0] >= 0.1  # back inside after a few steps


def test_stale_or_invalid_joint_states_stop_the_arm():
    """Item 4: with /joint_states stopped (or NaN, which the node never takes as a reading) chunks kept
    moving the arm from the last good joints."""
    ex = executor(max_joint_state_age=0.5)
    q = wx250s.HOME_Q.copy()
    ex.offer(chunk(0.0, [step(0.01)] * 5), now=0.0)
    assert ex.tick(0.01, reading(q, 0.0)).kind == MOVE
    stop = ex.tick(0.6, reading(q, 0.0))  # the newest joint state arrived 0.6 s ago
    assert stop.kind == STOP and "stale" in stop.reason and "stale" in ex.state
    for t in np.arange(0.7, 2.0, 0.1):  # fresh chunks, still no joint state: nothing moves
        ex.offer(chunk(t, [step(0.01)]), now=t)
        assert ex.tick(t, reading(q, 0.0)) is None
    ex.offer(chunk(2.0, [step(0.01)]), now=2.0)  # (a stop forgets queued chunks)
    assert ex.tick(2.05, reading(q, 2.05)).kind == MOVE  # fresh joints: chunks run again
    assert ex.tick(2.3, reading(np.full(6, np.nan), 2.3)).kind == STOP


def test_a_hold_never_sends_an_old_target():
    """Item 5: after a watchdog hold the arm was moved 5 cm by hand, and the next chunk sent it back to
    the old target. Holding sends nothing (the controller finishes the last move and keeps it), no
    older target ever goes out again, and a new chunk starts where the arm is measured."""
    ex = executor(watchdog_timeout=0.5)
    q = wx250s.HOME_Q.copy()
    ex.offer(chunk(0.0, [step(0.02)] * 2), now=0.0)
    sent, _ = run(ex, q, [0.01, 0.35], follow=False)  # the arm lags: still at q
    assert [c.kind for c in sent] == [MOVE, MOVE]
    assert ex.tick(0.45, reading(q, 0.45)) is None and ex.state == NO_ACTION_DUE  # the controller finishes it
    assert ex.tick(0.55, reading(q, 0.55)) is None and "watchdog" in ex.state
    moved = q_at(tcp(q) + [0.0, 0.05, 0.0])  # pushed 5 cm by hand
    assert run(ex, moved, np.arange(0.6, 2.0, 0.1))[0] == []  # nothing while holding
    ex.offer(chunk(2.0, [step(0.01)]), now=2.0)
    command = ex.tick(2.01, reading(moved, 2.0))
    assert tcp(command.joints) - tcp(moved) == pytest.approx([0.01, 0.0, 0.0], abs=1e-3)
    assert np.all(np.abs(command.joints - moved) <= VELOCITY * PERIOD)
    assert ex.final_hold(2.02, reading(moved, 2.0)).joints == pytest.approx(moved)  # an explicit hold: where it is


def test_the_watchdog_cuts_a_plan_by_its_actions_times_not_the_ticks():
    """Actions due within watchdog_timeout of the newest chunk run even when ticks come late (a loaded
    machine); later ones never."""
    ex = executor(watchdog_timeout=0.5)
    q = wx250s.HOME_Q.copy()
    ex.offer(chunk(0.0, [step(0.01)] * 5), now=0.0)
    sent, _ = run(ex, q, [0.0, 0.35, 0.55, 0.9, 1.2, 1.5])  # every tick late
    assert [c.time for c in sent] == pytest.approx([0.0, 0.3, 0.5])  # actions 0-2 (due at 0, 0.2, 0.4 + T/2): not 3


def test_a_fast_chunk_stream_does_not_speed_the_arm_up():
    """Item 6: 20 Hz chunks gave 5-8 commands/s with gaps down to 2 ms. Targets go out at most once a
    period: over any window, count <= rate * window + 1."""
    ex = executor()
    q = wx250s.HOME_Q.copy()
    sent = []
    for i, t in enumerate(np.arange(0.0, 3.0, 0.01)):  # the node ticks on every chunk and joint state
        if i % 5 == 0:
            ex.offer(chunk(t - 0.03, [step(0.02)] * 5, dt=0.05), now=t)
        command = ex.tick(t, reading(q, t))
        if command is not None:
            sent.append(command)
            q = command.joints
    times = np.array([c.time for c in sent])
    assert all(c.kind == MOVE for c in sent)
    assert len(times) <= (times[-1] - times[0]) / PERIOD + 1 and len(times) >= 10
    assert np.min(np.diff(times)) >= PERIOD - 1e-9


def test_late_ticks_do_not_accumulate_and_a_stall_gives_no_burst():
    """Moves are stamped with their slots: a tick that notices a slot late does not push the next
    one back; after a stall the executor does not catch up with moves in quick succession."""
    ex = executor()
    q = wx250s.HOME_Q.copy()
    sent = []
    for k in range(10):  # a chunk each period, a little early: it waits for its slot, noticed 30 ms late
        arrival = k * PERIOD - (0.01 if k else 0.0)
        ex.offer(chunk(arrival, [step(0.005)]), now=arrival)
        assert ex.tick(arrival, reading(q, arrival)) is None or k == 0
        sent.append(ex.tick(k * PERIOD + 0.03, reading(q, k * PERIOD + 0.03)) if k else ex.last_command)
    assert [c.time for c in sent] == pytest.approx([k * PERIOD for k in range(10)])
    ex.offer(chunk(2.0, [step(0.005)] * 5), now=2.0)
    first = ex.tick(2.0, reading(q, 2.0))
    stalled = [ex.tick(t, reading(q, t)) for t in (3.0, 3.01, 3.05, 3.1)]  # nothing ran for a second
    times = [first.time] + [c.time for c in stalled if c is not None]
    assert times == pytest.approx([2.0, 2.95, 3.15][:len(times)]) and len(times) == 2  # one move at 3.0, stamped 3.0 - T/4


def test_a_plan_yields_to_a_chunk_that_comes_on_time():
    """A plan's second action waits half a period: a chunk arriving a little after the tick starts at
    once instead of waiting behind the old plan (which would add a period of latency for good)."""
    ex = executor()
    q = wx250s.HOME_Q.copy()
    ex.offer(chunk(0.0, [step(0.01)] * 5), now=0.0)
    assert ex.tick(0.0, reading(q, 0.0)).kind == MOVE
    assert ex.tick(0.2, reading(q, 0.2)) is None  # the old plan's action 1 would be due now
    ex.offer(chunk(0.2, [step(-0.01)] * 5), now=0.23)
    command = ex.tick(0.23, reading(q, 0.23))
    assert command.kind == MOVE and tcp(command.joints)[0] < tcp(q)[0]  # the new chunk, at once


def test_with_a_chunk_every_two_periods_its_second_action_runs_on_time():
    """steps_per_inference 2: action 1 runs a period after action 0 (not half a period late, which would push
    the next chunk's first action back by the rate limit and leave a period without a move); action 2, when
    the next chunk is due, waits half a period for it. Each chunk's first move is stamped with its image's time
    (it arrives 30 ms later)."""
    ex = executor(ChunkSchedule(steps_per_inference=2))
    q = wx250s.HOME_Q.copy()
    sent = []
    for k in range(4):  # a chunk every two periods, 30 ms after its image; ticks every T/10
        ex.offer(chunk(2 * k * PERIOD, [step(0.005, gripper=g) for g in (1.0, 0.5, 0.0)]), now=2 * k * PERIOD + 0.03)
        for t in 2 * k * PERIOD + 0.03 + np.arange(0, 2 * PERIOD - 1e-9, PERIOD / 10):
            command = ex.tick(t, reading(q, t))
            if command is not None:
                sent.append(command)
    assert [c.time for c in sent] == pytest.approx([k * PERIOD for k in range(8)])
    assert [c.gripper for c in sent] == [1.0, 0.5] * 4


def test_a_late_chunk_does_not_hold_the_following_moves_back():
    """A chunk every two periods, one of them 45 ms later than the others: every chunk's first move is still
    stamped with its image's time, so the moves stay on the images' grid. (Stamped with their arrival, the
    late chunk's moves pushed every later one back by the rate limit: the grid only ever drifted later.)"""
    ex = executor(ChunkSchedule(steps_per_inference=2))
    q = wx250s.HOME_Q.copy()
    sent = []
    for k, latency in enumerate([0.005, 0.045, 0.005, 0.005]):
        image = 2 * k * PERIOD
        ex.offer(chunk(image, [step(0.005)] * 3), now=image + latency)
        for t in image + latency + np.arange(0, 2 * PERIOD - 1e-9, PERIOD / 10):
            command = ex.tick(t, reading(q, t))
            if command is not None:
                sent.append(command)
    assert [c.time for c in sent] == pytest.approx([k * PERIOD for k in range(8)])


def test_a_chunk_later_than_a_quarter_period_skips_its_first_action_instead_of_delaying_every_later_one():
    """A chunk every two periods, the second 170 ms late. The first plan's third action fills in at 2.5 T;
    the late chunk's first action would then go out at 3.5 T, 1.5 T after its time, and hold every later
    move back as long (the rate limit lets none catch up, and a move more than T/4 late lands in the next
    simulator step). It skips that action and its second runs at 3.5 T; the next chunk skips its first too
    and runs its second at 5 T, on the images' grid again. A chunk 80 ms late, noticed at the next tick
    (85 ms), runs its first action 35 ms late, and every later move runs as late: within T/4 of its time,
    nothing is skipped."""
    for late, expected in ((0.170, [0, 1, 2.5, 3.5, 5, 6, 7]), (0.080, [0, 1, 2.175, 3.175, 4.175, 5.175, 6.175, 7.175])):
        ex = executor(ChunkSchedule(steps_per_inference=2))
        q = wx250s.HOME_Q.copy()
        arrivals = [(2 * k * PERIOD, 2 * k * PERIOD + latency) for k, latency in enumerate([0.005, late, 0.005, 0.005])]
        sent = []
        for t in np.arange(0.005, 8 * PERIOD, PERIOD / 10):  # the node's timer, chunks offered as they arrive
            for k, (image, arrival) in enumerate(arrivals):
                if t - PERIOD / 10 < arrival <= t:
                    ex.offer(chunk(image, [step(0.02 if k == 1 else 0.004), step(0.004), step(0.004)]), now=arrival)
            command = ex.tick(t, reading(q, t))
            if command is not None:  # the arm follows: each move's step is its action's
                sent.append((command.time, float(np.linalg.norm(tcp(command.joints) - tcp(q)))))
                q = command.joints
        assert [time for time, _ in sent] == pytest.approx([k * PERIOD for k in expected])
        assert max(step for _, step in sent) == pytest.approx(0.02 if late < 0.1 else 0.004, abs=1e-3)  # skipped: never run


def test_a_chunk_rate_the_executor_cannot_follow_is_refused_when_it_is_built():
    with pytest.raises(ValueError, match="steps_per_inference 4 exceeds execute_steps 3: the arm would stop"):
        ChunkSchedule(execute_steps=3, steps_per_inference=4)
    ChunkSchedule(strategy="temporal_ensemble", execute_steps=3, steps_per_inference=4)  # it runs the whole chunk
    with pytest.raises(ValueError, match="steps_per_inference 3 x 0.2 s reaches watchdog_timeout 0.6 s"):
        executor(ChunkSchedule(steps_per_inference=3), watchdog_timeout=0.6)
    executor(ChunkSchedule(steps_per_inference=2), watchdog_timeout=0.6)
    executor(watchdog_timeout=0.1)  # one action of each chunk: a watchdog shorter than a period holds when one is late


def test_no_command_leaves_the_joint_limits_and_the_estop_stops():
    """Item 7: with the waist measured at 3.5 rad (limit 3.1416) the e-stop's hold commanded 3.5 rad."""
    q = wx250s.HOME_Q.copy()
    ex = executor()
    ex.offer(chunk(0.0, [step(0.01)] * 5), now=0.0)
    assert ex.tick(0.01, reading(q, 0.01)).kind == MOVE
    beyond = q.copy()
    beyond[0] = 3.5
    stop = ex.tick(0.25, reading(beyond, 0.25))
    assert stop.kind == STOP and stop.fault and "waist measured at 3.500 rad" in stop.reason
    ex.offer(chunk(0.3, [step(0.01)]), now=0.3)
    assert ex.tick(0.31, reading(beyond, 0.31)) is None  # refused: nothing moves from there
    ex.estop()
    estop = ex.tick(0.4, reading(beyond, 0.4))
    assert estop.kind == STOP and estop.joints is None and estop.reason == "e-stop latched"
    assert ex.tick(0.6, reading(q, 0.6)) is None  # one stop
    with pytest.raises(ChunkRejected, match="e-stop"):
        ex.offer(chunk(0.6, [step(0.01)]), now=0.6)
    at_limit = q.copy()
    at_limit[0] = wx250s.JOINT_UPPER[0] + 0.005  # a hair beyond: at the limit
    ex.reset_estop()
    ex.offer(chunk(0.7, [[0, 0.05, 0, 0, 0, 0.35, 1]]), now=0.7)  # pushes the waist further out
    command = ex.tick(0.71, reading(at_limit, 0.71))
    assert command.kind == MOVE and np.all(command.joints <= wx250s.JOINT_UPPER)


def test_the_final_hold():
    """Item 8: the command for a shutdown."""
    ex = executor()
    q = wx250s.HOME_Q.copy()
    hold = ex.final_hold(1.0, reading(q, 0.9))
    assert hold.kind == HOLD and np.array_equal(hold.joints, q)
    q[1] = wx250s.JOINT_LOWER[1] - 0.005  # a hair beyond a limit: clamped into it
    assert np.all(ex.final_hold(1.0, reading(q, 0.9)).joints >= wx250s.JOINT_LOWER)
    assert ex.final_hold(2.0, reading(q, 0.9)).kind == STOP  # stale
    assert ex.final_hold(2.0, None).kind == STOP
    ex.estop()
    assert ex.final_hold(1.0, reading(q, 0.9)).kind == STOP


def test_joint_velocity_is_limited_per_command():
    """Item 9: in-limit actions moved single joints 0.8 rad in a 0.2 s tick."""
    q = wx250s.HOME_Q.copy()
    ex = executor()
    ex.offer(chunk(0.0, [[0, 0, 0, 0, 0, 0.35, 1]] * 3), now=0.0)  # a full-step yaw: the IK turns the forearm 1.25 rad
    sent, _ = run(ex, q, np.arange(0.01, 1.0, 0.1), follow=False)
    assert len(sent) == 3
    for command in sent:
        assert np.max(np.abs(command.joints - q)) <= VELOCITY * PERIOD + 1e-12
    assert any("max_joint_velocity" in c.reason for c in sent)


def test_watchdog_holds_and_estop_latches():
    ex = executor(schedule=ChunkSchedule(execute_steps=50), watchdog_timeout=0.5)
    q = wx250s.HOME_Q.copy()
    ex.offer(chunk(0.0, [step(0.01)] * 50), now=0.0)
    sent, _ = run(ex, q, np.arange(0.1, 1.5, 0.1))
    assert len(sent) == 3 and "watchdog" in ex.state  # actions due at 0, 0.2 and 0.4 s; then it holds
    ex.offer(chunk(1.5, [step(0.01)] * 50), now=1.5)
    ex.estop()
    assert ex.tick(1.6, reading(q, 1.6)).kind == STOP
    with pytest.raises(ChunkRejected, match="e-stop"):
        ex.offer(chunk(1.7, [step(0.01)]), now=1.7)
    assert ex.tick(1.8, reading(q, 1.8)) is None and ex.state == "e-stop latched"  # still latched, one stop
    ex.reset_estop()
    ex.offer(chunk(1.9, [step(0.01)]), now=1.9)
    assert ex.tick(1.95, reading(q, 1.95)).kind == MOVE


def test_nothing_is_sent_before_the_first_move_except_the_estop():
    ex = executor()
    q = wx250s.HOME_Q.copy()
    assert run(ex, q, np.arange(0.0, 2.0, 0.1))[0] == []
    assert ex.tick(3.0, reading(q, 2.0)) is None  # stale: no stop either
    ex.estop()
    assert ex.tick(3.1, reading(q, 3.1)).kind == STOP


def test_a_new_chunk_waits_for_joints_measured_after_its_image():
    """A joint state published with the image can arrive after the chunk: the plan must not be anchored
    on the pose before it; after a period without one (clocks apart) it starts anyway."""
    ex = executor()
    q_before, q_after = wx250s.HOME_Q.copy(), q_at(tcp(wx250s.HOME_Q) + [0.0, 0.03, 0.0])
    ex.offer(chunk(10.0, [step(0.02)]), now=10.05)
    assert ex.tick(10.05, reading(q_before, 10.05, stamp=9.9)) is None
    command = ex.tick(10.06, reading(q_after, 10.06, stamp=10.01))
    assert tcp(command.joints) == pytest.approx(tcp(q_after) + [0.02, 0.0, 0.0], abs=2e-3)
    ex.offer(chunk(10.3, [step(0.02)]), now=10.35)
    assert ex.tick(10.4, reading(q_after, 10.4, stamp=5.0)) is None  # a joint-state clock 5 s behind
    assert ex.tick(10.55, reading(q_after, 10.55, stamp=5.1)).kind == MOVE


def test_a_chunk_is_executed_open_loop_from_its_first_measured_pose():
    """An arm that lags (joints measured where the previous tick left them) still gets the whole plan."""
    ex = executor()
    q = wx250s.HOME_Q.copy()
    start = tcp(q)
    ex.offer(chunk(0.0, [step(0.01)] * 3), now=0.0)
    sent, _ = run(ex, q, np.arange(0.01, 0.8, 0.1), follow=False)  # q never updated: full lag
    assert tcp(sent[-1].joints) - start == pytest.approx([0.03, 0.0, 0.0], abs=1e-3)
    ex.offer(chunk(0.8, [step(0.01)]), now=0.8)  # a new plan starts from the measured pose again
    assert tcp(ex.tick(0.81, reading(q, 0.81)).joints) - start == pytest.approx([0.01, 0.0, 0.0], abs=1e-3)


def test_a_blocked_arm_does_not_wind_up_the_target():
    ex = executor(schedule=ChunkSchedule(execute_steps=10), max_tracking_error=0.025, watchdog_timeout=3.0)
    q = wx250s.HOME_Q.copy()
    start = tcp(q)
    ex.offer(chunk(0.0, [step(0.01)] * 10, dt=PERIOD), now=0.0)
    sent, _ = run(ex, q, np.arange(0.01, 2.0, 0.1), follow=False)
    reach = [tcp(c.joints)[0] - start[0] for c in sent]
    assert len(reach) >= 6 and max(reach) <= 0.025 + 0.01 + 1e-3  # restarted from the measured pose once 2.5 cm ahead


def test_an_executor_from_the_robot_parameters_has_every_one_of_them():
    parameters = dict(robot_model="wx250s", control_rate_hz=10.0, strategy="temporal_ensemble", execute_steps=3,
                      steps_per_inference=2,
                      ensemble_decay=0.3, max_chunk_age=0.7, max_future_stamp=0.05, min_chunk_dt=0.02, max_chunk_dt=0.5,
                      workspace_min=[0.1, -0.3, 0.03], workspace_max=[0.4, 0.3, 0.4], max_step_translation=0.04,
                      max_step_rotation=0.3, max_joint_velocity=[1.5] * 6, watchdog_timeout=0.8,
                      max_tracking_error=0.02, max_joint_state_age=0.4, joint_names=list(wx250s.JOINT_NAMES))
    ex = chunk_executor_from_parameters(parameters)
    s, g = ex.schedule, ex.gate
    assert (ex.period, ex.watchdog_timeout, ex.max_tracking_error, ex.max_joint_state_age) == (0.1, 0.8, 0.02, 0.4)
    assert (s.strategy, s.execute_steps, s.steps_per_inference, s.ensemble_decay, s.max_chunk_age, s.max_future_stamp,
            s.min_dt, s.max_dt) == ("temporal_ensemble", 3, 2, 0.3, 0.7, 0.05, 0.02, 0.5)
    assert g.robot is wx250s.ROBOT and (g.max_step_translation, g.max_step_rotation) == (0.04, 0.3)
    np.testing.assert_array_equal(g.workspace_min, [0.1, -0.3, 0.03])
    np.testing.assert_array_equal(g.workspace_max, [0.4, 0.3, 0.4])
    np.testing.assert_array_equal(g.max_joint_velocity, [1.5] * 6)
    defaults = chunk_executor_from_parameters({k: parameters[k] for k in (
        "robot_model", "control_rate_hz", "workspace_min", "workspace_max", "max_step_translation", "max_step_rotation")})
    assert defaults.schedule.strategy == ChunkSchedule().strategy and defaults.watchdog_timeout == ChunkExecutor.watchdog_timeout
    with pytest.raises(ValueError, match="lack max_step_rotation"):
        chunk_executor_from_parameters({k: v for k, v in parameters.items() if k != "max_step_rotation"})
