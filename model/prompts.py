"""Visual prompts: dataclasses, validation, and batching into the network's fixed-shape tensors.

Coordinates are pixel coordinates of the *input* image (before any resize): x to the right, y down,
continuous, with the image covering ``[0, W] x [0, H]`` (pixel (col, row) spans [col, col+1)). They are
normalised to ``[0, 1]`` by dividing by (W, H), which makes them independent of the resize to 224 px.

Batched layout (K = ``config.max_prompts`` slots, P = ``config.max_prompt_points``, S =
``config.prompt_mask_size``), all produced by :func:`batch_prompts`:

- ``prompt_coords``      (B, K, P, 2) float32, (x, y) normalised to [0, 1]; zero where unused
- ``prompt_point_mask``  (B, K, P)    float32, 1 for a used point slot
- ``prompt_types``       (B, K)       int64, :data:`PROMPT_TYPE_IDS` (0 = empty slot)
- ``prompt_labels``      (B, K)       int64, 1 foreground / 0 background / 2 place (models with
                                       ``config.place_prompts`` only)
- ``prompt_masks``       (B, K, S, S) float32 in [0, 1], area-downscaled mask prompts; zero otherwise

Per type: a point fills slot 0; a box fills slots 0 (x0, y0) and 1 (x1, y1); a line (polyline) fills
slots 0..n-1 with its vertices, resampled uniformly by arc length to P points when it has more; a mask
fills no point slot and enters downscaled to (S, S) (our choice for masks: a downscaled embedding, as
SAM's dense mask input, pooled to one token by the network).

torch is imported only by the functions that build tensors, so the prompt types and their validation
load without it (ROS nodes that only convert prompts start fast).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np

from .configuration import PROMPT_TYPE_IDS, PixelVLAConfig

if TYPE_CHECKING:
    import torch

FOREGROUND, BACKGROUND = 1, 0
#: Label of a prompt that marks where the target is to be put (a plate, a bowl, a spot), not the target.
PLACE = 2
LABEL_NAMES = {BACKGROUND: "background", FOREGROUND: "foreground", PLACE: "place"}


@dataclass
class Point:
    """A click at pixel (x, y); label 1 = foreground (the target), 0 = background (not this), 2 = place
    (put the target here)."""

    x: float
    y: float
    label: int = FOREGROUND


@dataclass
class Line:
    """A polyline through >= 2 pixel points [(x, y), ...], e.g. a path or a direction to move."""

    points: Sequence[Sequence[float]]
    label: int = FOREGROUND


@dataclass
class Box:
    """An axis-aligned box, pixel corners (x0, y0) top-left and (x1, y1) bottom-right, x0 < x1, y0 < y1."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: int = FOREGROUND


@dataclass
class Mask:
    """A binary (H, W) mask of the input image (bool or 0/1 numbers), not empty."""

    mask: np.ndarray
    label: int = FOREGROUND


Prompt = Union[Point, Line, Box, Mask]


def prompt_anchor(p: Prompt) -> tuple[float, float]:
    """The one pixel (x, y) a prompt stands for: a point itself, a line's vertex mean, a box's centre, a mask's
    centroid (pixel centres at +0.5). Image coordinates, as the prompt's."""
    if isinstance(p, Point):
        return float(p.x), float(p.y)
    if isinstance(p, Line):
        x, y = np.asarray(p.points, dtype=np.float64).mean(0)
        return float(x), float(y)
    if isinstance(p, Box):
        return 0.5 * (p.x0 + p.x1), 0.5 * (p.y0 + p.y1)
    rows, cols = np.nonzero(np.asarray(p.mask, dtype=bool))
    return float(cols.mean() + 0.5), float(rows.mean() + 0.5)


#: The rows of the prompts' offsets from the TCP (modeling.place_prompts): the target, then the place.
OFFSET_LABELS = (FOREGROUND, PLACE)


def _check_label(p: Prompt, where: str) -> None:
    if p.label not in LABEL_NAMES:
        raise ValueError(f"{where}: label must be 1 (foreground), 0 (background) or 2 (place), got {p.label!r}")


def _check_xy(x: float, y: float, width: int, height: int, where: str) -> None:
    if not (math.isfinite(float(x)) and math.isfinite(float(y))):
        raise ValueError(f"{where}: coordinate ({x}, {y}) is not finite (NaN or inf)")
    if not (0.0 <= x <= width and 0.0 <= y <= height):
        raise ValueError(f"{where}: ({x}, {y}) lies outside the {width}x{height} image "
                         f"(x must be in [0, {width}], y in [0, {height}])")


