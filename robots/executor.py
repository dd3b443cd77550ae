"""Turning action chunks into arm commands within every limit (no ROS; the executor node is a thin wrapper).

A chunk is (N_c, 7) end-effector deltas [dx dy dz (m), droll dpitch dyaw (rad), gripper (1 = open)]
in the arm's base frame, one every `dt` seconds, computed from the camera image of time `stamp`.
Times are seconds on one clock (the executor node's); joints are (n,) rad in the robot's `joint_names` order
(`SafetyGate.robot`, a `pixelvla_robots.base.Robot` with kinematics: its fk, IK and joint limits).

What is enforced (parameter names as the executor node declares them):

- Chunks (`ChunkExecutor.offer`, refused with `ChunkRejected` and its reason): 7-D, horizon x 7 finite
  values, `dt` finite and within [`min_chunk_dt`, `max_chunk_dt`]; the image stamp neither older than
  `max_chunk_age` nor later than now + `max_future_stamp`; none while the e-stop is latched.
- Each action is a displacement executed at most once: a plan's actions run in order, one per
  command, action i no earlier than i * dt after the plan's first action (a late tick runs the next
  action, it never re-applies one). Receding horizon: the newest chunk replaces the plan and at most
  `execute_steps` of its actions run (the policy sends one every `steps_per_inference` periods); temporal
  ensembling (ACT): each command averages every stored chunk's next action, weights exp(-k i), i = 0 for the
  oldest chunk, k = `ensemble_decay`.
- Rate: at most one move per control period T (1 / `control_rate_hz`). Each move has a slot, its
  stamp (`Command.time`): the moment it became due, at least T after the previous move's slot, so
  over any window of W s at most W * rate + 1 moves are stamped, however fast chunks come. A move
  goes out at most T/4 after its slot (so never less than 3T/4 after the previous one in real time);
  the controller still gets a full period for it. A new chunk is due from its image's stamp (at most
  T/4 before it starts: the move is the one for the period its image began) as soon as a joint state as
  new as its image is in (or after one period without one: clocks apart); a plan's later actions are due
  at their time until the next chunk is expected (`steps_per_inference` actions in), then half a
  period after it, so a chunk that comes on time replaces the plan first instead of queueing behind it.
  When chunks come about once a period, a chunk that would wait more than T/8 for its slot gives way to
  the next one (it runs 1.5 T late if none comes): the rate limit lets no move catch up, so one late
  start would delay every following chunk as much. For the same reason, when chunks come every
  `steps_per_inference` > 1 periods, a chunk that the rate limit holds back more than T/4 (a late chunk
  before it ran late) skips its first action for the next, which runs at its own time (its image's stamp
  + i dt), while that is more than T/4 late too; the last of its first `steps_per_inference` actions
  always runs. So one late chunk delays the moves of the next one at most, never all the following ones.
  Stops are never delayed.
- Measured state: no motion without a valid joint state that arrived within `max_joint_state_age`
  (arrival time on this clock, so a publisher's clock offset does not count) and lies within the
  joint limits (`JOINT_LIMIT_TOLERANCE` counts as at the limit).
- Every move, relative to the measured joints q_m (the controller starts its one-period segment there):
  joint targets within the joint limits; |q - q_m| <= `max_joint_velocity` * period per joint; the TCP
  within `max_step_translation` m and `max_step_rotation` rad of the measured TCP; the TCP inside the
  `workspace_min`/`workspace_max` box, or, for an arm measured outside it, no further out than it is
  (it is brought back at most one step per command, never jumped). The action's own step is scaled to
  the same step limits first; the IK target is then cut to the limits and the joint motion scaled down
  until `SafetyGate.violation` finds nothing (`SafetyGate.violation` is the one definition of "within
  the limits"). A plan's later actions apply to the pose commanded before, so an arm that lags a little
  loses no motion; the plan restarts from the measured pose at every new chunk, after a stop or the
  watchdog, and when the arm is more than `max_tracking_error` m from the commanded pose (a blocked
  arm never winds the target up).
- Holding: when no move is due or possible (a used-up plan, the watchdog, a move that no scaling
  brings within the limits) nothing is sent: the controller finishes the last move, one period long
  and within every limit, and keeps its target. No older target is ever sent again, so the arm holds
  where it is and a new chunk starts from there. The watchdog: no action whose time comes more than
  `watchdog_timeout` after the newest chunk's first action runs (a late tick still runs one whose
  time was within it); with no chunk for `watchdog_timeout` the executor reports it and holds.
- Stopping: STOP = no target, the controller stops the arm where it is (for a ros2_control joint
  trajectory controller, a JointTrajectory without points). Sent at once for the e-stop (latched
  until `reset_estop`), and, while a move may still be under way, for no valid or a stale joint
  state or a joint measured beyond its limit. A stop forgets the running plan; a chunk that arrived
  meanwhile starts once the joints are valid again if it is still within `max_chunk_age` (the e-stop
  forgets it too). `final_hold`, the command for a shutdown: HOLD = a target at the measured joints,
  or a STOP where they are unknown, stale or beyond a limit, or under the e-stop.
- The gripper command (clipped to [0, 1]) goes with moves only; holds and stops leave the gripper's
  last command in place (an object in the hand is not dropped).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pixelvla_robots.base import Robot, get_robot
from pixelvla_robots.rotations import apply_ee_delta, matrix_to_quat, quat_to_matrix, rotation_log

ACTION_DIM = 7
MOVE, HOLD, STOP = "move", "hold", "stop"
NO_ACTION_DUE = "no action due"
WATCHDOG = "watchdog: no chunk"
# A joint measured this far (rad) beyond its limit counts as at the limit (encoder noise, a simulator's
# soft limit); further is a fault.
JOINT_LIMIT_TOLERANCE = 0.01
# The IK reaches its target to ~0.1 mm / 1 mrad: targets are cut this far inside the step limits and the
# workspace box so that the solved joints satisfy the limits exactly.
TRANSLATION_MARGIN = 1e-3  # m
ROTATION_MARGIN = 5e-3  # rad
# rad/s per joint: about two thirds of the wx250s URDF's pi rad/s (wx250s.VELOCITY_LIMITS); 0.4 rad per
# command at 5 Hz. The scripted expert's fastest moves reach ~3 rad/s: this scales about 4 % of them.
DEFAULT_MAX_JOINT_VELOCITY = (2.0,) * 6
TIME_EPSILON = 1e-6  # s: comparisons of times allow this much float rounding
SEND_DELAY = 0.25  # periods: a move goes out at most this long after its slot (see ChunkExecutor.tick)
GIVE_WAY = 0.125  # periods: a chunk that would wait longer for its slot gives way (see ChunkExecutor.tick)
# The executor is asked for a command this many times a period, at even times (the executor node's timer; the
# in-process ChunkControl too): a move that waits for its slot goes out within a tenth of a period of it.
TICKS_PER_PERIOD = 10
BACKOFF = 0.8  # joint motion is scaled by this until a command satisfies every limit ...
BACKOFF_TRIES = 12  # ... at most this often (0.8**12 ~ 7 %), then no move is sent


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
        if not math.isfinite(stamp):
            raise ChunkRejected(f"stamp must be finite, got {stamp}")
        if not np.all(np.isfinite(flat)):
            raise ChunkRejected("chunk contains NaN or inf")
        return Chunk(stamp=float(stamp), dt=float(dt), actions=flat.reshape(horizon, action_dim))


@dataclass(frozen=True)
class JointReading:
    """The newest measured joints: (6,) rad, the header stamp (s, the publisher's clock) and when it
    arrived (s, the executor's clock)."""

    joints: np.ndarray
    stamp: float
    received: float


@dataclass
class _Plan:
    chunk: Chunk
    limit: int                    # actions of the chunk that may run
    ready: float                  # s: from when its first action may run
    start: float | None = None    # s: the slot of its first action (None: not run yet), or its image's stamp
                                  # once its first actions were skipped as late (action i is due at start + i dt)
    next_index: int = 0           # the actions before this one ran or were skipped; none runs twice
    first_index: int = 0          # the action it starts with (later ones apply to the pose commanded before)


@dataclass
class ChunkSchedule:
    """Which action runs next. strategy: "receding_horizon" or "temporal_ensemble"."""

    strategy: str = "receding_horizon"
    execute_steps: int = 5          # receding horizon: actions of a chunk executed before it expires
    steps_per_inference: int = 1    # a chunk comes every this many actions: those before run on time
    ensemble_decay: float = 0.1     # temporal ensembling: k in exp(-k * i)
    max_chunk_age: float = 1.0      # s: chunks whose stamp is older than this are refused
    max_future_stamp: float = 0.1   # s: chunks stamped later than now + this are refused
    min_dt: float = 0.01            # s: the range of dt a chunk may have
    max_dt: float = 1.0
    plans: list = field(default_factory=list)  # _Plan, oldest first (at most 16)

    def __post_init__(self) -> None:
        if self.strategy not in ("receding_horizon", "temporal_ensemble"):
            raise ValueError(f"unknown strategy {self.strategy!r}: receding_horizon or temporal_ensemble")
        if self.execute_steps < 1 or self.steps_per_inference < 1:
            raise ValueError(f"execute_steps and steps_per_inference must be at least 1, got {self.execute_steps}, "
                             f"{self.steps_per_inference}")
        if not 0 < self.min_dt <= self.max_dt:
            raise ValueError(f"need 0 < min_dt <= max_dt, got {self.min_dt}, {self.max_dt}")
        if self.strategy == "receding_horizon" and self.steps_per_inference > self.execute_steps:
            raise ValueError(f"steps_per_inference {self.steps_per_inference} exceeds execute_steps "
                             f"{self.execute_steps}: the arm would stop between chunks")

    def check(self, chunk: Chunk, now: float) -> None:
        """ChunkRejected unless `chunk`, arriving at `now`, may run."""
        age = now - chunk.stamp
        if age > self.max_chunk_age:
            raise ChunkRejected(f"chunk is {age:.2f} s old (max_chunk_age {self.max_chunk_age} s)")
        if -age > self.max_future_stamp:
            raise ChunkRejected(f"chunk is stamped {-age:.3g} s in the future (max_future_stamp {self.max_future_stamp} s)")
        if not self.min_dt <= chunk.dt <= self.max_dt:
            raise ChunkRejected(f"dt {chunk.dt:.3g} s outside [min_chunk_dt {self.min_dt}, max_chunk_dt {self.max_dt}] s")

    def add(self, chunk: Chunk, ready: float) -> None:
        """Queue a checked chunk whose first action may run from `ready` (s), at the next `take`."""
        if self.strategy == "receding_horizon":
            self.plans.clear()
        limit = min(len(chunk.actions), self.execute_steps) if self.strategy == "receding_horizon" else len(chunk.actions)
        self.plans = [*self.plans[-15:], _Plan(chunk, limit, ready)]

    def clear(self) -> None:
        self.plans.clear()

    def fresh(self) -> float | None:
        """Since when (s) the newest chunk waiting for its first action may run; None if none waits."""
        return max((plan.ready for plan in self.plans if plan.start is None), default=None)

    def next_due(self, wait: float) -> float:
        """When (s) the next action of a running plan is due; inf when none is left. An action from index
        `steps_per_inference` on, when the next chunk is expected, is due `wait` s after its time, so that
        a chunk coming on time replaces the plan first instead of queueing behind it."""
        times = [plan.start + plan.next_index * plan.chunk.dt + (wait if plan.next_index >= self.steps_per_inference else 0)
                 for plan in self.plans if plan.start is not None and plan.next_index < plan.limit]
        return min(times, default=math.inf)

    def skip_late_start(self, slot: float, late: float, earliest: float) -> float:
        """The newest chunk, not started yet, would run its next action at `slot` (s): while that is more than
        `late` s after the action's time (the chunk's stamp + index * dt) and a later one of its first
        `steps_per_inference` actions is left, skip it for that one, due at its own time but not before
        `earliest`. Returns the slot of the action it will start with."""
        plan = self.plans[-1]
        stamp, dt = plan.chunk.stamp, plan.chunk.dt
        last = min(plan.limit, self.steps_per_inference) - 1
        while plan.next_index < last and slot - (stamp + plan.next_index * dt) > late + TIME_EPSILON:
            plan.next_index += 1
            plan.first_index, plan.start = plan.next_index, stamp
            slot = max(stamp + plan.next_index * dt, earliest)
        return slot

    def drop_after(self, deadline: float) -> None:
        """Forget every action due later than `deadline` (s), and chunks that have not started."""
        for plan in self.plans:
            due = 0 if plan.start is None else math.floor((deadline - plan.start) / plan.chunk.dt + TIME_EPSILON) + 1
            plan.limit = min(plan.limit, max(due, 0))
        self.plans = [plan for plan in self.plans if plan.next_index < plan.limit]

    def take(self, now: float) -> tuple[np.ndarray | None, bool]:
        """(the (7,) action to run at `now` or None, whether it starts a plan); marks it as run.

        A plan's next action is due from half a dt before its time (a tick that comes a little early
        does not drop an ensemble member); a new chunk's first action is due at once.
        """
        predictions, first = [], False
        for plan in self.plans:
            if plan.start is None:
                plan.start = now
            if plan.next_index < plan.limit and now + TIME_EPSILON >= plan.start + (plan.next_index - 0.5) * plan.chunk.dt:
                predictions.append(plan.chunk.actions[plan.next_index])
                first = plan.next_index == plan.first_index
                plan.next_index += 1
        self.plans = [plan for plan in self.plans if plan.next_index < plan.limit]
        if not predictions:
            return None, False
        if self.strategy == "receding_horizon":
            return predictions[0], first
        weights = np.exp(-self.ensemble_decay * np.arange(len(predictions)))
        return (weights[:, None] * np.stack(predictions)).sum(0) / weights.sum(), True


def _scaled(vector: np.ndarray, limit: float) -> tuple[np.ndarray, float]:
    """(`vector` scaled down to norm `limit` if longer, its original norm); no overflow for huge values."""
    biggest = float(np.max(np.abs(vector)))
    if biggest == 0.0:
        return vector, 0.0
    unit = vector / biggest
    norm = biggest * float(np.linalg.norm(unit))
    return (unit * (limit / np.linalg.norm(unit)) if norm > limit else vector), norm


def _turn_fraction(rotation: np.ndarray, fraction: float) -> np.ndarray:
    """`fraction` of a rotation (3, 3) about the same axis (slerp from the identity)."""
    w, *xyz = matrix_to_quat(rotation)
    angle = 2.0 * math.atan2(float(np.linalg.norm(xyz)), w) * fraction
    axis = np.asarray(xyz) / max(float(np.linalg.norm(xyz)), 1e-12)
    return quat_to_matrix(np.array([math.cos(angle / 2), *(axis * math.sin(angle / 2))]))


def _outside(position: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Distance (m) of `position` from the box [low, high]; 0 inside."""
    return float(np.linalg.norm(position - np.clip(position, low, high)))


@dataclass
class SafetyGate:
    """Limits, base frame: workspace box (m), per-command TCP step (m, rad), joint velocity (rad/s), for
    `robot` (keyword only, no default: the limits mean nothing without the arm they are for)."""

    workspace_min: np.ndarray
    workspace_max: np.ndarray
    max_step_translation: float
    max_step_rotation: float
    max_joint_velocity: np.ndarray = field(default_factory=lambda: np.array(DEFAULT_MAX_JOINT_VELOCITY))
    robot: Robot = field(kw_only=True)

    def __post_init__(self) -> None:
        if not self.robot.has_kinematics:
            raise ValueError(f"robot_model {self.robot.model} has no kinematics in this package: it cannot be gated here")
        self.workspace_min = np.asarray(self.workspace_min, dtype=float).reshape(3)
        self.workspace_max = np.asarray(self.workspace_max, dtype=float).reshape(3)
        self.max_joint_velocity = np.asarray(self.max_joint_velocity, dtype=float).reshape(len(self.robot.joint_names))
        if np.any(self.workspace_max - self.workspace_min <= 2 * TRANSLATION_MARGIN):
            raise ValueError(f"workspace_min {self.workspace_min} must be below workspace_max {self.workspace_max}")
        if self.max_step_translation <= TRANSLATION_MARGIN or self.max_step_rotation <= ROTATION_MARGIN:
            raise ValueError(f"step limits must exceed {TRANSLATION_MARGIN} m and {ROTATION_MARGIN} rad")
        if not np.all(self.max_joint_velocity > 0):
            raise ValueError(f"max_joint_velocity must be positive, got {self.max_joint_velocity}")

    def limit(self, action: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """The action with its translation/rotation scaled to the step limits and the gripper clipped to
        [0, 1], and what was changed (for logs). ChunkRejected for anything but 7 finite values."""
        action = np.asarray(action, dtype=float).copy()
        if action.shape != (ACTION_DIM,) or not np.all(np.isfinite(action)):
            raise ChunkRejected(f"action must be 7 finite values, got {action}")
        notes = []
        action[:3], step = _scaled(action[:3], self.max_step_translation)
        if step > self.max_step_translation:
            notes.append(f"translation {step:.3g} m scaled to {self.max_step_translation} m")
        action[3:6], turn = _scaled(action[3:6], self.max_step_rotation)
        if turn > self.max_step_rotation:
            notes.append(f"rotation {turn:.3g} rad scaled to {self.max_step_rotation} rad")
        action[6] = float(np.clip(action[6], 0.0, 1.0))
        return action, notes

    def bound_target(self, measured, target) -> tuple[tuple[np.ndarray, np.ndarray], list[str]]:
        """The TCP target pose (position m, rotation) clipped into the workspace box and then cut to the
        step limits from the `measured` TCP pose (a margin inside each), and what was changed."""
        (position, rotation), (here, here_rot), notes = target, measured, []
        low, high = self.workspace_min + TRANSLATION_MARGIN, self.workspace_max - TRANSLATION_MARGIN
        clipped = np.clip(position, low, high)
        if not np.allclose(clipped, position):
            notes.append(f"target {np.round(position, 3)} clipped to the workspace")
        step, distance = _scaled(clipped - here, self.max_step_translation - TRANSLATION_MARGIN)
        if distance > self.max_step_translation - TRANSLATION_MARGIN:
            notes.append(f"target {distance:.3f} m from the measured TCP cut to a step")
        turn = rotation @ here_rot.T
        angle = float(np.linalg.norm(rotation_log(turn)))
        if angle > self.max_step_rotation - ROTATION_MARGIN:
            turn = _turn_fraction(turn, (self.max_step_rotation - ROTATION_MARGIN) / angle)
            notes.append(f"target rotation {angle:.3f} rad from the measured TCP cut to a step")
        return (here + step, turn @ here_rot), notes

    def violation(self, q: np.ndarray, q_measured: np.ndarray, period: float) -> str | None:
        """What about joint targets `q` (6,) rad breaks a limit, given the measured joints (6,) rad
        (within the joint limits) and the control period (s); None when nothing does."""
        if not np.all(np.isfinite(q)):
            return "joint targets not finite"
        if np.any(q < self.robot.joint_lower) or np.any(q > self.robot.joint_upper):
            return "joint targets outside the joint limits"
        if np.any(np.abs(q - q_measured) > self.max_joint_velocity * period):
            return "joint motion over max_joint_velocity"
        (position, rotation), (here, here_rot) = self.robot.fk(q), self.robot.fk(q_measured)
        if np.linalg.norm(position - here) > self.max_step_translation:
            return "TCP step over max_step_translation"
        if np.linalg.norm(rotation_log(rotation @ here_rot.T)) > self.max_step_rotation:
            return "TCP rotation over max_step_rotation"
        out_before = _outside(here, self.workspace_min, self.workspace_max)
        if _outside(position, self.workspace_min, self.workspace_max) > out_before:
            return "TCP leaves the workspace" if out_before == 0.0 else "TCP moves further out of the workspace"
        return None

    def bound_joints(self, q_target: np.ndarray, q_measured: np.ndarray, period: float) -> tuple[np.ndarray | None, list[str]]:
        """The joint motion from `q_measured` towards `q_target` (6,) rad scaled to max_joint_velocity,
        then further down until no limit is broken (None if nothing but no motion is), and notes."""
        motion = q_target - q_measured
        reach = self.max_joint_velocity * period
        scale = float(min(1.0, np.min(reach / np.maximum(np.abs(motion), 1e-12)) * (1.0 - 1e-9)))  # 1e-9: float rounding
        notes = [f"joint motion scaled to {scale:.2f} (max_joint_velocity)"] if scale < 1.0 else []
        for _ in range(BACKOFF_TRIES):
            q = self.robot.clamp_to_limits(q_measured + scale * motion)  # q_measured is within the limits
            problem = self.violation(q, q_measured, period)
            if problem is None:
                return q, notes
            notes.append(f"{problem}: motion scaled by {BACKOFF}")
            scale *= BACKOFF
        return None, notes


@dataclass
class Command:
    """What to send to the arm, and why.

    kind MOVE: go to `joints` (6,) rad within one period, gripper to `gripper` in [0, 1];
    HOLD (only `final_hold`): stay at `joints`, the measured joints; STOP: no target, the controller
    stops where the arm is (`joints` None). `fault`: the reason is an error to report. `time`: s,
    when it was decided (the command's stamp).
    """

    kind: str
    joints: np.ndarray | None
    gripper: float | None
    reason: str
    time: float
    fault: bool = False


@dataclass
class ChunkExecutor:
    schedule: ChunkSchedule
    gate: SafetyGate
    period: float = 0.2               # s, the control period (1 / control_rate_hz)
    watchdog_timeout: float = 1.0     # s: no action due later than this after the newest chunk's first runs
    max_tracking_error: float = 0.03  # m between commanded and measured TCP before the plan restarts
    max_joint_state_age: float = 0.5  # s since the newest valid joint state arrived -> stop
    estopped: bool = False
    state: str = "waiting for the first chunk"  # executing, or why the arm is held (for diagnostics)
    fault: bool = False               # the state is an error
    last_command: Command | None = None
    last_chunk_time: float = -math.inf  # s: when the last chunk was accepted
    _pending: tuple[Chunk, float] | None = None  # (chunk, arrival s): waits for a joint state as new as its image
    _reference: tuple[np.ndarray, np.ndarray] | None = None  # TCP pose (m, rotation) of the last move
    _last_slot: float = -math.inf     # s: the slot of the last move
    _last_ready: float = -math.inf    # s: when the newest chunk became ready
    _chunk_interval: float = math.inf  # s: between the last two chunks becoming ready
    _moving: bool = False             # a move may be under way (none since: a stop, the watchdog)
    _estop_sent: bool = False

    def __post_init__(self) -> None:
        # A chunk every N > 1 periods must come before the watchdog holds the arm. (With N = 1 a watchdog
        # shorter than a period is allowed, as it always was: the arm then holds whenever a chunk is late.)
        steps = self.schedule.steps_per_inference
        if steps > 1 and steps * self.period >= self.watchdog_timeout - TIME_EPSILON:
            raise ValueError(f"steps_per_inference {steps} x {self.period:g} s reaches watchdog_timeout "
                             f"{self.watchdog_timeout:g} s: the executor would hold between chunks")

    def offer(self, chunk: Chunk, now: float) -> None:
        """Accept `chunk`, arrived at `now`, or raise ChunkRejected with the reason."""
        if self.estopped:
            raise ChunkRejected("e-stop is latched: reset it before sending chunks")
        self.schedule.check(chunk, now)
        self._pending = (chunk, now)
        self.last_chunk_time = now

    def estop(self) -> None:
        """Latch the e-stop: stop the arm, refuse chunks and forget queued ones until `reset_estop`."""
        self.estopped = True

    def reset_estop(self) -> None:
        self.estopped, self._estop_sent = False, False

    def tick(self, now: float, reading: JointReading | None) -> Command | None:
        """The command to send at `now` given the newest joint reading, or None: nothing to send.
        Call it on every chunk and joint state and at least every T/4 (the node: every T/10): it
        decides when."""
        fault = self._fault(now, reading)
        if fault is not None:
            reason, is_error = fault
            self._forget(reason, is_error)
            if self.estopped:
                self._pending = None
            if self.estopped and not self._estop_sent:
                self._estop_sent = True
                return self._send(Command(STOP, None, None, reason, now, True))
            return self._send(Command(STOP, None, None, reason, now, is_error)) if self._moving else None
        q = self.gate.robot.clamp_to_limits(reading.joints)
        if self._pending is not None:
            chunk, arrival = self._pending
            if reading.stamp >= chunk.stamp or now - arrival >= self.period:
                self._pending = None
                try:
                    self.schedule.check(chunk, now)  # it may have waited out a fault
                    # Due from its image's time (at most SEND_DELAY before now), not from its arrival: its first
                    # action is the move for the period its image began. From the arrival, every chunk later than
                    # the one before pushed the following moves back for good (the rate limit lets none catch
                    # up): a plan's last action and the next chunk's first drifted a period late.
                    ready = min(now, max(chunk.stamp, now - SEND_DELAY * self.period))
                    self.schedule.add(chunk, ready=ready)
                    self._chunk_interval, self._last_ready = ready - self._last_ready, ready
                except ChunkRejected as exc:
                    self.state, self.fault = f"chunk dropped: {exc}", False
        newest = self.schedule.plans[-1] if self.schedule.plans else None
        if newest is not None and newest.start is not None and now > newest.start + self.watchdog_timeout:
            self.schedule.drop_after(newest.start + self.watchdog_timeout)
        if not self.schedule.plans:  # the controller keeps the last move's target
            if now - self.last_chunk_time > self.watchdog_timeout:
                self._forget(f"{WATCHDOG} for {self.watchdog_timeout} s", False)
                self._moving = False  # the last move, at least a period ago, is over
            else:
                self.state, self.fault = NO_ACTION_DUE, False
            return None
        # The move's slot: when it became due (a new chunk: once ready; a running plan's next action: its
        # time, or half a period after it once the next chunk is expected, so that a chunk coming on time
        # replaces the plan first), at least a period after the last slot (the rate limit) and at most
        # SEND_DELAY before now. Slots, not the moments a tick notices them, set the pace, so a tick's
        # lateness does not accumulate, and a stalled executor cannot catch up with a burst.
        ready = self.schedule.fresh()
        due = ready if ready is not None else self.schedule.next_due(wait=self.period / 2)
        if ready is not None and self._last_slot + self.period - ready > GIVE_WAY * self.period \
                and self._chunk_interval <= (1 + GIVE_WAY) * self.period:
            # Chunks come once a period and this one would wait long for the rate limit: running it
            # late would hold every following chunk back as long (the rate limit lets none catch
            # up), so it gives way to the next one, due in about a period (if none comes, it runs
            # after one and a half).
            due = ready + 1.5 * self.period
        earliest = max(self._last_slot + self.period, now - SEND_DELAY * self.period)
        slot = max(due, earliest)
        late = SEND_DELAY * self.period
        if ready is not None and self.schedule.steps_per_inference > 1 and self._last_slot + self.period - ready > late:
            # Held back by the last move: run late, this chunk would hold every later move back as long.
            slot = self.schedule.skip_late_start(slot, late, earliest)
        if now + TIME_EPSILON < slot:
            return None
        action, first = self.schedule.take(slot)
        return None if action is None else self._move(slot, q, action, first)

    def final_hold(self, now: float, reading: JointReading | None) -> Command:
        """The last command before shutting down: a hold at the measured joints, or a stop when they are
        not known, stale or beyond a limit (and under the e-stop)."""
        fault = self._fault(now, reading)
        if fault is not None:
            return Command(STOP, None, None, f"shutdown: {fault[0]}", now, fault[1])
        return Command(HOLD, self.gate.robot.clamp_to_limits(reading.joints), None, "shutdown", now)

    # ------------------------------------------------------------------------------------------- internals
    def _fault(self, now: float, reading: JointReading | None) -> tuple[str, bool] | None:
        """(why no target may be sent, whether that is an error) or None."""
        if self.estopped:
            return "e-stop latched", True
        if reading is None or not np.all(np.isfinite(reading.joints)):
            return "no valid joint state", False
        if now - reading.received > self.max_joint_state_age:
            return f"joint states stale: none valid for max_joint_state_age {self.max_joint_state_age} s", False
        robot = self.gate.robot
        beyond = (reading.joints < robot.joint_lower - JOINT_LIMIT_TOLERANCE) | (reading.joints > robot.joint_upper + JOINT_LIMIT_TOLERANCE)
        if np.any(beyond):
            i = int(np.argmax(beyond))
            return (f"{robot.joint_names[i]} measured at {reading.joints[i]:.3f} rad, beyond its limits "
                    f"[{robot.joint_lower[i]}, {robot.joint_upper[i]}]"), True
        return None

    def _forget(self, reason: str, fault: bool) -> None:
        """Drop the running plans and their reference (a chunk waiting to start stays, and starts from
        the joints measured then); remember why (for diagnostics)."""
        self.schedule.clear()
        self._reference = None
        self.state, self.fault = reason, fault

    def _send(self, command: Command) -> Command:
        self.last_command = command
        self._moving = command.kind == MOVE
        if command.kind == MOVE:
            self._last_slot = command.time
        return command

    def _move(self, slot: float, q: np.ndarray, action: np.ndarray, first: bool) -> Command | None:
        try:
            action, notes = self.gate.limit(action)
        except ChunkRejected as exc:  # an ensemble average overflowed
            self.state, self.fault = str(exc), False
            return None
        robot = self.gate.robot
        measured = robot.fk(q)
        base = self._reference
        if first or base is None or np.linalg.norm(base[0] - measured[0]) > self.max_tracking_error:
            base = measured
        target = apply_ee_delta(*base, action[:3], action[3:6])
        target, more = self.gate.bound_target(measured, target)
        joints, scaled = self.gate.bound_joints(robot.ik(q, *target), q, self.period)
        notes += more + scaled
        if joints is None:  # the arm finishes the last move and stays there
            self.state, self.fault = "no move within the limits: " + "; ".join(notes), False
            return None
        self._reference = robot.fk(joints)
        self.state, self.fault = "executing", False
        return self._send(Command(MOVE, joints, float(action[6]), "; ".join(notes), slot))


def chunk_executor_from_parameters(parameters) -> ChunkExecutor:
    """A fresh ChunkExecutor set up as the executor node sets it up from the same parameters (a mapping
    with the node's parameter names, e.g. the `ros__parameters` of config/robots/<robot>.yaml): the
    period is 1 / `control_rate_hz`, the robot `robot_model` (pixelvla_robots.base.get_robot); a parameter
    left out keeps the default of ChunkSchedule, SafetyGate or ChunkExecutor, except the robot, the rate,
    the workspace box and the step limits, which a robot's parameters must give (ValueError)."""
    required = ("robot_model", "control_rate_hz", "workspace_min", "workspace_max", "max_step_translation", "max_step_rotation")
    missing = [name for name in required if name not in parameters]
    if missing:
        raise ValueError(f"robot parameters lack {', '.join(missing)}")

    def given(**fields_by_parameter: str) -> dict:
        return {field_name: parameters[name] for field_name, name in fields_by_parameter.items() if name in parameters}

    schedule = ChunkSchedule(**given(strategy="strategy", execute_steps="execute_steps",
                                     steps_per_inference="steps_per_inference", ensemble_decay="ensemble_decay",
                                     max_chunk_age="max_chunk_age", max_future_stamp="max_future_stamp",
                                     min_dt="min_chunk_dt", max_dt="max_chunk_dt"))
    gate = SafetyGate(**given(workspace_min="workspace_min", workspace_max="workspace_max",
                              max_step_translation="max_step_translation", max_step_rotation="max_step_rotation",
                              max_joint_velocity="max_joint_velocity"), robot=get_robot(parameters["robot_model"]))
    return ChunkExecutor(schedule, gate, period=1.0 / float(parameters["control_rate_hz"]),
                         **given(watchdog_timeout="watchdog_timeout", max_tracking_error="max_tracking_error",
                                 max_joint_state_age="max_joint_state_age"))
