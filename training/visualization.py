"""Drawing what the policy sees and plans, in plain numpy (no OpenCV): masks, prompts, the predicted path,
and the camera image laid onto the table plane for RViz.

Images are (H, W, 3) uint8 RGB; pixel coordinates (x, y) have their origin at the top-left pixel's
corner (pixel (col, row) covers [col, col+1) x [row, row+1)), like VisualPrompt. A CameraModel's (u, v)
has its origin at the top-left pixel's centre: x = u + 0.5, y = v + 0.5.
"""
from __future__ import annotations

import math

import numpy as np

from pixelvla_robots import wx250s
from pixelvla_robots.camera import image_xy, pixel_uv
from pixelvla_robots.rotations import apply_ee_delta

# RGB colours of the overlays, shared by the visualizer's image and the operator console's page.
TARGET_COLOR = (60, 255, 60)    # the target prompt
PLACE_COLOR = (60, 140, 255)    # the place prompt
PATH_COLOR = (255, 60, 60)      # the predicted TCP path
MASK_COLOR = (0, 200, 255)      # the target mask (blended)


def predicted_tcp_path(joints: np.ndarray, actions: np.ndarray, fk=wx250s.fk) -> np.ndarray:
    """TCP positions (N+1, 3) m in the base frame: now, then after each of the chunk's (N, 7) deltas.

    `fk`: the arm's forward kinematics, joints -> (position (3,) m, rotation (3, 3)) (a Robot's `fk`)."""
    pos, rot = fk(joints)
    path = [pos]
    for action in np.asarray(actions, dtype=float):
        pos, rot = apply_ee_delta(pos, rot, action[:3], action[3:6])
        path.append(pos)
    return np.stack(path)


def path_in_image(camera, path: np.ndarray) -> np.ndarray:
    """(N, 2) pixel coordinates (x, y), corner origin, of the (N, 3) base-frame points `path` seen by `camera` (a
    CameraModel); NaN for points behind the camera (draw_polyline breaks the line there)."""
    uv, depth = camera.project(path)
    uv[depth <= 0] = np.nan
    return image_xy(uv)


def draw_path(image: np.ndarray, path_xy) -> None:
    """The predicted TCP path (N, 2) pixels, corner origin, in place: a line from the TCP now, a dot per action."""
    draw_polyline(image, path_xy, color=PATH_COLOR, thickness=2)
    draw_points(image, np.asarray(path_xy, dtype=float).reshape(-1, 2)[1:], color=PATH_COLOR, radius=1)


def tint_mask(image: np.ndarray, mask: np.ndarray, color=MASK_COLOR, alpha: float = 0.45) -> np.ndarray:
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


def table_mesh(camera, image: np.ndarray, height: float = 0.0, cells: tuple[int, int] = (64, 48),
               max_range: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """The camera image laid onto the table plane z = `height` (m, base frame) as triangles, for RViz.

    The image is cut into `cells` (columns, rows) cells along whole pixels; the corners of each cell are
    back-projected along their pixel rays onto the plane, and the cell's two triangles take the mean colour of
    its pixels. A projective map keeps straight lines straight, so every point of a cell's triangles projects
    back into that cell: what a viewer sees on the plane at a point is what the camera saw at the pixel the
    point projects to (RViz's "Publish Point" then gives a point the prompt node projects onto that pixel).
    Cells with a corner whose ray misses the plane (at or above the horizon) or meets it farther than
    `max_range` m from the camera are left out.

    camera: a CameraModel (position, rotation in the base frame); image: (H, W, 3) uint8 of that camera.
    Returns (vertices (3T, 3) m in the base frame, colours (3T, 3) in [0, 1]), T triangles, three
    vertices each: (top-left, bottom-left, bottom-right) and (top-left, bottom-right, top-right) per cell.
    """
    h, w = image.shape[:2]
    nx, ny = min(int(cells[0]), w), min(int(cells[1]), h)
    xs = (np.arange(nx + 1) * w) // nx  # cell borders in whole pixels (corner origin), strictly increasing
    ys = (np.arange(ny + 1) * h) // ny
    gx, gy = np.meshgrid(xs.astype(float), ys.astype(float))  # (ny + 1, nx + 1) corners
    # Ray directions of the corners (not unit length): optical frame -> base frame.
    gu, gv = pixel_uv(gx), pixel_uv(gy)  # the camera model's pixel-centre origin
    rays = np.stack([(gu - camera.cx) / camera.fx, (gv - camera.cy) / camera.fy, np.ones_like(gx)], -1)
    rays = rays @ np.asarray(camera.rotation, float).T
    origin = np.asarray(camera.position, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (height - origin[2]) / rays[..., 2]
    corners = origin + t[..., None] * rays
    corners[..., 2] = height  # exactly on the plane
    hit = np.isfinite(t) & (t > 0) & (np.linalg.norm(corners - origin, axis=-1) <= max_range)
    keep = hit[:-1, :-1] & hit[1:, :-1] & hit[1:, 1:] & hit[:-1, 1:]  # (ny, nx) cells
    tl, bl, br, tr = corners[:-1, :-1], corners[1:, :-1], corners[1:, 1:], corners[:-1, 1:]
    triangles = np.stack([tl, bl, br, tl, br, tr], axis=2)[keep]  # (kept cells, 6, 3)
    sums = np.add.reduceat(np.add.reduceat(image[..., :3].astype(np.float64), ys[:-1], axis=0), xs[:-1], axis=1)
    means = sums / np.outer(np.diff(ys), np.diff(xs))[..., None] / 255.0  # (ny, nx, 3)
    colors = np.repeat(means[keep][:, None, :], 6, axis=1)
    return triangles.reshape(-1, 3), colors.reshape(-1, 3)