def validate_prompt(p: Prompt, image_hw: tuple[int, int], index: int = 0) -> None:
    """Raise ValueError saying which prompt (index, type) is invalid and why."""
    h, w = int(image_hw[0]), int(image_hw[1])
    where = f"prompt {index} ({type(p).__name__})"
    if isinstance(p, Point):
        _check_xy(p.x, p.y, w, h, where)
    elif isinstance(p, Line):
        pts = np.asarray(p.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"{where}: points must be a list of (x, y) pairs, got shape {pts.shape}")
        if len(pts) < 2:
            raise ValueError(f"{where}: a line needs at least 2 points, got {len(pts)}")
        for j, (x, y) in enumerate(pts):
            _check_xy(x, y, w, h, f"{where} point {j}")
        if np.all(np.linalg.norm(np.diff(pts, axis=0), axis=1) == 0):
            raise ValueError(f"{where}: degenerate line (all points are the same)")
    elif isinstance(p, Box):
        _check_xy(p.x0, p.y0, w, h, f"{where} corner (x0, y0)")
        _check_xy(p.x1, p.y1, w, h, f"{where} corner (x1, y1)")
        if not (p.x1 > p.x0 and p.y1 > p.y0):
            raise ValueError(f"{where}: degenerate box ({p.x0}, {p.y0}, {p.x1}, {p.y1}); need x0 < x1 and y0 < y1")
    elif isinstance(p, Mask):
        m = np.asarray(p.mask)
        if m.shape != (h, w):
            raise ValueError(f"{where}: mask shape {m.shape} differs from the image's (H, W) = {(h, w)}")
        if m.dtype != bool:
            if not np.issubdtype(m.dtype, np.number):
                raise ValueError(f"{where}: mask must be bool or numeric, got dtype {m.dtype}")
            if np.isnan(m.astype(np.float64)).any():
                raise ValueError(f"{where}: mask contains NaN")
        if not np.any(m):
            raise ValueError(f"{where}: empty mask (no pixel set)")
    else:
        raise ValueError(f"{where}: unknown prompt type; use Point, Line, Box or Mask")
    _check_label(p, where)


def _resample_polyline(pts: np.ndarray, n: int) -> np.ndarray:
    """n points spaced uniformly by arc length along the polyline (keeps both ends)."""
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])], axis=1)


def downscale_mask(mask: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(H, W) binary mask -> (size, size) float32 occupancy fraction per cell (area averaging)."""
    import torch
    import torch.nn.functional as F

    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool2d(m, (size, size))[0, 0]


def empty_prompt_tensors(config: PixelVLAConfig, batch_size: int) -> dict[str, torch.Tensor]:
    """The 'no prompts' tensors (all slots empty), shapes as in the module doc."""
    import torch

    b, k, p, s = batch_size, config.max_prompts, config.max_prompt_points, config.prompt_mask_size
    return {
        "prompt_coords": torch.zeros(b, k, p, 2),
        "prompt_point_mask": torch.zeros(b, k, p),
        "prompt_types": torch.zeros(b, k, dtype=torch.long),
        "prompt_labels": torch.zeros(b, k, dtype=torch.long),
        "prompt_masks": torch.zeros(b, k, s, s),
    }


def batch_prompts(
    prompts: Sequence[Sequence[Prompt] | None],
    image_hw: Sequence[tuple[int, int]] | tuple[int, int],
    config: PixelVLAConfig,
) -> dict[str, torch.Tensor]:
    """Validate and pack per-sample prompt lists into the fixed-shape tensors (module doc).

    prompts: one list (or None) per sample. image_hw: (H, W) of each sample's input image, or one
    (H, W) for all. Raises ValueError for an invalid prompt or more than ``max_prompts`` per sample.
    """
    import torch

    b = len(prompts)
    if len(image_hw) == 2 and isinstance(image_hw[0], (int, np.integer)):
        image_hw = [tuple(image_hw)] * b  # type: ignore[list-item]
    if len(image_hw) != b:
        raise ValueError(f"got {b} prompt lists but {len(image_hw)} image sizes")
    out = empty_prompt_tensors(config, b)
    coords, pmask = out["prompt_coords"], out["prompt_point_mask"]
    P, S = config.max_prompt_points, config.prompt_mask_size
    for i, (plist, (h, w)) in enumerate(zip(prompts, image_hw)):
        plist = list(plist or [])
        if len(plist) > config.max_prompts:
            raise ValueError(f"sample {i}: {len(plist)} prompts, at most max_prompts={config.max_prompts}")
        for k, p in enumerate(plist):
            validate_prompt(p, (h, w), index=k)
            if p.label == PLACE and not config.place_prompts:
                raise ValueError(f"sample {i} prompt {k} ({type(p).__name__}): a place prompt (label 2), but this "
                                 "model was not trained with place prompts (config.place_prompts is false)")
            scale = np.array([w, h], dtype=np.float64)
            if isinstance(p, Point):
                pts = np.array([[p.x, p.y]], dtype=np.float64)
            elif isinstance(p, Box):
                pts = np.array([[p.x0, p.y0], [p.x1, p.y1]], dtype=np.float64)
            elif isinstance(p, Line):
                pts = np.asarray(p.points, dtype=np.float64)
                if len(pts) > P:
                    pts = _resample_polyline(pts, P)
            else:  # Mask
                pts = np.zeros((0, 2))
                out["prompt_masks"][i, k] = downscale_mask(np.asarray(p.mask).astype(bool), S)
            n = len(pts)
            coords[i, k, :n] = torch.from_numpy((pts / scale).astype(np.float32))
            pmask[i, k, :n] = 1.0
            out["prompt_types"][i, k] = PROMPT_TYPE_IDS[type(p).__name__.lower()]
            out["prompt_labels"][i, k] = int(p.label)
    return out
