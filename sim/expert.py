"""Scripted expert with privileged state: solves every task through ``TabletopEnv.step_ee_delta``.

It acts only through 7-D Bridge actions (delta xyz m, delta roll/pitch/yaw rad in the base frame,
gripper 1 = open), so its episodes exercise the same IK path a policy uses and are valid training data.

Plan (top-down grasp, fingers aligned with two faces of the cube):
approach above the target -> descend -> close -> lift -> carry above the destination -> lower -> open ->
retreat upwards. Each phase ends when the measured TCP is within tolerance of the phase's waypoint (or,
for gripper phases, after a fixed number of steps). The plan follows the state, so the expert can label
any state another driver leads to (DAgger): a dropped cube is grasped again, a lifted one carried on. Per-step motion is limited like Bridge data
(:attr:`ScriptedExpert.max_translation` m, :attr:`ScriptedExpert.max_rotation` rad).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pixelvla_robots import rotations
from pixelvla_sim.tasks import BOWL_RIM, CUBE_HALF, PLATE_TOP, REST_Z


def top_down_rotation(psi: float) -> np.ndarray:
    """(3, 3) TCP rotation pointing straight down (TCP x = -z world), finger travel axis (TCP y) at yaw `psi`."""
    x = np.array([0.0, 0.0, -1.0])
    y = np.array([np.cos(psi), np.sin(psi), 0.0])
    return np.stack([x, y, np.cross(x, y)], axis=1)


def _yaw_of_quat(quat: np.ndarray) -> float:
    rot = rotations.quat_to_matrix(quat)
    return float(np.arctan2(rot[1, 0], rot[0, 0]))


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


@dataclass
class ScriptedExpert:
    """State machine over privileged observations (object poses, TCP pose); call :meth:`act` once per step."""

    max_translation: float = 0.04     # m per control step
    max_rotation: float = 0.35        # rad per control step
    hover_height: float = 0.10        # m above the grasp/release point for approach and retreat
    carry_height: float = 0.12        # m, TCP height while carrying
    position_tolerance: float = 0.006  # m
    rotation_tolerance: float = 0.06  # rad
    gripper_steps: int = 2            # control steps to close or open the gripper
    hold_radius: float = 0.03         # m: a grasped cube's centre stays this close to the TCP
    lift_margin: float = 0.015        # m above its resting height: a held cube this high is off the table
    # None: carry the cube to the point above the destination's centre (within 2.5 x position_tolerance) and
    # lower it onto the centre. A distance (m): the carry comes down a cone around the destination's centre
    # (height above the release point = place_slope x (horizontal distance - place_radius)), ends within
    # place_radius of the release point and lowers straight down from there. The plate and bowl accept a cube
    # several cm off centre; a policy that resolves the destination only to a few cm then sees "lower" labels
    # that grow smoothly as it closes in, instead of one switch at a point it cannot see.
    place_radius: float | None = None
    place_slope: float = 2.0           # m of height per m of horizontal distance on that cone (clears the bowl rim)
    # With place_radius: let go once within this of the release point (the cube drops at most that far), so
    # "open" is asked over a band of heights, not at one. A lift near the destination goes only up to the cone.
    release_band: float = 0.015        # m
    # None: descend from the hover point straight to the grasp point, moving over while going down. A distance
    # (m): the descent follows a cone around the target (height above the grasp point = grasp_slope x
    # (horizontal distance - grasp_radius), at most hover_height), so a TCP that came down off the cube rises
    # until its fingers clear the cube, moves over, and only then goes down: fingers resting on the cube's top or
    # beside it are told "up and over", never "into the cube".
    grasp_radius: float | None = None
    grasp_slope: float = 2.0           # m of height per m of horizontal distance on that cone
    phase: str = field(default="approach", init=False)
    _counter: int = field(default=0, init=False)
    _psi: float | None = field(default=None, init=False)
    _hold_rotation: np.ndarray | None = field(default=None, init=False)  # TCP rotation when the grasp closed
    _release_xy: np.ndarray | None = field(default=None, init=False)  # where to lower (with place_radius)

    PHASES = ("approach", "descend", "close", "lift", "carry", "lower", "open", "retreat", "done")

    def reset(self) -> None:
        """Forget the current plan (call at every episode start)."""
        self.phase, self._counter, self._psi, self._hold_rotation, self._release_xy = "approach", 0, None, None, None

    def _grasp_yaw(self, obs: dict) -> float:
        """Finger-axis yaw aligned with a cube face, closest to a natural wrist pose for that cube."""
        target = obs["object_poses"][obs["target_object"]]
        cube_yaw = _yaw_of_quat(target[3:])
        natural = np.arctan2(target[1], target[0]) + np.pi / 2  # fingers across the radial direction
        candidates = cube_yaw + np.arange(-4, 5) * (np.pi / 2)
        return float(candidates[np.argmin([abs(_wrap(c - natural)) for c in candidates])])

    def _waypoint(self, obs: dict) -> tuple[np.ndarray, np.ndarray, float]:
        """(position (3,), rotation (3, 3), gripper) the current phase drives to."""
        poses = obs["object_poses"]
        target = poses[obs["target_object"]][:3]
        dest_name = "plate" if "plate" in obs["task"] else "bowl"
        dest = poses[dest_name][:3]
        if self._psi is None:
            self._psi = self._grasp_yaw(obs)
        rot = top_down_rotation(self._psi)
        if self.phase not in ("approach", "descend", "close") and self._hold_rotation is not None:
            rot = self._hold_rotation
        grasp_z = target[2] + 0.002
        if dest_name == "plate":
            release_z = dest[2] - REST_Z["plate"] + PLATE_TOP + CUBE_HALF + 0.012
        else:
            release_z = dest[2] + CUBE_HALF + 0.02
        release_z = max(release_z, dest[2] + BOWL_RIM - 0.01) if dest_name == "bowl" else release_z
        ph = self.phase
        carry_z = self.carry_height
        if self.place_radius is not None:  # the cone around the destination
            carry_z = min(carry_z, release_z + _cone_height(obs, dest, self.place_radius, self.place_slope))
        if ph == "approach":
            return np.array([target[0], target[1], grasp_z + self.hover_height]), rot, 1.0
        if ph == "descend":
            if self.grasp_radius is not None:  # the cone around the target
                grasp_z += min(self.hover_height, _cone_height(obs, target, self.grasp_radius, self.grasp_slope))
                tcp = obs["tcp_position"]
                if tcp[2] < grasp_z - self.position_tolerance:  # under the cone: straight up, never sideways
                    return np.array([tcp[0], tcp[1], grasp_z]), rot, 1.0
            return np.array([target[0], target[1], grasp_z]), rot, 1.0
        if ph == "close":
            return obs["tcp_position"], rot, 0.0
        if ph == "lift":
            return np.array([obs["tcp_position"][0], obs["tcp_position"][1], carry_z]), rot, 0.0
        if ph == "carry":
            return np.array([dest[0], dest[1], carry_z]), rot, 0.0
        if ph == "lower":
            x, y = dest[:2] if self._release_xy is None else self._release_xy
            return np.array([x, y, release_z]), rot, 0.0
        if ph == "open":
            return obs["tcp_position"], rot, 1.0
        return np.array([obs["tcp_position"][0], obs["tcp_position"][1], release_z + self.hover_height]), rot, 1.0

    def act(self, obs: dict) -> np.ndarray:
        """The (7,) Bridge action for observation `obs` (needs object_poses, tcp_position, tcp_rotation)."""
        # The plan follows the state when another driver (DAgger) or a slip changed it: a cube that is no
        # longer in the hand is grasped again, one already grasped and lifted is carried on.
        if self.phase in ("lift", "carry", "lower") and not self._holding(obs):
            self.reset()
        elif self.phase in ("approach", "descend", "close") and self._lifted(obs):
            self._enter("lift", obs)
        # Advance through phases whose goal is already met (at most one full pass).
        for _ in range(len(self.PHASES)):
            pos, rot, grip = self._waypoint(obs)
            if self.phase in ("close", "open"):
                if self._counter >= self.gripper_steps:
                    self._enter(self.PHASES[self.PHASES.index(self.phase) + 1], obs)
                    continue
                self._counter += 1
                break
            if self.phase == "done":
                break
            tol_scale = 2.5 if self.phase in ("approach", "lift", "carry", "retreat") else 1.0
            # Going down to the cube waits for the position only: the wrist turns on the way, and a grasp
            # a little off the cube's faces still holds (a policy's states often are).
            check_rotation = self.phase not in ("approach", "descend")
            # With place_radius the carry and the lowering end early (see place_radius, release_band).
            loose = None if self.place_radius is None else {"carry": self.place_radius,
                                                            "lower": self.release_band}.get(self.phase)
            if self._reached_scaled(obs, pos, rot, tol_scale, check_rotation, loose):
                self._enter(self.PHASES[self.PHASES.index(self.phase) + 1], obs)
                continue
            break
        pos, rot, grip = self._waypoint(obs)
        delta = rotations.ee_delta_between(obs["tcp_position"], obs["tcp_rotation"], pos, rot)
        step = np.linalg.norm(delta[:3])
        if step > self.max_translation:
            delta[:3] *= self.max_translation / step
        rotvec = rotations.rotation_log(rot @ obs["tcp_rotation"].T)
        angle = np.linalg.norm(rotvec)
        if angle > self.max_rotation:  # rotate part of the way, about the same axis
            partial = _rotvec_matrix(rotvec * self.max_rotation / angle)
            delta[3:] = rotations.matrix_to_rpy(partial)
        if self.phase in ("close", "open"):
            delta[:] = 0.0
        return np.concatenate([delta, [grip]])

    def _holding(self, obs: dict) -> bool:
        """Whether the target cube moves with the TCP (within the hold radius of it)."""
        target = obs["object_poses"][obs["target_object"]][:3]
        return float(np.linalg.norm(target - obs["tcp_position"])) < self.hold_radius

    def _lifted(self, obs: dict) -> bool:
        """Whether the target is held and raised off the table (by more than the lift margin)."""
        target = obs["object_poses"][obs["target_object"]][:3]
        return self._holding(obs) and target[2] > REST_Z[obs["target_object"]] + self.lift_margin

    def _enter(self, phase: str, obs: dict) -> None:
        """Switch to `phase`; a cube in the hand is carried with the wrist as it was when the grasp closed."""
        self.phase, self._counter = phase, 0
        if phase == "lift":
            self._hold_rotation = obs["tcp_rotation"].copy()
        if phase == "lower" and self.place_radius is not None:
            self._release_xy = np.array(obs["tcp_position"][:2], dtype=float)

    def _reached_scaled(self, obs: dict, pos, rot, scale: float, check_rotation: bool = True,
                        position_tolerance: float | None = None) -> bool:
        """Within the scaled tolerances of (pos, rot); `position_tolerance` (m) replaces the scaled one."""
        err_pos = np.linalg.norm(pos - obs["tcp_position"])
        err_rot = np.linalg.norm(rotations.rotation_log(rot @ obs["tcp_rotation"].T))
        rotation_ok = err_rot < self.rotation_tolerance * scale or not check_rotation
        limit = self.position_tolerance * scale if position_tolerance is None else position_tolerance
        return err_pos < limit and rotation_ok


def _cone_height(obs: dict, centre: np.ndarray, radius: float, slope: float) -> float:
    """Height (m) of a cone with its tip `radius` around `centre` (x, y) at the TCP's horizontal position."""
    off_centre = float(np.linalg.norm(obs["tcp_position"][:2] - centre[:2]))
    return slope * max(0.0, off_centre - radius)


