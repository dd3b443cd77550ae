"""Simulated-episode training dataset: writer, reader, validator (format: training/episodes/DATASET.md).

A dataset is a directory holding one compressed ``.npz`` per episode (numpy arrays only, read with
``allow_pickle=False``) and an ``index.json`` listing them. Shapes, units and frames are in DATASET.md and in
:data:`ARRAYS`.

Command line (records the scripted expert): ``python -m pixelvla_training.episodes.dataset --out DIR
[--tasks t1,t2] [--episodes N] [--seed0 S] [--size 224] [--translation-noise M --rotation-noise RAD]
[--policy DIR --expert-share F [--place-prompt]] [--place-radius M] [--grasp-radius M]``;
``--validate DIR`` checks an existing dataset; ``--relabel DIR`` recomputes its labels with the current expert
(or the one ``--place-radius`` and ``--grasp-radius`` describe); ``--add-destination DIR`` adds destination masks to older recordings.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixelvla_robots.rotations import matrix_to_quat
from pixelvla_sim.prompts import mask_box, mask_point

FORMAT = "pixelvla-sim-episodes"
VERSION = 1
INDEX = "index.json"

# name -> (dtype, shape with T = steps, H/W = image size)
ARRAYS: dict[str, tuple[str, tuple]] = {
    "images": ("uint8", ("T", "H", "W", 3)),
    "actions": ("float32", ("T", 7)),
    "joint_positions": ("float32", ("T", 6)),
    "gripper_positions": ("float32", ("T",)),
    "tcp_poses": ("float32", ("T", 7)),
    "target_masks": ("bool", ("T", "H", "W")),
    "prompt_points": ("float32", ("T", 2)),
    "prompt_boxes": ("float32", ("T", 4)),
    "step_success": ("bool", ("T",)),
    "camera_intrinsics": ("float32", (4,)),
    "camera_pose": ("float32", (7,)),
}
# Arrays an episode may lack (datasets recorded before they existed).
OPTIONAL_ARRAYS: dict[str, tuple[str, tuple]] = {
    "executed_actions": ("float64", ("T", 7)),  # exact, so that replaying them rebuilds the episode's states
    "destination_mask": ("bool", ("H", "W")),  # the plate or bowl in the first image: where place prompts come from
}
META_KEYS = ("format", "version", "task", "seed", "instruction", "target_object", "destination", "prompted",
             "success", "num_steps", "image_size", "camera", "control_period")


@dataclass
class Episode:
    """One episode in memory: the arrays of :data:`ARRAYS` plus the JSON-able ``meta`` dict."""

    arrays: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    @property
    def num_steps(self) -> int:
        return int(self.arrays["actions"].shape[0])


def episode_from_observations(observations: list[dict], actions: np.ndarray, env, success: bool,
                              executed: np.ndarray | None = None) -> Episode:
    """Build an Episode from T + 1 observations (rendered, with masks) and the T actions taken between them.

    The last observation only contributes the episode's success; step t stores observation t and action t.
    `executed`: the (T, 7) actions the arm ran (the labels, or a DAgger driver's actions, plus any noise),
    stored so that the episode can be relabelled (:func:`relabel_episode`).
    """
    spec = env.spec
    actions = np.asarray(actions, dtype=np.float32).reshape(-1, 7)
    obs = observations[: len(actions)]
    if len(obs) != len(actions) or any(o["rgb"] is None or o["masks"] is None for o in obs):
        raise ValueError("need one rendered observation with masks per action")
    masks = np.stack([o["masks"].get(spec.target_object, np.zeros(o["rgb"].shape[:2], bool)) for o in obs])
    cam = env.camera_model()
    arrays = {
        "images": np.stack([o["rgb"] for o in obs]).astype(np.uint8),
        "actions": actions,
        "joint_positions": np.stack([o["joint_positions"] for o in obs]).astype(np.float32),
        "gripper_positions": np.array([o["gripper_position"] for o in obs], dtype=np.float32),
        "tcp_poses": np.stack([np.concatenate([o["tcp_position"], matrix_to_quat(o["tcp_rotation"])])
                               for o in obs]).astype(np.float32),
        "target_masks": masks,
        "prompt_points": np.stack([mask_point(m) for m in masks]).astype(np.float32),
        "prompt_boxes": np.stack([mask_box(m) for m in masks]).astype(np.float32),
        "step_success": np.array([o["success"] for o in obs], dtype=bool),
        "camera_intrinsics": np.array([cam.fx, cam.fy, cam.cx, cam.cy], dtype=np.float32),
        "camera_pose": np.concatenate([cam.position, matrix_to_quat(cam.rotation)]).astype(np.float32),
    }
    if executed is not None:
        arrays["executed_actions"] = np.asarray(executed, dtype=np.float64).reshape(-1, 7)
    arrays["destination_mask"] = destination_mask(obs[0], spec.destination)
    meta = {
        "format": FORMAT, "version": VERSION, "task": spec.task, "seed": spec.seed,
        "instruction": spec.instruction, "target_object": spec.target_object, "destination": spec.destination,
        "prompted": spec.prompted, "success": bool(success), "num_steps": len(actions),
        "image_size": [env.height, env.width], "camera": env.camera, "control_period": env.control_period,
        "object_descriptions": dict(spec.descriptions),
    }
    return Episode(arrays, meta)


def destination_mask(observation: dict, destination: str) -> np.ndarray:
    """(H, W) bool: the visible pixels of the destination object (plate, bowl) in a rendered observation."""
    return np.asarray(observation["masks"].get(destination, np.zeros(observation["rgb"].shape[:2], bool)), bool)


def validate_episode(episode: Episode) -> None:
    """Raise ValueError listing every way `episode` breaks the format (keys, dtypes, shapes, ranges)."""
    problems = []
    a, meta = episode.arrays, episode.meta
    for key in META_KEYS:
        if key not in meta:
            problems.append(f"meta lacks {key!r}")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        problems.append(f"format/version {meta.get('format')!r}/{meta.get('version')!r}, expected {FORMAT!r}/{VERSION}")
    missing = [k for k in ARRAYS if k not in a]
    problems += [f"missing array {k!r}" for k in missing]
    if "actions" in a and "images" in a and a["images"].ndim == 4:
        dims = {"T": a["actions"].shape[0], "H": a["images"].shape[1], "W": a["images"].shape[2]}
        for key, (dtype, shape) in {**ARRAYS, **OPTIONAL_ARRAYS}.items():
            if key in missing or key not in a:
                continue
            want = tuple(dims[s] if isinstance(s, str) else s for s in shape)
            if a[key].dtype != np.dtype(dtype):
                problems.append(f"{key}: dtype {a[key].dtype}, expected {dtype}")
            if a[key].shape != want:
                problems.append(f"{key}: shape {a[key].shape}, expected {want}")
        if dims["T"] == 0:
            problems.append("episode has no steps")
        if meta.get("num_steps") != dims["T"]:
            problems.append(f"meta num_steps {meta.get('num_steps')} != {dims['T']} actions")
        if list(meta.get("image_size", [])) != [dims["H"], dims["W"]]:
            problems.append(f"meta image_size {meta.get('image_size')} != images {dims['H']}x{dims['W']}")
    elif not missing:
        problems.append("images must be (T, H, W, 3)")
    if not problems:
        for key in ("actions", "joint_positions", "gripper_positions", "tcp_poses", "camera_intrinsics", "camera_pose",
                    *OPTIONAL_ARRAYS):
            if key in a and not np.all(np.isfinite(a[key])):
                problems.append(f"{key} has NaN/inf")
        grip = a["actions"][:, 6]
        if np.any((grip < 0) | (grip > 1)):
            problems.append("gripper actions outside [0, 1] (Bridge: 1 = open, 0 = closed)")
        empty = ~a["target_masks"].any(axis=(1, 2))
        if np.any(np.isnan(a["prompt_points"][~empty])) or np.any(~np.isnan(a["prompt_points"][empty])):
            problems.append("prompt_points must be NaN exactly where the target mask is empty")
        pts = a["prompt_points"][~empty].astype(int)
        if pts.size and not np.all(a["target_masks"][~empty][np.arange(len(pts)), pts[:, 1], pts[:, 0]]):
            problems.append("a prompt point lies outside its target mask")
        if bool(meta.get("success")) not in (True, False):
            problems.append("meta success must be a bool")
    if problems:
        raise ValueError("invalid episode: " + "; ".join(problems))


def write_episode(path: str | os.PathLike, episode: Episode) -> Path:
    """Validate and write `episode` to `path` (.npz, compressed; meta as a JSON string array)."""
    validate_episode(episode)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **episode.arrays, meta=np.array(json.dumps(episode.meta)))
    tmp.replace(path)
    return path


def read_episode(path: str | os.PathLike, validate: bool = True) -> Episode:
    """Read one episode .npz (never unpickles); validated unless `validate` is False."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "meta"}
        meta = json.loads(str(npz["meta"])) if "meta" in npz.files else {}
    episode = Episode(arrays, meta)
    if validate:
        validate_episode(episode)
    return episode


class DatasetWriter:
    """Appends episodes to a dataset directory as ``episode_NNNNNN.npz`` and keeps ``index.json`` current."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        index_path = self.root / INDEX
        self.index = read_index(self.root) if index_path.exists() else {"format": FORMAT, "version": VERSION,
                                                                          "episodes": []}

    def add(self, episode: Episode) -> Path:
        name = f"episode_{len(self.index['episodes']):06d}.npz"
        path = write_episode(self.root / name, episode)
        m = episode.meta
        self.index["episodes"].append({"file": name, "task": m["task"], "seed": m["seed"],
                                       "instruction": m["instruction"], "num_steps": m["num_steps"],
                                       "success": m["success"]})
        tmp = self.root / (INDEX + ".tmp")
        tmp.write_text(json.dumps(self.index, indent=1))
        tmp.replace(self.root / INDEX)
        return path


def read_index(root: str | os.PathLike) -> dict:
    """The parsed index.json of a dataset directory (ValueError if it is not this format)."""
    index = json.loads((Path(root) / INDEX).read_text())
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{root}: not a {FORMAT} v{VERSION} dataset")
    return index


def iter_episodes(root: str | os.PathLike, validate: bool = True):
    """Yield every Episode of a dataset directory, in index order."""
    for entry in read_index(root)["episodes"]:
        yield read_episode(Path(root) / entry["file"], validate=validate)


def validate_dataset(root: str | os.PathLike) -> int:
    """Validate the index and every episode (and that they agree); returns the number of episodes."""
    index = read_index(root)
    for entry in index["episodes"]:
        episode = read_episode(Path(root) / entry["file"])
        for key in ("task", "seed", "num_steps", "success"):
            if episode.meta[key] != entry[key]:
                raise ValueError(f"{entry['file']}: index {key}={entry[key]!r} but episode has {episode.meta[key]!r}")
    return len(index["episodes"])


def relabel_episode(env, episode: Episode, expert=None, atol: float = 1e-5) -> Episode:
    """The same episode with its `actions` recomputed by `expert` (default: a fresh ScriptedExpert).

    Replays the stored `executed_actions` from (task, seed) in `env` (no rendering) and asks the expert at
    every state, as recording did; images, states and masks are kept. For datasets recorded before a change
    to the expert. ValueError when the episode has no executed actions, or when a replayed state differs from
    the stored one by more than `atol` (rad, m): then the simulator changed and the labels would not belong
    to the stored images.
    """
    from pixelvla_sim.expert import ScriptedExpert

    if "executed_actions" not in episode.arrays:
        raise ValueError("no executed_actions: recorded before they were stored, cannot be replayed")
    expert = expert or ScriptedExpert()
    expert.reset()
    obs = env.reset(episode.meta["task"], episode.meta["seed"], render=False)
    labels = []
    for t, executed in enumerate(episode["executed_actions"]):
        drift = max(np.abs(obs["joint_positions"] - episode["joint_positions"][t]).max(),
                    abs(obs["gripper_position"] - episode["gripper_positions"][t]))
        if drift > atol:
            raise ValueError(f"replay left the recorded states at step {t} (by {drift:.2g}): the simulator changed")
        labels.append(expert.act(obs))
        obs = env.step_ee_delta(executed, render=False)
    arrays = {**episode.arrays, "actions": np.asarray(labels, dtype=np.float32).reshape(-1, 7)}
    return Episode(arrays, dict(episode.meta))


def _readable_episodes(root: str | os.PathLike, counts: dict[str, int], progress):
    """(file name, path, Episode) for each episode of the dataset that can be read; the others are counted
    under "unreadable" and reported through `progress`."""
    for entry in read_index(root)["episodes"]:
        path = Path(root) / entry["file"]
        try:
            yield entry["file"], path, read_episode(path)
        except (OSError, ValueError) as exc:
            counts["unreadable"] += 1
            progress(f"{entry['file']}: left as it is, unreadable ({exc})")


def relabel_dataset(root: str | os.PathLike, progress=print, expert=None) -> dict[str, int]:
    """Relabel every episode of a dataset in place with `expert` (default: the current ScriptedExpert; see
    relabel_episode); an episode that cannot be read or replayed is left as it is. Returns counts: relabelled,
    changed (files rewritten because their labels differ), unreadable, not replayable."""
    from pixelvla_sim.env import TabletopEnv

    counts = dict.fromkeys(("relabelled", "changed", "unreadable", "not replayable"), 0)
    with TabletopEnv(render=False, masks=False) as env:
        for name, path, episode in _readable_episodes(root, counts, progress):
            try:
                relabelled = relabel_episode(env, episode, expert)
            except ValueError as exc:
                counts["not replayable"] += 1
                progress(f"{name}: left as it is, not replayable ({exc})")
                continue
            counts["relabelled"] += 1
            if not np.array_equal(relabelled["actions"], episode["actions"]):
                counts["changed"] += 1
                write_episode(path, relabelled)
    return counts


def add_destination_masks(root: str | os.PathLike, progress=print) -> dict[str, int]:
    """Give every episode of a dataset without a `destination_mask` one, in place: the episode's first
    observation is rebuilt from (task, seed) and must equal the stored first image pixel for pixel, else the
    episode is left as it is (the simulator or renderer changed since it was recorded). Returns counts: added,
    present (had one), unreadable, not reproducible."""
    from pixelvla_sim.env import TabletopEnv

    counts = dict.fromkeys(("added", "present", "unreadable", "not reproducible"), 0)
    envs: dict[tuple[int, int], TabletopEnv] = {}  # one renderer per image size
    try:
        for name, path, episode in _readable_episodes(root, counts, progress):
            if "destination_mask" in episode.arrays:
                counts["present"] += 1
                continue
            size = episode["images"].shape[1:3]
            if size not in envs:
                envs[size] = TabletopEnv(render_size=size)
            obs = envs[size].reset(episode.meta["task"], episode.meta["seed"])
            if not np.array_equal(obs["rgb"], episode["images"][0]):
                counts["not reproducible"] += 1
                progress(f"{name}: left as it is, not reproducible (the rebuilt first image differs)")
                continue
            arrays = {**episode.arrays, "destination_mask": destination_mask(obs, episode.meta["destination"])}
            write_episode(path, Episode(arrays, dict(episode.meta)))
            counts["added"] += 1
    finally:
        for env in envs.values():
            env.close()
    return counts


def record_expert_episodes(root, tasks, seeds, render_size=(224, 224), progress=print,
                           translation_noise: float = 0.0, rotation_noise: float = 0.0,
                           driver=None, expert_share: float = 1.0, expert=None) -> int:
    """Record the scripted expert on every (task, seed) into the dataset at `root`; returns episodes written.
    The noise (m, rad) and a `driver` (DAgger) change the executed actions, never the recorded ones:
    see run_expert_episode."""
    from pixelvla_sim.env import TabletopEnv
    from pixelvla_sim.expert import run_expert_episode

    writer = DatasetWriter(root)
    count = 0
    with TabletopEnv(render_size=render_size) as env:
        for task in tasks:
            for seed in seeds:
                ep = run_expert_episode(env, task, seed, translation_noise=translation_noise, rotation_noise=rotation_noise,
                                        driver=driver, expert_share=expert_share, expert=expert)
                writer.add(episode_from_observations(ep.observations, ep.actions, env, ep.success, ep.executed))
                count += 1
                progress(f"[{count}/{len(tasks) * len(seeds)}] {task} seed {seed}: "
                         f"{'success' if ep.success else 'FAILED'} in {len(ep.actions)} steps")
    return count


def main(argv=None) -> int:
    from pixelvla_sim.tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="dataset directory to create or extend")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task")
    parser.add_argument("--seed0", type=int, default=0, help="first seed")
    parser.add_argument("--size", type=int, default=224, help="square image size in pixels")
    parser.add_argument("--translation-noise", type=float, default=0.0,
                        help="std (m) of noise added to the executed translation; the recorded action stays the expert's")
    parser.add_argument("--rotation-noise", type=float, default=0.0, help="the same for rotation (rad per axis)")
    parser.add_argument("--policy", metavar="DIR",
                        help="DAgger: a checkpoint that drives the arm on part of the steps (prompted with a click "
                             "on the target); the recorded actions stay the expert's")
    parser.add_argument("--place-prompt", action="store_true",
                        help="with --policy: prompt the policy with a click on the destination too (place prompt)")
    parser.add_argument("--expert-share", type=float, default=0.3,
                        help="with --policy: the fraction of steps the expert's own action is executed")
    parser.add_argument("--place-radius", type=float, metavar="M",
                        help="expert labels (recording and --relabel): carry down a cone around the destination, end "
                             "the carry within M metres of the release point and lower straight down from there "
                             "(default: level carry onto the centre)")
    parser.add_argument("--grasp-radius", type=float, metavar="M",
                        help="expert labels (recording and --relabel): descend to the cube down a cone whose tip is M "
                             "metres around it, so a TCP that came down off the cube rises, moves over and descends "
                             "again (default: straight from the hover point to the grasp point)")
    parser.add_argument("--validate", metavar="DIR", help="only validate the dataset in DIR")
    parser.add_argument("--relabel", metavar="DIR",
                        help="recompute the actions of the dataset in DIR with the current expert (and --place-radius, --grasp-radius), "
                             "in place, by replaying the executed actions (after a change to the expert)")
    parser.add_argument("--add-destination", metavar="DIR",
                        help="give the episodes in DIR recorded without a destination mask one, in place, from "
                             "their rebuilt first observation")
    args = parser.parse_args(argv)
    from pixelvla_sim.expert import ScriptedExpert

    for flag, radius in (("--place-radius", args.place_radius), ("--grasp-radius", args.grasp_radius)):
        if radius is not None and not 0.0 < radius < 0.1:
            parser.error(f"{flag} {radius} m: give a distance in (0, 0.1)")
    expert = ScriptedExpert(place_radius=args.place_radius, grasp_radius=args.grasp_radius)
    if args.add_destination:
        counts = add_destination_masks(args.add_destination)
        print(f"{args.add_destination}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0
    if args.validate:
        print(f"{args.validate}: {validate_dataset(args.validate)} valid episodes")
        return 0
    if args.relabel:
        counts = relabel_dataset(args.relabel, expert=expert)
        print(f"{args.relabel}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0
    if not args.out:
        parser.error("--out, --validate, --relabel or --add-destination is required")
    tasks = [t for t in args.tasks.split(",") if t]
    seeds = range(args.seed0, args.seed0 + args.episodes)
    if not 0.0 <= args.expert_share <= 1.0:
        parser.error(f"--expert-share {args.expert_share} is not in [0, 1]")
    driver = None
    if args.policy:
        from pixelvla_training.episodes.dagger import PolicyDriver

        try:
            from pixelvla_sim.control import load_robot_parameters

            steps = int(load_robot_parameters().get("steps_per_inference", 1))  # the robot file the env runs
            driver = PolicyDriver(args.policy, place=args.place_prompt, steps_per_inference=steps)
        except ValueError as exc:
            parser.error(str(exc))
    n = record_expert_episodes(args.out, tasks, seeds, (args.size, args.size),
                               translation_noise=args.translation_noise, rotation_noise=args.rotation_noise,
                               driver=driver, expert_share=args.expert_share, expert=expert)
    print(f"wrote {n} episodes to {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
