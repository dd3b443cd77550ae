"""The robot side of the policy stack in process: action chunks -> ChunkExecutor -> joint targets of a TabletopEnv.

What the executor node and the sim node do over ROS, without ROS and on the simulation clock, so that
in-process episodes (demonstrations, DAgger, quick rollouts) move the arm exactly as the stack does:
the chunks go through `pixelvla_robots.executor.ChunkExecutor` (schedule, safety gate, IK) set up with
the executor node's parameters from the robot's YAML (default config/robots/widowx_bridge.yaml).

Clock: seconds since the episode's reset, `env.step_count * env.control_period`; the executor's period,
1 / `control_rate_hz`, must be the env's control period. Each control step at time t:
1. a chunk (N, 7) computed from the observation of t is offered, stamped t, when the policy is due (every
   `steps_per_inference` / `control_rate_hz` s, the policy node's rate);
2. the executor ticks with the joints measured at t (stamped and received at t) at the executor node's
   polling times t + j T / TICKS_PER_PERIOD (j = 0, 1, ...) until it commands something or the period ends
   (a plan's later actions fall due between two observations);
3. that command's joint targets and gripper go to `TabletopEnv.step`, which holds them for one control
   period, as the sim node applies at each step the last trajectory it got in the period before; no
   command: the controller keeps its last target; a stop: the measured joints become the target.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml

from pixelvla_robots.executor import (
    MOVE, TICKS_PER_PERIOD, TIME_EPSILON, Chunk, ChunkRejected, Command, JointReading,
    chunk_executor_from_parameters,
)

# The robot the simulator models (in a source checkout; pass another path elsewhere).
ROBOT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "robots" / "widowx_bridge.yaml"


def load_robot_parameters(path: str | Path = ROBOT_CONFIG) -> dict:
    """The parameters every node of the stack reads from a robot YAML (its `/**: ros__parameters` section)."""
    with open(path) as file:
        document = yaml.safe_load(file)
    try:
        parameters = dict(document["/**"]["ros__parameters"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: no '/**: ros__parameters' section") from exc
    try:
        chunk_executor_from_parameters(parameters)  # refused here as the executor node refuses it
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return parameters


class ChunkControl:
    """Executes action chunks on `env` (a TabletopEnv) through the executor the robot's parameters describe.

    `parameters`: the executor node's parameters (default: those of `ROBOT_CONFIG`). Call `reset(obs)`
    after each `env.reset`; then, every control step, `step_policy(obs, policy)` (or `offer` and `step`).
    `commands` holds every command of the episode, `rejections` why chunks were refused.
    """

    def __init__(self, env, parameters: dict | None = None):
        self.env = env
        self.parameters = load_robot_parameters() if parameters is None else dict(parameters)
        self.period = 1.0 / float(self.parameters["control_rate_hz"])  # s, the executor's
        if abs(self.period - env.control_period) > TIME_EPSILON:
            raise ValueError(f"the robot is controlled every {self.period} s (control_rate_hz) but the simulator "
                             f"steps {env.control_period} s: they must be the same")
        self.reset(None)
        # The policy node's: one chunk every `steps_per_inference` periods, whose actions the executor runs.
        self.steps_per_inference = self.executor.schedule.steps_per_inference

    def reset(self, obs: dict | None) -> None:
        """Start an episode from `obs` (the reset observation): a fresh executor, the controller's target
        at the measured joints and gripper."""
        self.executor = chunk_executor_from_parameters(self.parameters)
        self.q_target = None if obs is None else np.asarray(obs["joint_positions"], dtype=float).copy()
        self.gripper = 1.0 if obs is None else float(obs["gripper_state"])
        self.last_policy_time = -math.inf
        self.commands: list[Command] = []
        self.rejections: list[str] = []

    def now(self) -> float:
        """s on the simulation clock: since the episode's reset."""
        return self.env.step_count * self.env.control_period

    def offer(self, actions) -> bool:
        """Offer a chunk (N, 7) [dx dy dz m, droll dpitch dyaw rad, gripper] computed from the observation of
        now; False when the executor refuses it (why: the last of `rejections`; the arm goes on as before)."""
        now = self.now()
        actions = np.asarray(actions, dtype=float)
        try:
            chunk = Chunk.checked(now, self.period, actions, horizon=actions.shape[0] if actions.ndim == 2 else 0,
                                  action_dim=actions.shape[-1] if actions.ndim == 2 else 0)
            self.executor.offer(chunk, now)
        except ChunkRejected as exc:
            self.rejections.append(f"step {self.env.step_count}: {exc}")
            return False
        return True

    def step(self, render: bool | None = None) -> dict:
        """One control period: the executor's command for the joints measured now goes to the env; returns
        the env's observation (`render` as in TabletopEnv.step)."""
        now = self.now()
        measured = self.env.joint_positions()
        if self.q_target is None:
            self.q_target = measured
        reading = JointReading(measured, now, now)
        for tick in range(TICKS_PER_PERIOD):
            command = self.executor.tick(now + tick * self.period / TICKS_PER_PERIOD, reading)
            if command is not None:
                break
        if command is not None:
            self.commands.append(command)
            if command.kind == MOVE:
                self.q_target, self.gripper = command.joints, command.gripper
            else:  # a stop: the arm stays where it is
                self.q_target = measured
        return self.env.step(self.q_target, self.gripper, render=render)

    def step_policy(self, obs: dict, policy, render: bool | None = None) -> dict:
        """One control step of `policy` (obs -> (N, 7) chunk), asked when due at the policy node's rate;
        `obs` is the observation of now. Returns the next observation."""
        if self.now() - self.last_policy_time >= self.steps_per_inference * self.period - TIME_EPSILON:
            self.last_policy_time = self.now()
            self.offer(policy(obs))
        return self.step(render)
