"""The executor node as a process over DDS, driven by a fake arm in the test (joint states at 50 Hz that
follow every move at once): each safety item fed the input that broke it, checked at the output.

Timing is never asserted as a speed: waits have generous timeouts, rates are checked on the stamps
the executor gives its commands, and counts are bounds.
"""
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pixelvla_ros import qos
from pixelvla_ros.msg import ActionChunk
from pixelvla_robots import wx250s

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[2]
ROBOT = str(ROOT / "config" / "robots" / "widowx_bridge.yaml")
STEP, VELOCITY, PERIOD = 0.05, 2.0, 0.2  # widowx_bridge.yaml


def tcp(q):
    return wx250s.fk(np.asarray(q, dtype=float))[0]


def q_at(position, q_start=wx250s.HOME_Q):
    return wx250s.solve_ik(q_start, np.asarray(position, float), wx250s.fk(q_start)[1])


def stamp_of(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


class FakeArm:
    """The arm and the policy as the executor sees them, from the test's probe node."""

    def __init__(self, probe, *params: str) -> None:
        self.probe = probe
        self.q = wx250s.HOME_Q.copy()
        self.publishing, self.nan, self.follow = True, False, True
        self.commands: list[JointTrajectory] = []
        probe.node.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory", self.on_command, qos.COMMAND)
        self.diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
        self.joint_pub = probe.publisher(JointState, "/joint_states", qos.SENSOR)
        self.chunk_pub = probe.publisher(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND)
        self.estop_pub = probe.publisher(Bool, "/pixelvla/estop", qos.COMMAND)
        probe.node.create_timer(0.02, self.publish_joints)
        args = [arg for param in params for arg in ("-p", param)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pixelvla_ros.nodes.executor_node", "--ros-args", "--params-file", ROBOT, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.output: str | None = None
        ready = probe.spin_until(lambda: probe.node.count_subscribers("/pixelvla/action_chunk") > 0
                                 and probe.node.count_publishers("/arm_controller/joint_trajectory") > 0
                                 and "watchdog" in self.status().message, timeout=60)
        assert ready, f"the executor did not start:\n{self.stop()}"

    def publish_joints(self) -> None:
        if self.publishing:
            msg = JointState(name=[*wx250s.JOINT_NAMES, *wx250s.FINGER_NAMES])
            msg.header.stamp = self.probe.node.get_clock().now().to_msg()
            q = np.full(6, np.nan) if self.nan else self.q
            msg.position = [*map(float, q), wx250s.FINGER_OPEN, -wx250s.FINGER_OPEN]
            self.joint_pub.publish(msg)

    def on_command(self, msg: JointTrajectory) -> None:
        self.commands.append(msg)
        if self.follow and msg.points:
            self.q = np.array(msg.points[0].positions)

    def send(self, rows, dt=PERIOD, stamp_offset=0.0, sequence=0) -> None:
        msg = ActionChunk(horizon=len(rows), action_dim=7, dt=float(dt), action_space="ee_delta", sequence=sequence)
        msg.actions = np.asarray(rows, np.float32).ravel().tolist()
        seconds = self.probe.node.get_clock().now().nanoseconds * 1e-9 + stamp_offset
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(seconds), int((seconds % 1.0) * 1e9)
        self.chunk_pub.publish(msg)

    def moves(self) -> list[JointTrajectory]:
        return [c for c in self.commands if c.points]

    def stops(self) -> list[JointTrajectory]:
        return [c for c in self.commands if not c.points]

    def status(self):
        """The newest diagnostics status of the executor (an empty one before the first)."""
        return self.diagnostics[-1].status[0] if self.diagnostics else DiagnosticStatus()

    def value(self, key: str) -> str:
        return {kv.key: kv.value for kv in self.status().values}.get(key, "")

    def wait(self, condition, timeout=10.0) -> bool:
        return self.probe.spin_until(condition, timeout=timeout)

    def stop(self, sig=signal.SIGINT) -> str:
        if self.output is None:
            if self.process.poll() is None:
                self.process.send_signal(sig)
            self.probe.spin_until(lambda: self.process.poll() is not None, timeout=20)  # receive its last words
            if self.process.poll() is None:
                self.process.kill()
            self.output, _ = self.process.communicate(timeout=10)
        return self.output


@pytest.fixture
def arm(ros_node, request):
    fake = FakeArm(ros_node, *getattr(request, "param", ()))
    yield fake
    fake.stop()


def step(dx=0.0, dy=0.0, dz=0.0, yaw=0.0):
    return [dx, dy, dz, 0.0, 0.0, yaw, 1.0]


def test_chunks_stamped_in_the_future_are_refused_and_reported(arm):
    """Item 1: a chunk stamped now + 10 s (or + 1e6 s) was executed."""
    for sequence, offset in enumerate((10.0, 1e6)):
        arm.send([step(0.02)] * 5, stamp_offset=offset, sequence=sequence)
        assert arm.wait(lambda: f"chunk {sequence}: chunk is stamped" in arm.value("last_rejection")), arm.value("last_rejection")
        assert "in the future (max_future_stamp 0.1 s)" in arm.value("last_rejection")
    arm.probe.spin_for(0.5)
    assert arm.commands == []
    arm.send([step(0.02)], sequence=2)  # the same chunk stamped now runs
    assert arm.wait(lambda: len(arm.moves()) == 1)


def test_a_long_dt_runs_each_action_once(arm):
    """Item 2: horizon 1 with dt 1e9 repeated its 1 cm action every tick (5 cm until the watchdog)."""
    arm.send([step(0.01)], dt=1e9)
    assert arm.wait(lambda: "outside [min_chunk_dt 0.01, max_chunk_dt 1.0] s" in arm.value("last_rejection"))
    start = tcp(arm.q)
    arm.send([step(0.01)], dt=0.9, sequence=1)  # within the range, longer than the period
    arm.probe.spin_for(2.0)
    assert len(arm.moves()) == 1
    assert tcp(arm.q) - start == pytest.approx([0.01, 0.0, 0.0], abs=1e-3)


@pytest.mark.parametrize("where", ["tcp_x_0", "waist_3.5"])
def test_an_arm_outside_the_limits_is_never_jumped(arm, where):
    """Item 3: with the TCP measured at x = 0 (or the waist at 3.5 rad) one command moved the TCP
    0.10-0.16 m and a joint 1.2-3.1 rad."""
    if where == "tcp_x_0":
        arm.q = q_at([0.0, 0.0, 0.35])
    else:
        arm.q = wx250s.HOME_Q.copy()
        arm.q[0] = 3.5
    arm.follow = False
    q_measured = arm.q.copy()
    arm.send([step(-0.05)] * 5)  # pointing further out
    arm.probe.spin_for(1.5)
    if where == "waist_3.5":  # beyond a joint limit: no move, an error
        assert arm.moves() == []
        assert arm.status().level == DiagnosticStatus.ERROR and "waist measured at 3.500 rad, beyond its limits" in arm.status().message
        return
    moves = arm.moves()
    assert moves, "the arm outside the box was not brought back"
    for move in moves:
        q = np.array(move.points[0].positions)
        assert np.linalg.norm(tcp(q) - tcp(q_measured)) <= STEP + 1e-9
        assert np.all(np.abs(q - q_measured) <= VELOCITY * PERIOD + 1e-9)
        assert tcp(q)[0] > tcp(q_measured)[0]  # towards the box


@pytest.mark.parametrize("failure", ["stopped", "nan"])
def test_stale_joint_states_stop_the_arm(arm, failure):
    """Item 4: with /joint_states stopped or NaN, chunks kept moving the arm from the last good joints."""
    arm.send([step(0.01)] * 5)
    assert arm.wait(lambda: len(arm.moves()) >= 1)
    if failure == "stopped":
        arm.publishing = False
    else:
        arm.nan = True
    assert arm.wait(lambda: arm.stops(), timeout=5), "no stop"
    assert arm.wait(lambda: "joint states stale" in arm.status().message)
    moves = len(arm.moves())
    for sequence in range(1, 6):  # a policy still streaming
        arm.send([step(0.01)] * 5, sequence=sequence)
        arm.probe.spin_for(0.2)
    assert len(arm.moves()) == moves, "a move from a stale joint state"
    arm.publishing, arm.nan = True, False
    arm.probe.spin_for(0.2)
    arm.send([step(0.01)] * 5, sequence=9)
    assert arm.wait(lambda: len(arm.moves()) > moves), "no move once joint states came back"


def test_holding_never_sends_an_old_target(arm):
    """Item 5: after a watchdog hold the arm was moved 5 cm by hand and the next chunk jumped it back."""
    arm.send([step(0.02)] * 2)
    assert arm.wait(lambda: len(arm.moves()) == 2)
    assert arm.wait(lambda: "watchdog" in arm.status().message, timeout=5)
    sent = len(arm.commands)
    arm.q = q_at(tcp(arm.q) + [0.0, 0.05, 0.0])  # pushed by hand
    pushed = arm.q.copy()
    arm.probe.spin_for(1.0)
    assert len(arm.commands) == sent, "a command while holding"
    arm.send([step(0.01)], sequence=1)
    assert arm.wait(lambda: len(arm.commands) > sent)
    q = np.array(arm.commands[sent].points[0].positions)
    assert tcp(q) - tcp(pushed) == pytest.approx([0.01, 0.0, 0.0], abs=1e-3)  # from where it is, not back
    assert np.all(np.abs(q - pushed) <= VELOCITY * PERIOD + 1e-9)


def test_a_20_hz_chunk_stream_gets_at_most_the_control_rate(arm):
    """Item 6: 5-20 Hz chunks gave 5-8.2 commands/s, gaps down to 2 ms, 0.10 m within 0.2 s."""
    start = tcp(arm.q)
    for sequence in range(60):  # 3 s of a 20 Hz model with 2 cm steps
        arm.send([step(0.02)] * 5, dt=0.05, sequence=sequence)
        arm.probe.spin_for(0.05)
    arm.probe.spin_for(0.5)
    stamps = np.array([stamp_of(m) for m in arm.moves()])
    window = stamps[-1] - stamps[0]
    assert len(stamps) >= 5
    assert len(stamps) <= 5.0 * window + 1, f"{len(stamps)} commands in {window:.2f} s"
    assert np.min(np.diff(stamps)) >= PERIOD - 1e-6
    assert np.linalg.norm(tcp(arm.q) - start) <= 0.02 * len(stamps) + 1e-3  # one action per command


def test_the_estop_stops_and_no_command_leaves_the_joint_limits(arm):
    """Item 7: with the waist measured at 3.5 rad the e-stop's hold commanded 3.5 rad."""
    arm.send([step(0.0, 0.05, 0.0, 0.35)] * 5)  # towards the waist limit
    assert arm.wait(lambda: len(arm.moves()) >= 2)
    arm.q[0] = 3.5
    arm.probe.spin_for(0.3)
    arm.estop_pub.publish(Bool(data=True))
    assert arm.wait(lambda: "e-stop latched" in arm.status().message and arm.stops())
    stop = arm.stops()[-1]
    assert list(stop.joint_names) == list(wx250s.JOINT_NAMES) and stop.points == []
    assert stamp_of(stop) == 0.0  # "now": a stamped trajectory without points would end in the past
    assert arm.status().level == DiagnosticStatus.ERROR
    for move in arm.moves():
        q = np.array(move.points[0].positions)
        assert np.all(q >= wx250s.JOINT_LOWER) and np.all(q <= wx250s.JOINT_UPPER)


def test_sigint_sends_a_final_hold_at_the_measured_joints(arm):
    """Item 8: on shutdown the executor holds the arm where it is measured, first."""
    arm.send([step(0.02)] * 5)
    assert arm.wait(lambda: len(arm.moves()) >= 2)
    arm.follow = False  # the arm lags behind its last target
    arm.q = arm.q + 0.01
    arm.probe.spin_for(0.3)
    output = arm.stop(signal.SIGINT)
    assert arm.process.returncode == 0, output
    last = arm.commands[-1]
    assert len(last.points) == 1 and np.array(last.points[0].positions) == pytest.approx(arm.q), output
    assert "hold: shutdown" in output


def test_sigint_without_joint_states_sends_a_stop(arm):
    arm.publishing = False
    arm.probe.spin_for(0.8)  # stale
    output = arm.stop(signal.SIGINT)
    assert arm.process.returncode == 0, output
    assert arm.commands and arm.commands[-1].points == [], output


def test_joint_velocity_is_limited(arm):
    """Item 9: in-limit actions moved single joints 0.8 rad in a 0.2 s tick."""
    arm.send([step(yaw=0.35)] * 3)  # the IK turns the forearm 1.25 rad for this one
    assert arm.wait(lambda: len(arm.moves()) == 3)
    q_before = wx250s.HOME_Q
    for move in arm.moves():
        q = np.array(move.points[0].positions)
        assert np.max(np.abs(q - q_before)) <= VELOCITY * PERIOD + 1e-9
        q_before = q


def test_the_simulator_stops_where_the_arm_is_on_an_empty_trajectory(ros_domain):
    """Item 7, the sim side: a trajectory without points stops the simulated arm where it is, whatever
    target came before (the sim node's callbacks called in process: the physics reaches a target within
    one step, so over DDS the order against the step timer would be a race)."""
    import rclpy

    from pixelvla_ros.nodes.sim_node import SimNode

    rclpy.init(domain_id=ros_domain)
    sim = SimNode()
    try:
        here = sim.obs["joint_positions"].copy()
        far = wx250s.HOME_Q + np.array([0.6, 0.3, -0.3, 0.0, 0.3, 0.0])
        sim.on_arm_command(JointTrajectory(joint_names=list(wx250s.JOINT_NAMES), points=[JointTrajectoryPoint(positions=far.tolist())]))
        assert sim.q_target == pytest.approx(far)
        sim.on_arm_command(JointTrajectory(joint_names=list(wx250s.JOINT_NAMES)))  # stop
        assert np.array_equal(sim.q_target, here)
        for _ in range(5):
            sim.on_step()
        assert np.max(np.abs(sim.obs["joint_positions"] - here)) < 0.02, "the arm moved after the stop"
        sim.on_arm_command(JointTrajectory(joint_names=list(wx250s.JOINT_NAMES), points=[JointTrajectoryPoint(positions=far.tolist())]))
        sim.on_step()
        moved = sim.obs["joint_positions"].copy()
        sim.on_arm_command(JointTrajectory(joint_names=list(wx250s.JOINT_NAMES)))  # a stop after a move
        assert np.array_equal(sim.q_target, moved)
    finally:
        sim.destroy_node()
        rclpy.shutdown()
