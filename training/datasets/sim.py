"""Simulator episodes (training/episodes/DATASET.md, npz per episode) -> :class:`Episode`.

Actions are already in the Bridge convention (gripper 1 = open). The robot state (proprio) is the 6 arm joint
positions (rad) and the gripper finger position (m), the order /joint_states has. The target mask of every step comes from
the renderer; the first step's mask stands for the operator's one click at the start, and the destination's mask
in the first image (where recorded) for a click on where the target goes (place prompts). Episodes recorded as
failures (``meta.success`` false) are skipped by default: a failed demonstration is not a demonstration.
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


def read_sim_episodes(root: str | Path, dataset_key: str = "pixelvla_sim", image_size: Optional[int] = None,
                      tasks: Optional[list[str]] = None, max_episodes: Optional[int] = None,
                      skip_failures: bool = True, skips: Optional[SkipLog] = None) -> Iterator[Episode]:
    """Yield the episodes of a simulator dataset directory; unreadable ones are counted in `skips`.

    image_size: resize images and masks to (s, s) at load (the model's input size) to save memory and time.
    """
    from pixelvla_training.episodes.dataset import read_episode, read_index

    skips = skips if skips is not None else SkipLog(f"sim:{root}")
    index = read_index(root)
    count = 0
    for entry in index["episodes"]:
        if tasks and entry["task"] not in tasks:
            continue
        if max_episodes is not None and count >= max_episodes:
            break
        path = Path(root) / entry["file"]
        if not path.is_file():
            skips.skip(MISSING_IMAGE, f"{path} missing")
            continue
        try:
            raw = read_episode(path, validate=False)
        except Exception as exc:  # zip/npz damage: counted, never fatal
            skips.skip(TRUNCATED, f"{path}: {exc}")
            continue
        a = raw.arrays
        if skip_failures and not raw.meta.get("success", True):
            skips.skip(FAILED_DEMO, str(path))
            continue
        if "images" not in a:
            skips.skip(MISSING_IMAGE, str(path))
            continue
        masks = a.get("target_masks")
        state = None
        if "joint_positions" in a and "gripper_positions" in a:  # /joint_states order: arm joints, then gripper
            state = np.concatenate([a["joint_positions"], a["gripper_positions"][:, None]], axis=1).astype(np.float32)
        ep = Episode(images=a["images"], actions=np.asarray(a.get("actions", np.zeros((0, 7))), np.float32),
                     instruction=str(raw.meta.get("instruction", "")), dataset=dataset_key,
                     target_masks=masks, first_masks=None if masks is None else masks[0],
                     source=str(path), meta={k: raw.meta.get(k) for k in ("task", "seed", "prompted")},
                     proprio=state, place_mask=a.get("destination_mask"))
        count += 1
        yield resize_episode(ep, image_size) if image_size else ep


def describe(root: str | Path) -> dict:
    """Tasks and episode counts of a simulator dataset (for logs)."""
    index = json.loads((Path(root) / "index.json").read_text())
    tasks: dict[str, int] = {}
    for e in index["episodes"]:
        tasks[e["task"]] = tasks.get(e["task"], 0) + 1
    return {"episodes": len(index["episodes"]), "tasks": tasks}
