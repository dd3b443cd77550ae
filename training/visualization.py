"""Drawing what the policy sees and plans, in plain numpy (no OpenCV): masks, prompts, the predicted path.

Images are (H, W, 3) uint8 RGB; pixel coordinates (x, y) have their origin at the top-left pixel's
corner (pixel (col, row) covers [col, col+1) x [row, row+1)), like VisualPrompt.
"""
from __future__ import annotations

import math

import numpy as np

from pixelvla_training.robots import wx250s


def predicted_tcp_path(joints: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """TCP positions (N+1, 3) m in the base frame: now, then after each of the chunk's (N, 7) deltas."""
    pos, rot = wx250s.fk(joints)
    path = [pos]
    for action in np.asarray(actions, dtype=float):
        pos, rot = wx250s.apply_ee_delta(pos, rot, action[:3], action[3:6])
        path.append(pos)
    return np.stack(path)


def tint_mask(image: np.ndarray, mask: np.ndarray, color=(0, 200, 255), alpha: float = 0.45) -> np.ndarray:
    """`image` with the (H, W) bool `mask` blended in `color`."""
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    return out.astype(np.uint8)


def clip_segment(x0: float, y0: float, x1: float, y1: float, x_min: float, y_min: float, x_max: float,
                 y_max: float) -> tuple[float, float, float, float] | None:
    """The part of the segment (x0, y0)-(x1, y1) inside the box [x_min, x_max] x [y_min, y_max], or None
    (Liang-Barsky). Drawing only that part keeps the cost bounded by the image, whatever the coordinates."""
    x0, y0, x1, y1 = float(x0), float(y0), float(x1), float(y1)
    dx, dy = x1 - x0, y1 - y0
    if not (math.isfinite(dx) and math.isfinite(dy)):
        return None  # non-finite ends, or ends so far apart that their distance overflows
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, x0 - x_min), (dx, x_max - x0), (-dy, y0 - y_min), (dy, y_max - y0)):
        if p == 0:
            if q < 0:
                return None  # parallel to this edge and outside it
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return None
    return x0 + t0 * dx, y0 + t0 * dy, x0 + t1 * dx, y0 + t1 * dy


def draw_polyline(image: np.ndarray, points_xy, color=(255, 60, 60), thickness: int = 1) -> None:
    """Draw segments through (N, 2) points in place; parts outside the image are skipped, non-finite
    points break the line."""
    pts = np.asarray(points_xy, dtype=float).reshape(-1, 2)
    h, w = image.shape[:2]
    half = thickness // 2
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        # a pixel margin beyond the border so that a thick line's edge is still drawn
        clipped = clip_segment(x0, y0, x1, y1, -half - 1.0, -half - 1.0, w + half + 1.0, h + half + 1.0)
        if clipped is None:
            continue
        x0, y0, x1, y1 = clipped
        n = int(max(abs(x1 - x0), abs(y1 - y0))) + 2
        xs = np.linspace(x0, x1, n)
        ys = np.linspace(y0, y1, n)
        for dx in range(-half, half + 1):
            for dy in range(-half, half + 1):
                cols = np.floor(xs).astype(int) + dx
                rows = np.floor(ys).astype(int) + dy
                ok = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
                image[rows[ok], cols[ok]] = color


def draw_points(image: np.ndarray, points_xy, color=(60, 255, 60), radius: int = 3) -> None:
    """Filled squares of side 2 * radius + 1 at (N, 2) points, in place; only their part inside the image
    is touched (a slice), so far-off coordinates cost nothing."""
    h, w = image.shape[:2]
    for x, y in np.asarray(points_xy, dtype=float).reshape(-1, 2):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        c, r = int(np.floor(x)), int(np.floor(y))
        image[max(r - radius, 0):min(r + radius + 1, h), max(c - radius, 0):min(c + radius + 1, w)] = color


def draw_box(image: np.ndarray, x0: float, y0: float, x1: float, y1: float, color=(60, 255, 60)) -> None:
    draw_polyline(image, [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)], color)
