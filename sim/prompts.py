"""Visual prompts from masks, and an operator stand-in that "clicks" the target like a person in RViz.

Pixel coordinates: (u, v) = (column, row), pixel centres at integers (see camera.py). Boxes:
(u_min, v_min, u_max, v_max) in pixels, inclusive of the mask's extreme pixel centres. An empty mask gives
NaN points/boxes (the policy's "no mask" path), never an exception.
"""
from __future__ import annotations

import numpy as np

from pixelvla_sim.tasks import TOP_Z


def mask_point(mask: np.ndarray) -> np.ndarray:
    """(2,) float (u, v): the mask pixel nearest to the mask's centroid (so it lies on the object even for a
    ring-shaped mask such as a bowl's); NaN for an empty mask."""
    rows, cols = np.nonzero(np.asarray(mask, dtype=bool))
    if rows.size == 0:
        return np.full(2, np.nan)
    cu, cv = cols.mean(), rows.mean()
    k = int(np.argmin((cols - cu) ** 2 + (rows - cv) ** 2))
    return np.array([float(cols[k]), float(rows[k])])


def mask_centroid(mask: np.ndarray) -> np.ndarray:
    """(2,) float (u, v) mean of the mask's pixel centres; NaN for an empty mask."""
    rows, cols = np.nonzero(np.asarray(mask, dtype=bool))
    if rows.size == 0:
        return np.full(2, np.nan)
    return np.array([cols.mean(), rows.mean()])


def mask_box(mask: np.ndarray) -> np.ndarray:
    """(4,) float (u_min, v_min, u_max, v_max) bounding box of the mask; NaN for an empty mask."""
    rows, cols = np.nonzero(np.asarray(mask, dtype=bool))
    if rows.size == 0:
        return np.full(4, np.nan)
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=float)


def click_pixel(obs: dict, object_id: str | None = None) -> np.ndarray:
    """Operator stand-in: the pixel (u, v) a person would click on `object_id` (default: the episode's target)
    in the observation's image: the mask point of :func:`mask_point`. Needs an observation with masks."""
    if obs.get("masks") is None:
        raise ValueError("the observation has no masks: create the env with masks=True")
    object_id = object_id or obs["target_object"]
    if object_id not in obs["masks"]:
        raise ValueError(f"object {object_id!r} is not on the table; objects: {sorted(obs['masks'])}")
    return mask_point(obs["masks"][object_id])


def segment_box(obs: dict, box) -> str | None:
    """Segmenter stand-in (SAM 2 given a box prompt): the object with the most pixels inside `box` (x0, y0, x1,
    y1 attributes: image coordinates, corner origin, as pixelvla_model.Box) in the observation's masks; None
    when the box covers no object's pixel."""
    if obs.get("masks") is None:
        raise ValueError("the observation has no masks: create the env with masks=True")
    cols = slice(max(int(np.floor(box.x0)), 0), max(int(np.ceil(box.x1)), 0))
    rows = slice(max(int(np.floor(box.y0)), 0), max(int(np.ceil(box.y1)), 0))
    inside = {name: int(mask[rows, cols].sum()) for name, mask in obs["masks"].items()}
    best = max(inside, key=inside.get, default=None)
    return best if best is not None and inside[best] > 0 else None


def click_point(obs: dict, object_id: str | None = None) -> np.ndarray:
    """Operator stand-in for RViz's Publish Point tool: (3,) point in the world/base frame (m) on the top
    surface of `object_id` (default: the episode's target), above its centre, from the privileged pose."""
    object_id = object_id or obs["target_object"]
    if object_id not in obs["object_poses"]:
        raise ValueError(f"object {object_id!r} is not on the table; objects: {sorted(obs['object_poses'])}")
    pos = np.asarray(obs["object_poses"][object_id][:3], dtype=float).copy()
    pos[2] += TOP_Z[object_id]
    return pos
