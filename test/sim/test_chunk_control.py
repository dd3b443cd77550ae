"""In-process episodes move the arm as the executor node does: the same ChunkExecutor, parameters and timing."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from pixelvla_robots import wx250s
from pixelvla_robots.base import get_robot
from pixelvla_robots.executor import Chunk, ChunkExecutor, ChunkSchedule, JointReading, SafetyGate
from pixelvla_sim.control import ChunkControl
from pixelvla_sim.env import TabletopEnv

ROBOT = Path(__file__).resolve().parents[2] / "config" / "robots" / "widowx_bridge.yaml"
CHUNK_LATENCY = 0.01  # s from an observation to its chunk's arrival at the node


def node_executor() -> ChunkExecutor:
    """The executor as executor_node.py builds it from the robot YAML (the node's parameter names)."""
    p = yaml.safe_load(ROBOT.read_text())["/**"]["ros__parameters"]
    schedule = ChunkSchedule(steps_per_inference=p["steps_per_inference"], max_chunk_age=p["max_chunk_age"],
                             max_future_stamp=p["max_future_stamp"], min_dt=p["min_chunk_dt"], max_dt=p["max_chunk_dt"])
    gate = SafetyGate(p["workspace_min"], p["workspace_max"], p["max_step_translation"], p["max_step_rotation"],
                      p["max_joint_velocity"], robot=get_robot(p["robot_model"]))
    return ChunkExecutor(schedule, gate, period=1.0 / p["control_rate_hz"], watchdog_timeout=p["watchdog_timeout"],
                         max_joint_state_age=p["max_joint_state_age"])


def random_chunk(rng) -> np.ndarray:
    """(4, 7) chunk with steps up to 8 cm and 0.4 rad: the safety gate cuts some of them."""
    return np.c_[rng.uniform(-0.08, 0.08, (4, 3)), rng.uniform(-0.4, 0.4, (4, 3)), rng.uniform(0, 1, (4, 1))]


def test_in_process_commands_equal_the_executor_nodes_for_the_same_chunks_and_joints():
    rng = np.random.default_rng(11)
    with TabletopEnv(render=False, masks=False) as env:
        obs = env.reset("put_this_cube_on_plate", 5, render=False)
        control = env.chunk_control
        assert control.period == env.control_period == 0.2  # widowx_bridge.yaml: 5 Hz
        steps = []  # (time, measured joints, chunk or None, in-process command or None)
        while sum(command is not None and command.kind == "move" for *_, command in steps) < 20:
            time, joints = control.now(), obs["joint_positions"]
            # A chunk every two steps, as the policy node sends them (steps_per_inference 2): between them the
            # executor runs the plan's second action.
            chunk = random_chunk(rng) if len(steps) % 2 == 0 else None
            if chunk is not None:
                assert control.offer(chunk)
            sent = len(control.commands)
            obs = control.step(render=False)
            steps.append((time, joints, chunk, control.commands[-1] if len(control.commands) > sent else None))
        assert len(steps) < 40

    # The executor node: a joint state with each observation, the chunk a little later; it ticks on every
    # input and ten times a period; the sim node applies the last command of each period at the next step.
    executor, period = node_executor(), 0.2
    limited = 0
    for time, joints, chunk, in_process in steps:
        reading = JointReading(joints, time, time)
        commands = [executor.tick(time, reading)]
        if chunk is not None:
            executor.offer(Chunk(time, period, chunk), time + CHUNK_LATENCY)
            commands.append(executor.tick(time + CHUNK_LATENCY, reading))
        commands += [executor.tick(time + j * period / 10, reading) for j in range(1, 10)]
        sent = [c for c in commands if c is not None]
        assert len(sent) <= 1
        if in_process is None:
            assert not sent
            continue
        (node,) = sent
        assert node.kind == in_process.kind == "move"
        np.testing.assert_allclose(in_process.joints, node.joints, atol=1e-6)  # the IK's own tolerance is 1e-4 m
        assert in_process.gripper == pytest.approx(node.gripper)
        limited += bool(in_process.reason)
    assert limited >= 3  # the safety gate took part, identically


def robot_file(tmp_path, **parameters) -> Path:
    """A copy of the WidowX robot file with `parameters` changed."""
    document = yaml.safe_load(ROBOT.read_text())
    document["/**"]["ros__parameters"].update(parameters)
    robot = tmp_path / "robot.yaml"
    robot.write_text(yaml.safe_dump(document))
    return robot


@pytest.mark.parametrize("steps", [1, 3])
def test_the_policy_is_asked_every_steps_per_inference_periods_and_its_actions_run_in_turn(tmp_path, steps):
    """Between two chunks the executor runs the chunk's next actions, one a period: its gripper commands
    follow the chunk's, and every step goes through the gate."""
    calls = []

    def policy(obs):
        calls.append(obs["step"])
        gripper = np.linspace(1.0, 0.0, 5)[:, None]  # a different command for each action
        return np.c_[np.tile([0.2, 0.0, 0.0, 0.0, 0.0, 0.0], (5, 1)), gripper]  # 20 cm a step: cut by the gate

    with TabletopEnv(render=False, masks=False, robot_config=robot_file(tmp_path, steps_per_inference=steps)) as env:
        obs = env.reset("put_red_cube_on_plate", 1, render=False)
        control = env.chunk_control
        for _ in range(6):
            before = wx250s.fk(obs["joint_positions"])[0]
            obs = control.step_policy(obs, policy, render=False)
            commanded = wx250s.fk(control.commands[-1].joints)[0]
            assert np.linalg.norm(commanded - before) <= control.executor.gate.max_step_translation + 1e-9
        assert calls == list(range(0, 6, steps))
        assert [c.gripper for c in control.commands] == pytest.approx([1.0 - 0.25 * (i % steps) for i in range(6)])


def test_the_shipped_robot_file_runs_two_actions_of_each_chunk():
    with TabletopEnv(render=False, masks=False) as env:
        assert env.chunk_control.steps_per_inference == 2


@pytest.mark.parametrize("parameters, reason", [
    (dict(steps_per_inference=0), "at least 1"),
    (dict(steps_per_inference=4, execute_steps=3), "exceeds execute_steps 3"),
    (dict(steps_per_inference=5, watchdog_timeout=1.0), "reaches watchdog_timeout"),
])
def test_a_policy_rate_the_executor_cannot_follow_is_refused(tmp_path, parameters, reason):
    with pytest.raises(ValueError, match=reason):
        TabletopEnv(render=False, masks=False, robot_config=robot_file(tmp_path, **parameters))


def test_refused_chunks_are_reported_and_the_arm_holds():
    with TabletopEnv(render=False, masks=False) as env:
        obs = env.reset("put_red_cube_on_plate", 1, render=False)
        control = env.chunk_control
        assert not control.offer(np.zeros((4, 6)))
        assert not control.offer(np.full((2, 7), np.nan))
        assert "action_dim 6" in control.rejections[0] and "NaN" in control.rejections[1]
        after = control.step(render=False)
        assert not control.commands
        np.testing.assert_allclose(after["joint_positions"], obs["joint_positions"], atol=2e-3)


def test_a_simulator_at_another_rate_than_the_robot_is_refused():
    with TabletopEnv(render=False, masks=False, control_period=0.1) as env:
        with pytest.raises(ValueError, match="must be the same"):
            ChunkControl(env)


def test_an_env_runs_the_chunk_schedule_of_the_robot_file_it_is_given(tmp_path):
    robot = robot_file(tmp_path, strategy="temporal_ensemble", ensemble_decay=0.5)
    with TabletopEnv(render=False, masks=False, robot_config=robot) as env:
        env.reset("put_this_cube_on_plate", 5, render=False)
        schedule = env.chunk_control.executor.schedule
        assert (schedule.strategy, schedule.ensemble_decay) == ("temporal_ensemble", 0.5)
    with TabletopEnv(render=False, masks=False) as env:  # default: the WidowX file, receding horizon
        env.reset("put_this_cube_on_plate", 5, render=False)
        assert env.chunk_control.executor.schedule.strategy == "receding_horizon"
    with pytest.raises(FileNotFoundError):
        TabletopEnv(render=False, masks=False, robot_config=tmp_path / "missing.yaml")
