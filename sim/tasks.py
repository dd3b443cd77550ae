"""Tabletop task suite: instructions, seeded randomisation and success detection.

Two families:
- "named" tasks, ``put_<colour>_cube_<on|in>_<plate|bowl>``: three cubes of different colours; the instruction
  names the target by colour ("put the red cube on the plate").
- "prompted" (disambiguation) tasks, ``put_this_cube_<on|in>_<plate|bowl>``: three IDENTICAL cubes; the
  instruction says "put this cube on the plate" and only a visual prompt (a point, box or mask made from
  ``EpisodeSpec.target_object``'s mask, see :mod:`pixelvla_sim.prompts`) tells which one.

Every episode is a pure function of (task, seed): :func:`sample_episode` draws placements (x, y, yaw on the
table), colours (with jitter), which distractors appear, lighting, camera pose jitter and a small start-pose
jitter from ``numpy.random.default_rng(seed)``.

Object ids are the MuJoCo body names :data:`OBJECT_NAMES`. Objects a task does not use are parked on the
floor under the table, out of the cameras' view and have no mask. Positions: metres in the world = robot base frame
(table top at z = 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OBJECT_NAMES: tuple[str, ...] = ("cube_0", "cube_1", "cube_2", "cube_3", "plate", "bowl", "can", "sponge")
CUBES: tuple[str, ...] = OBJECT_NAMES[:4]
DESTINATIONS: tuple[str, ...] = ("plate", "bowl")

CUBE_HALF = 0.018
# Height of each body's origin above the table when it rests upright (m).
REST_Z = {"plate": 0.005, "bowl": 0.0, "can": 0.035, "sponge": 0.012, **{c: CUBE_HALF for c in CUBES}}
# Height above its body origin (m) of the surface seen from above at each object's centre: where a click in
# RViz would land (the bowl's inside bottom).
TOP_Z = {"plate": 0.005, "bowl": 0.004, "can": 0.035, "sponge": 0.012, **{c: CUBE_HALF for c in CUBES}}
# Radius (m) of the disc each object occupies on the table, for non-overlapping placement.
FOOTPRINT = {"plate": 0.072, "bowl": 0.07, "can": 0.03, "sponge": 0.042, **{c: 0.033 for c in CUBES}}
PLATE_RADIUS = 0.07
PLATE_TOP = 0.01                 # plate top above the table when it rests (m)
BOWL_INNER_RADIUS = 0.058
BOWL_RIM = 0.044                 # rim height above the bowl's origin (m)

# Placement region on the table (world frame, m): in reach of a top-down grasp, in the camera's view.
REGION_X = (0.20, 0.44)
REGION_Y = (-0.22, 0.22)
# Unused objects rest on the floor under the table top, hidden from the cameras.
PARK_POSITIONS = {name: (0.05 + 0.2 * (i % 3), -0.3 + 0.3 * (i // 3)) for i, name in enumerate(OBJECT_NAMES)}

CUBE_COLORS = {
    "red": (0.80, 0.10, 0.10),
    "green": (0.12, 0.62, 0.18),
    "blue": (0.12, 0.25, 0.85),
    "yellow": (0.92, 0.80, 0.10),
}
DISTRACTOR_COLORS = [(0.55, 0.25, 0.65), (0.95, 0.5, 0.15), (0.2, 0.6, 0.65), (0.5, 0.5, 0.5), (0.9, 0.45, 0.6)]


@dataclass(frozen=True)
class Task:
    """One task: instruction template and what must end where."""

    name: str
    instruction: str
    destination: str            # "plate" or "bowl"
    color: str | None           # target cube colour for named tasks; None: identical cubes, prompt needed
    n_cubes: int = 3

    @property
    def prompted(self) -> bool:
        """True when only a visual prompt identifies the target (identical cubes)."""
        return self.color is None


def _make_tasks() -> dict[str, Task]:
    tasks = {}
    for color, dest in (("red", "plate"), ("green", "bowl"), ("blue", "plate"), ("yellow", "bowl")):
        prep = "on" if dest == "plate" else "in"
        name = f"put_{color}_cube_{prep}_{dest}"
        tasks[name] = Task(name, f"put the {color} cube {prep} the {dest}", dest, color)
    for dest in DESTINATIONS:
        prep = "on" if dest == "plate" else "in"
        name = f"put_this_cube_{prep}_{dest}"
        tasks[name] = Task(name, f"put this cube {prep} the {dest}", dest, None)
    return tasks


TASKS: dict[str, Task] = _make_tasks()


def get_task(name: str) -> Task:
    """The task called `name`; ValueError listing the known tasks otherwise."""
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


@dataclass
class EpisodeSpec:
    """Everything random about one episode, drawn from its seed (positions in m, angles in rad)."""

    task: str
    seed: int
    instruction: str
    target_object: str                       # object id (body name) to move
    destination: str                         # "plate" or "bowl"
    prompted: bool
    placements: dict[str, tuple[float, float, float]]   # object id -> (x, y, yaw) on the table
    colors: dict[str, tuple[float, float, float, float]]  # object id -> rgba
    descriptions: dict[str, str]             # object id -> words ("red cube", "plate", ...)
    key_light_dir: np.ndarray = field(default_factory=lambda: np.array([-0.2, -0.2, -1.0]))
    key_light_diffuse: float = 0.6
    fill_light_diffuse: float = 0.25
    ambient: float = 0.25
    table_rgb: tuple[float, float, float] = (0.62, 0.48, 0.33)
    camera_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))    # (3,) m, world frame
    camera_rotvec: np.ndarray = field(default_factory=lambda: np.zeros(3))    # (3,) rad, world frame
    start_q_offset: np.ndarray = field(default_factory=lambda: np.zeros(6))   # (6,) rad added to HOME_Q

    @property
    def active_objects(self) -> list[str]:
        """Object ids on the table this episode, in OBJECT_NAMES order."""
        return [n for n in OBJECT_NAMES if n in self.placements]


def _jitter_rgb(rng: np.random.Generator, rgb, amount: float = 0.06) -> tuple[float, float, float, float]:
    rgb = np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0.0, 1.0)
    return (float(rgb[0]), float(rgb[1]), float(rgb[2]), 1.0)


def _place(rng: np.random.Generator, names: list[str]) -> dict[str, tuple[float, float, float]]:
    """Non-overlapping (x, y, yaw) for `names`, largest first; retries the whole layout if it gets stuck."""
    order = sorted(names, key=lambda n: -FOOTPRINT[n])
    for _ in range(100):
        placed: dict[str, tuple[float, float, float]] = {}
        for name in order:
            r = FOOTPRINT[name]
            for _ in range(200):
                x = rng.uniform(REGION_X[0] + 0.3 * r, REGION_X[1] - 0.3 * r)
                y = rng.uniform(REGION_Y[0] + 0.3 * r, REGION_Y[1] - 0.3 * r)
                if all(np.hypot(x - px, y - py) > r + FOOTPRINT[o] + 0.012 for o, (px, py, _) in placed.items()):
                    placed[name] = (float(x), float(y), float(rng.uniform(-np.pi, np.pi)))
                    break
            else:
                break
        if len(placed) == len(order):
            return placed
    raise RuntimeError("could not place the objects without overlap")


def sample_episode(task_name: str, seed: int) -> EpisodeSpec:
    """The episode of `task_name` for `seed` (an int >= 0); the same arguments always give the same spec."""
    task = get_task(task_name)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng([int(seed), sum(map(ord, task.name))])
    cubes = list(CUBES[: task.n_cubes])
    colors: dict[str, tuple[float, float, float, float]] = {}
    descriptions: dict[str, str] = {}
    if task.prompted:
        shared = _jitter_rgb(rng, CUBE_COLORS[rng.choice(sorted(CUBE_COLORS))])
        for c in cubes:
            colors[c] = shared
            descriptions[c] = "cube"
        target = cubes[int(rng.integers(len(cubes)))]
    else:
        others = [c for c in CUBE_COLORS if c != task.color]
        chosen = [task.color] + list(rng.choice(others, size=task.n_cubes - 1, replace=False))
        rng.shuffle(chosen)
        for c, color in zip(cubes, chosen):
            colors[c] = _jitter_rgb(rng, CUBE_COLORS[color])
            descriptions[c] = f"{color} cube"
        target = cubes[chosen.index(task.color)]
    names = cubes + ["plate", "bowl"]
    for distractor in ("can", "sponge"):
        if rng.random() < 0.5:
            names.append(distractor)
            pick = DISTRACTOR_COLORS[int(rng.integers(len(DISTRACTOR_COLORS)))]
            colors[distractor] = _jitter_rgb(rng, pick)
            descriptions[distractor] = distractor
    colors["plate"] = _jitter_rgb(rng, (0.93, 0.93, 0.93), 0.04)
    colors["bowl"] = _jitter_rgb(rng, rng.choice([(0.85, 0.85, 0.8), (0.55, 0.75, 0.9), (0.9, 0.7, 0.55)]), 0.04)
    descriptions["plate"], descriptions["bowl"] = "plate", "bowl"
    placements = _place(rng, names)
    azimuth, elevation = rng.uniform(-np.pi, np.pi), rng.uniform(np.deg2rad(45), np.deg2rad(80))
    key_dir = -np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    return EpisodeSpec(
        task=task.name, seed=int(seed), instruction=task.instruction, target_object=target,
        destination=task.destination, prompted=task.prompted, placements=placements, colors=colors,
        descriptions=descriptions, key_light_dir=key_dir,
        key_light_diffuse=float(rng.uniform(0.4, 0.8)), fill_light_diffuse=float(rng.uniform(0.1, 0.35)),
        ambient=float(rng.uniform(0.15, 0.35)),
        table_rgb=tuple(float(v) for v in np.clip(np.array([0.62, 0.48, 0.33]) + rng.uniform(-0.08, 0.08, 3), 0, 1)),
        camera_offset=rng.uniform(-0.015, 0.015, 3), camera_rotvec=rng.uniform(-1.0, 1.0, 3) * np.deg2rad(1.5),
        start_q_offset=rng.uniform(-0.03, 0.03, 6),
    )


def check_success(spec: EpisodeSpec, positions: dict[str, np.ndarray], released: bool) -> bool:
    """Whether the target object rests on/in its destination.

    `positions`: object id -> (3,) world position of its body origin (m). `released`: no gripper geom
    touches the target (an object still held is not a success). On the plate: centre within the plate's
    radius less 1 cm and the cube lying on the plate (its centre at most 1.5 cm above resting height). In the
    bowl: centre inside the bowl's inner radius and below the rim.
    """
    obj = np.asarray(positions[spec.target_object])
    dest = np.asarray(positions[spec.destination])
    dist = float(np.hypot(*(obj[:2] - dest[:2])))
    if spec.destination == "plate":
        height = obj[2] - (dest[2] + PLATE_TOP - REST_Z["plate"])
        placed = dist < PLATE_RADIUS - 0.01 and CUBE_HALF - 0.01 < height < CUBE_HALF + 0.015
    else:
        height = obj[2] - dest[2]
        placed = dist < BOWL_INNER_RADIUS and 0.0 < height < BOWL_RIM
    return bool(placed and released)
