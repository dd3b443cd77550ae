"""Simulator + chunk executor over DDS: tracking, the expert's episode, watchdog, e-stop, bad commands."""
import json
import signal
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pixelvla_ros import qos
from pixelvla_ros.msg import ActionChunk
from pixelvla_robots import wx250s
from support import start_launch

pytestmark = pytest.mark.ros
NODE_SETS = Path(__file__).parent / "node_sets"
NODE_SET = str(NODE_SETS / "sim_executor.nodes.yaml")


class Stack:
    def __init__(self, probe, *args, node_set=NODE_SET):
        self.probe = probe
        self.episode: dict = {}
        self.joints: list[JointState] = []
        self.arm = probe.collect(JointTrajectory, "/arm_controller/joint_trajectory", qos.COMMAND)
        probe.node.create_subscription(String, "/sim/episode", lambda m: self.episode.update(json.loads(m.data)), qos.LATCHED)
        probe.node.create_subscription(JointState, "/joint_states", self.joints.append, qos.SENSOR)
        self.chunks = probe.publisher(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND)
        self.runner = start_launch(node_set, *args)
        self.output: str | None = None
        assert probe.spin_until(lambda: self.joints and probe.node.count_subscribers("/pixelvla/action_chunk") > 0, timeout=60), "stack did not start"

    def q(self) -> np.ndarray:
        positions = dict(zip(self.joints[-1].name, self.joints[-1].position))
        return np.array([positions[n] for n in wx250s.JOINT_NAMES])

    def send(self, rows, sequence=0):
        msg = ActionChunk(horizon=len(rows), action_dim=7, dt=0.2, action_space="ee_delta", sequence=sequence)
        msg.actions = np.asarray(rows, np.float32).ravel().tolist()
        msg.header.stamp = self.probe.node.get_clock().now().to_msg()
        self.chunks.publish(msg)

    def stop(self) -> str:
        """Stop the stack (once) and return its log."""
        if self.output is None:
            self.runner.send_signal(signal.SIGINT)
            self.output, _ = self.runner.communicate(timeout=30)
        return self.output


@pytest.fixture
def stack(ros_node, request):
    s = Stack(ros_node, *getattr(request, "param", ()))
    yield s
    s.stop()


def test_executor_tracks_end_effector_deltas_within_a_centimetre(stack):
    stack.probe.spin_for(1.0)  # let the arm settle at home
    start, _ = wx250s.fk(stack.q())
    step = np.array([0.01, 0.008, -0.006])  # m per action
    stack.send([[*step, 0, 0, 0, 1.0]] * 5)
    stack.probe.spin_for(2.5)  # 5 actions at 5 Hz, then settle
    end, _ = wx250s.fk(stack.q())
    error = np.linalg.norm((end - start) - 5 * step)
    assert error < 0.01, f"tracking error {error * 1000:.1f} mm"
    q = np.array(stack.arm[0].points[0].positions)
    assert np.all(q >= wx250s.JOINT_LOWER) and np.all(q <= wx250s.JOINT_UPPER)


def test_watchdog_holds_when_chunks_stop_and_estop_latches(stack):
    probe = stack.probe
    stack.send([[0.01, 0, 0, 0, 0, 0, 1.0]] * 5)
    assert probe.spin_until(lambda: len(stack.arm) >= 3, timeout=10)
    probe.spin_for(2.0)  # no new chunk: the watchdog (1 s) holds
    q_hold = stack.q()
    n = len(stack.arm)
    probe.spin_for(1.0)
    assert len(stack.arm) == n, "commands kept coming without chunks"
    assert np.allclose(stack.q(), q_hold, atol=2e-3), "the arm moved while holding"

    estop = probe.publisher(Bool, "/pixelvla/estop", qos.COMMAND)
    probe.spin_for(0.5)
    estop.publish(Bool(data=True))
    probe.spin_for(0.5)
    n = len(stack.arm)
    stack.send([[0.01, 0, 0, 0, 0, 0, 1.0]] * 5, sequence=1)
    probe.spin_for(1.5)
    assert len(stack.arm) == n, "a chunk was executed while the e-stop was latched"
    estop.publish(Bool(data=False))  # releasing the button does not reset the latch
    stack.send([[0.01, 0, 0, 0, 0, 0, 1.0]] * 5, sequence=2)
    probe.spin_for(1.0)
    assert len(stack.arm) == n

    client = probe.node.create_client(Trigger, "/executor/reset_estop")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    assert probe.spin_until(future.done, timeout=10) and future.result().success
    stack.send([[0.01, 0, 0, 0, 0, 0, 1.0]] * 5, sequence=3)
    assert probe.spin_until(lambda: len(stack.arm) > n, timeout=10)


@pytest.mark.parametrize("stack", [("expert:=true",)], indirect=True)
def test_expert_solves_the_task_through_the_executor(stack):
    assert stack.probe.spin_until(lambda: stack.episode.get("done"), timeout=60), stack.episode
    assert stack.episode["success"], stack.episode