def _rotvec_matrix(rotvec: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = rotvec / angle
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


@dataclass
class ExpertEpisode:
    """What :func:`run_expert_episode` returns: T actions and the T + 1 observations around them."""

    task: str
    seed: int
    actions: np.ndarray            # (T, 7) the expert's Bridge actions (the labels)
    observations: list[dict]       # T + 1 observations: observations[t] is what action t was chosen from
    success: bool                  # success flag of the final observation
    executed: np.ndarray           # (T, 7) what the arm executed: the expert's or the driver's action, plus noise


class Driver(Protocol):
    """Something other than the expert that moves the arm (a learned policy, for DAgger)."""

    def reset(self, obs: dict) -> None: ...
    def __call__(self, obs: dict) -> np.ndarray: ...


def run_expert_episode(env, task: str, seed: int, max_steps: int | None = None, render: bool | None = None,
                       expert: ScriptedExpert | None = None, translation_noise: float = 0.0,
                       rotation_noise: float = 0.0, driver: Driver | None = None,
                       expert_share: float = 1.0) -> ExpertEpisode:
    """Reset `env` to (task, seed) and let the expert act until success after retreating, or `max_steps`
    (default: env.max_episode_steps). `render` as in TabletopEnv.step (None: the env's setting).

    Noise (DART): Gaussian noise with these standard deviations (m, rad per axis) is added to the
    translation and rotation the arm executes, while the episode records the expert's own action at
    the state reached. The data then shows how to come back from the small errors a learned policy
    makes, which clean demonstrations never do. The noise is drawn from (seed, task): reproducible.

    DAgger: with a `driver`, each step executes the driver's action instead of the expert's with
    probability 1 - `expert_share` (drawn from the same generator); the recorded action is still the
    expert's. The data then covers the states the driver's own mistakes lead to, labelled with the way back.
    """
    expert = expert or ScriptedExpert()
    expert.reset()
    max_steps = env.max_episode_steps if max_steps is None else max_steps
    rng = np.random.default_rng([int(seed), sum(map(ord, task)), 1])
    obs = env.reset(task, seed, render=render)
    if driver is not None:
        driver.reset(obs)
    observations, actions, executed_actions = [obs], [], []
    for _ in range(max_steps):
        action = expert.act(obs)
        driven = driver is not None and rng.random() >= expert_share
        executed = np.asarray(driver(obs), dtype=np.float64).copy() if driven else action.copy()
        executed[:3] += rng.normal(0.0, translation_noise, 3) if translation_noise else 0.0
        executed[3:6] += rng.normal(0.0, rotation_noise, 3) if rotation_noise else 0.0
        obs = env.step_ee_delta(executed, render=render)
        actions.append(action)
        executed_actions.append(executed)
        observations.append(obs)
        if expert.phase == "done" and obs["success"]:
            break
    return ExpertEpisode(task, seed, np.array(actions, dtype=np.float64).reshape(-1, 7), observations,
                         bool(observations[-1]["success"]), np.array(executed_actions, dtype=np.float64).reshape(-1, 7))
