"""Simulator episodes (training/episodes/DATASET.md, npz per episode) -> :class:`Episode`.

Actions are already in the Bridge convention (gripper 1 = open). The robot state (proprio) is the 6 arm joint
positions (rad) and the gripper finger position (m), the order /joint_states has. The target mask of every step comes from
the renderer; the first step's mask stands for the operator's one click at the start, and the destination's mask
in the first image (where recorded) for a click on where the target goes (place prompts). Episodes recorded as
failures (``meta.success`` false) are skipped by default: a failed demonstration is not a demonstration.
Where the episode recorded its camera and TCP, prompts are also placed in the base frame on the plane a cube's
centre rests at (``Episode.camera``, ``prompt_plane_z``), as the policy node places an operator's click.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .base import MISSING_IMAGE, TRUNCATED, Episode, SkipLog, resize_episode

logger = logging.getLogger(__name__)

FAILED_DEMO = "failed demonstration"


def sim_shards(root: str | Path, tasks: Optional[list[str]] = None, max_episodes: Optional[int] = None) -> list[str]:
    """The episode files of a simulator dataset (its shards: one episode each), in index order: those of
    `tasks` (all if None), the first `max_episodes` of them."""
    from pixelvla_training.episodes.dataset import read_index

    files = [e["file"] for e in read_index(root)["episodes"] if not tasks or e["task"] in tasks]
    return files[:max_episodes] if max_episodes is not None else files


def read_sim_episode(root: str | Path, file: str, dataset_key: str = "pixelvla_sim", skip_failures: bool = True,
                     skips: Optional[SkipLog] = None, images: bool = True) -> Optional[Episode]:
    """One episode file of the dataset at `root` -> Episode (None, counted in `skips`, if unusable).
    images=False reads only the actions, state and meta (images and masks None): what statistics need."""
    skips = skips if skips is not None else SkipLog(f"sim:{root}")
    path = Path(root) / file
    if not path.is_file():
        skips.skip(MISSING_IMAGE, f"{path} missing")
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:  # members are decompressed only when asked for
            names = set(npz.files) if images else {"actions", "joint_positions", "gripper_positions"} & set(npz.files)
            a = {k: npz[k] for k in names if k != "meta"}
            meta = json.loads(str(npz["meta"])) if "meta" in npz.files else {}
            has_images = "images" in npz.files
    except Exception as exc:  # zip/npz damage: counted, never fatal
        skips.skip(TRUNCATED, f"{path}: {exc}")
        return None
    if skip_failures and not meta.get("success", True):
        skips.skip(FAILED_DEMO, str(path))
        return None
    if not has_images:
        skips.skip(MISSING_IMAGE, str(path))
        return None
    masks = a.get("target_masks")
    state = None
    if "joint_positions" in a and "gripper_positions" in a:  # /joint_states order: arm joints, then gripper
        state = np.concatenate([a["joint_positions"], a["gripper_positions"][:, None]], axis=1).astype(np.float32)
    camera = tcp = plane = None
    if {"camera_intrinsics", "camera_pose", "tcp_poses"} <= set(a):
        from pixelvla_sim.tasks import CUBE_HALF
        from pixelvla_training.labeling.proposal import camera_from_arrays

        camera = camera_from_arrays(a["camera_intrinsics"], a["camera_pose"], *a["images"].shape[1:3])
        tcp, plane = a["tcp_poses"][:, :3].astype(np.float64), CUBE_HALF
    return Episode(images=a.get("images"), actions=np.asarray(a.get("actions", np.zeros((0, 7))), np.float32),
                   instruction=str(meta.get("instruction", "")), dataset=dataset_key,
                   target_masks=masks, first_masks=None if masks is None else masks[0],
                   source=str(path), meta={k: meta.get(k) for k in ("task", "seed", "prompted")},
                   proprio=state, place_mask=a.get("destination_mask"), camera=camera, tcp_positions=tcp,
                   prompt_plane_z=plane)


def read_sim_episodes(root: str | Path, dataset_key: str = "pixelvla_sim", image_size: Optional[int] = None,
                      tasks: Optional[list[str]] = None, max_episodes: Optional[int] = None,
                      skip_failures: bool = True, skips: Optional[SkipLog] = None) -> Iterator[Episode]:
    """Yield the usable episodes of a simulator dataset directory (of the first `max_episodes` files);
    unreadable ones are counted in `skips`.

    image_size: resize images and masks to (s, s) at load (the model's input size) to save memory and time.
    """
    skips = skips if skips is not None else SkipLog(f"sim:{root}")
    for file in sim_shards(root, tasks, max_episodes):
        ep = read_sim_episode(root, file, dataset_key, skip_failures, skips)
        if ep is not None:
            yield resize_episode(ep, image_size) if image_size else ep


def describe(root: str | Path) -> dict:
    """Tasks and episode counts of a simulator dataset (for logs)."""
    index = json.loads((Path(root) / "index.json").read_text())
    tasks: dict[str, int] = {}
    for e in index["episodes"]:
        tasks[e["task"]] = tasks.get(e["task"], 0) + 1
    return {"episodes": len(index["episodes"]), "tasks": tasks}