def test_the_expert_succeeds_when_the_simulator_steps_late(ros_node):
    """A loaded machine: each step starts 120 ms late and commands that arrive meanwhile wait for the
    next step. The executor answers a chunk at once, so the expert still solves the episode (when
    chunks waited for the executor's own tick, this seed ran out of steps)."""
    stack = Stack(ros_node, node_set=str(NODE_SETS / "slow_sim_executor.nodes.yaml"))
    try:
        reset = ros_node.publisher(String, "/sim/reset", qos.COMMAND)
        reset.publish(String(data=json.dumps({"task": "put_green_cube_in_bowl", "seed": 1000})))
        assert ros_node.spin_until(lambda: stack.episode.get("seed") == 1000 and stack.episode["step"] == 0, timeout=10)
        assert ros_node.spin_until(lambda: stack.episode.get("done"), timeout=60), stack.episode
        assert stack.episode["success"], stack.episode
    finally:
        stack.stop()


def test_bad_commands_and_resets_leave_the_sim_running(stack):
    probe = stack.probe
    arm = probe.publisher(JointTrajectory, "/arm_controller/joint_trajectory", qos.COMMAND)
    reset = probe.publisher(String, "/sim/reset", qos.COMMAND)
    probe.spin_until(lambda: stack.episode.get("step", 0) >= 1, timeout=10)
    q = stack.q()
    wrong = JointTrajectory(joint_names=["a", "b", "c", "d", "e", "f"], points=[JointTrajectoryPoint(positions=[0.5] * 6)])
    nan = JointTrajectory(joint_names=list(wx250s.JOINT_NAMES), points=[JointTrajectoryPoint(positions=[float("nan")] * 6)])
    arm.publish(wrong)
    arm.publish(nan)
    reset.publish(String(data=json.dumps({"task": "juggle_the_cubes", "seed": 1})))
    reset.publish(String(data="not json"))
    step = stack.episode["step"]
    probe.spin_for(1.5)
    assert stack.episode["step"] > step, "the simulation stopped stepping"
    assert stack.episode["task"] == "put_red_cube_on_plate"
    assert np.allclose(stack.q(), q, atol=5e-3), "a refused command moved the arm"
    reset.publish(String(data=json.dumps({"task": "put_green_cube_in_bowl", "seed": 4})))  # mid-episode reset
    assert probe.spin_until(lambda: stack.episode.get("task") == "put_green_cube_in_bowl", timeout=10)
    out = stack.stop()
    for text in ("arm trajectory refused: joints ['a'", "must be finite", "unknown task 'juggle_the_cubes'",
                 "reset refused", "reset during episode"):
        assert text in out, f"{text!r} not logged"


@pytest.mark.parametrize("start_by", ["policy_active", "reset"])
def test_the_first_episode_waits_for_the_policy_or_a_reset(ros_node, start_by):
    """wait_for_policy: the episode holds at step 0, the camera streaming, until the policy reports ACTIVE
    (an INACTIVE one does not count) or a reset comes; then it steps."""
    import subprocess
    import sys

    from pixelvla_ros.msg import PolicyStatus

    episodes, frames = [], []  # /sim/episode, /joint_states (published with every camera frame)
    ros_node.node.create_subscription(String, "/sim/episode", lambda m: episodes.append(json.loads(m.data)), qos.LATCHED)
    ros_node.node.create_subscription(JointState, "/joint_states", frames.append, qos.SENSOR)
    status = ros_node.publisher(PolicyStatus, "/pixelvla/status", qos.LATCHED)
    sim = subprocess.Popen([sys.executable, "-m", "pixelvla_ros.nodes.sim_node", "--ros-args", "-r", "__node:=sim",
                            "-p", "wait_for_policy:=true", "-p", "control_rate_hz:=10.0"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert ros_node.spin_until(lambda: len(frames) >= 5, timeout=60), "the sim does not stream while it waits"
        status.publish(PolicyStatus(state=PolicyStatus.INACTIVE))
        seen = len(frames)
        ros_node.spin_until(lambda: len(frames) >= seen + 5, timeout=30)
        assert episodes and all(e["step"] == 0 for e in episodes), "the episode ran before the policy was ACTIVE"
        if start_by == "policy_active":
            status.publish(PolicyStatus(state=PolicyStatus.ACTIVE, model_id="a-test-policy"))
        else:
            reset = ros_node.publisher(String, "/sim/reset", qos.COMMAND)
            ros_node.spin_until(lambda: ros_node.node.count_subscribers("/sim/reset") > 0, timeout=10)
            reset.publish(String(data=json.dumps({"task": "put_green_cube_in_bowl", "seed": 2})))
        assert ros_node.spin_until(lambda: episodes[-1]["step"] >= 2, timeout=30), "the episode did not start"
    finally:
        sim.send_signal(signal.SIGINT)
        out, _ = sim.communicate(timeout=30)
    assert "holds at step 0: waiting for the policy to report ACTIVE on pixelvla/status" in out, out
    if start_by == "policy_active":
        assert "the policy is ACTIVE (a-test-policy): episode put_red_cube_on_plate seed 0 starts" in out, out
    else:
        assert episodes[-1]["task"] == "put_green_cube_in_bowl"
