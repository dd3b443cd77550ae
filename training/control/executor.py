"""Turning action chunks into arm commands, safely (no ROS; the executor node is a thin wrapper).

A chunk is (N_c, 7) end-effector deltas [dx dy dz (m), droll dpitch dyaw (rad), gripper (1 = open)]
in the arm's base frame, one every `dt` seconds from the chunk's stamp (the camera image's time).
Each control tick the executor:

1. asks the `ChunkSchedule` for the action due now: receding horizon (the newest chunk's first
   `execute_steps` actions, in order) or temporal ensembling (ACT: every stored chunk's prediction
   for this tick, averaged with weights exp(-k * i), i = 0 for the oldest chunk). Action i of a
   chunk is due i * dt after the chunk arrived: the first action runs at the first tick after
   arrival whatever the phase between camera, model and control loop; the image stamp only
   decides whether the chunk is too old to run at all;
2. passes it through the `SafetyGate`: non-finite values are refused, steps are scaled down to the
   per-step translation/rotation limits, the target is clipped into the workspace box;
3. maps it to joint targets with the arm's IK and checks them against the joint limits.

A chunk is an open-loop plan from one image: its first action applies to the measured end-effector
pose, each further action to the pose commanded before it, so an arm that lags a tick behind its
controller (or a control loop that misses a tick) loses no motion. The commanded pose restarts from
the measured one at every new chunk (and for every ensembled action: those re-plan each tick), after
every hold, and whenever the arm is more than `max_tracking_error` metres from it (a blocked arm
never winds the target up).

When no action is due, `tick` returns a hold command. A used-up plan and the watchdog (no fresh
chunk for `watchdog_timeout` s: nothing more starts) keep the last target, so the controller
finishes the last approved action (one step, one control period) instead of being stopped half-way
by a tick that lands before the arm got there. The e-stop and an IK failure hold the joints where
they are measured.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from pixelvla_training.robots import wx250s

ACTION_DIM = 7
NO_ACTION_DUE = "no action due"
WATCHDOG = "watchdog: no fresh chunk"
FINISHING_HOLDS = (NO_ACTION_DUE, WATCHDOG)  # holds that keep the last target: the last action finishes


class ChunkRejected(ValueError):
    """A chunk that must not be executed; the message says why."""


@dataclass(frozen=True)
class Chunk:
    stamp: float            # s, time of the image the chunk was computed from
    dt: float               # s between actions
    actions: np.ndarray     # (N_c, 7) float64, ee deltas in robot units

    @staticmethod
    def checked(stamp: float, dt: float, actions, horizon: int, action_dim: int) -> "Chunk":
        """Validate the raw fields of a chunk message; ChunkRejected on any inconsistency."""
        if action_dim != ACTION_DIM:
            raise ChunkRejected(f"action_dim {action_dim}, expected {ACTION_DIM} (ee_delta)")
        flat = np.asarray(actions, dtype=np.float64)
        if horizon < 1 or flat.size != horizon * action_dim:
            raise ChunkRejected(f"{flat.size} values do not make horizon {horizon} x action_dim {action_dim}")
        if not math.isfinite(dt) or dt <= 0:
            raise ChunkRejected(f"dt must be positive, got {dt}")
        if not np.all(np.isfinite(flat)):
            raise ChunkRejected("chunk contains NaN or inf")
        return Chunk(stamp=float(stamp), dt=float(dt), actions=flat.reshape(horizon, action_dim))


@dataclass
class ChunkSchedule:
    """Which action is due at time t. strategy: "receding_horizon" or "temporal_ensemble"."""

    strategy: str = "receding_horizon"
    execute_steps: int = 5          # receding horizon: actions of a chunk executed before it expires
    ensemble_decay: float = 0.1     # temporal ensembling: k in exp(-k * i)
    max_chunk_age: float = 1.0      # s: chunks whose stamp is older than this are dropped
    chunks: deque = field(default_factory=lambda: deque(maxlen=16))  # (arrival time s, Chunk)

    def __post_init__(self) -> None:
        if self.strategy not in ("receding_horizon", "temporal_ensemble"):
            raise ValueError(f"unknown strategy {self.strategy!r}: receding_horizon or temporal_ensemble")

    def add(self, chunk: Chunk, now: float) -> None:
        """Queue `chunk`, arrived at `now` (s, same clock as its stamp)."""
        age = now - chunk.stamp
        if age > self.max_chunk_age:
            raise ChunkRejected(f"chunk is {age:.2f} s old (max_chunk_age {self.max_chunk_age} s)")
        if self.strategy == "receding_horizon":
            self.chunks.clear()
        self.chunks.append((now, chunk))

    def clear(self) -> None:
        self.chunks.clear()

    def due(self, now: float) -> tuple[np.ndarray | None, bool]:
        """(the (7,) action due at `now` or None when no chunk covers it, whether it starts a new plan)."""
        predictions, index = [], 0
        for arrival, chunk in self.chunks:
            index = int(math.floor((now - arrival) / chunk.dt + 1e-6))
            limit = min(len(chunk.actions), self.execute_steps) if self.strategy == "receding_horizon" else len(chunk.actions)
            if 0 <= index < limit:
                predictions.append(chunk.actions[index])
        if not predictions:
            return None, True
        if self.strategy == "receding_horizon":
            return predictions[0], index == 0
        weights = np.exp(-self.ensemble_decay * np.arange(len(predictions)))
        return (weights[:, None] * np.stack(predictions)).sum(0) / weights.sum(), True


@dataclass
class SafetyGate:
    """Limits, in the base frame: workspace box (m), per-step translation (m) and rotation (rad)."""

    workspace_min: np.ndarray
    workspace_max: np.ndarray
    max_step_translation: float
    max_step_rotation: float

    def __post_init__(self) -> None:
        self.workspace_min = np.asarray(self.workspace_min, dtype=float).reshape(3)
        self.workspace_max = np.asarray(self.workspace_max, dtype=float).reshape(3)
        if np.any(self.workspace_min >= self.workspace_max):
            raise ValueError(f"workspace_min {self.workspace_min} must be below workspace_max {self.workspace_max}")
        if self.max_step_translation <= 0 or self.max_step_rotation <= 0:
            raise ValueError("step limits must be positive")

    def limit(self, action: np.ndarray, tcp_position: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """The action scaled/clipped into every limit, and what was changed (for logs)."""
        action = np.asarray(action, dtype=float).copy()
        if action.shape != (ACTION_DIM,) or not np.all(np.isfinite(action)):
            raise ChunkRejected(f"action must be 7 finite values, got {action}")
        notes = []
        step = np.linalg.norm(action[:3])
        if step > self.max_step_translation:
            action[:3] *= self.max_step_translation / step
            notes.append(f"translation {step:.3f} m scaled to {self.max_step_translation} m")
        turn = np.linalg.norm(action[3:6])
        if turn > self.max_step_rotation:
            action[3:6] *= self.max_step_rotation / turn
            notes.append(f"rotation {turn:.3f} rad scaled to {self.max_step_rotation} rad")
        target = np.asarray(tcp_position, dtype=float) + action[:3]
        clipped = np.clip(target, self.workspace_min, self.workspace_max)
        if not np.allclose(clipped, target):
            action[:3] = clipped - tcp_position
            notes.append(f"target {np.round(target, 3)} clipped to the workspace")
        action[6] = float(np.clip(action[6], 0.0, 1.0))
        return action, notes


@dataclass
class Command:
    """What to send to the arm: joint targets (6,) rad, gripper in [0, 1], and why."""

    joints: np.ndarray
    gripper: float
    hold: bool
    reason: str = ""


@dataclass
class ChunkExecutor:
    schedule: ChunkSchedule
    gate: SafetyGate
    watchdog_timeout: float = 1.0   # s without a fresh chunk -> hold
    max_tracking_error: float = 0.03  # m between commanded and measured TCP before the command restarts
    estopped: bool = False
    reference: tuple[np.ndarray, np.ndarray] | None = None  # last commanded TCP pose (position m, rotation)
    last_target: np.ndarray | None = None  # (6,) rad: joint targets of the last executed action
    last_chunk_time: float = -math.inf
    last_gripper: float = 1.0

    def add_chunk(self, chunk: Chunk, now: float) -> None:
        if self.estopped:
            raise ChunkRejected("e-stop is latched: reset it before sending chunks")
        self.schedule.add(chunk, now)
        self.last_chunk_time = now

    def estop(self) -> None:
        """Latch the e-stop: hold from now on, forget queued chunks, until `reset_estop`."""
        self.estopped = True
        self.schedule.clear()

    def reset_estop(self) -> None:
        self.estopped = False

    def tick(self, now: float, joints: np.ndarray, gripper_state: float) -> Command:
        """The command for this control tick given the measured joints (6,) rad and gripper in [0, 1]."""
        joints = np.asarray(joints, dtype=float)
        command = self._command(now, joints)
        if not command.hold:
            self.last_target = command.joints
        else:
            self.reference = None
            if command.reason not in FINISHING_HOLDS:
                self.last_target = None
        return command

    def _command(self, now: float, joints: np.ndarray) -> Command:
        hold = Command(joints=joints.copy(), gripper=self.last_gripper, hold=True)
        if self.estopped:
            hold.reason = "e-stop latched"
            return hold
        finish = Command(joints=(joints if self.last_target is None else self.last_target).copy(),
                         gripper=self.last_gripper, hold=True)
        if now - self.last_chunk_time > self.watchdog_timeout:
            self.schedule.clear()
            finish.reason = WATCHDOG
            return finish
        action, new_plan = self.schedule.due(now)
        if action is None:
            finish.reason = NO_ACTION_DUE
            return finish
        measured = wx250s.fk(joints)
        base = None if new_plan else self.reference
        if base is None or np.linalg.norm(base[0] - measured[0]) > self.max_tracking_error:
            base = measured
        action, notes = self.gate.limit(action, base[0])
        target_pose = wx250s.apply_ee_delta(*base, action[:3], action[3:6])
        target = wx250s.solve_ik(joints, *target_pose)
        if np.any(target < wx250s.JOINT_LOWER - 1e-9) or np.any(target > wx250s.JOINT_UPPER + 1e-9):
            hold.reason = "IK result outside the joint limits"
            return hold
        self.reference = target_pose
        self.last_gripper = float(action[6])
        return Command(joints=target, gripper=self.last_gripper, hold=False, reason="; ".join(notes))
