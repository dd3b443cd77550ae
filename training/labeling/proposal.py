"""Stage 1: the gripper-closure frame and a region proposal around the gripper in it.

Pixel coordinates: x = column, y = row, origin at the top-left corner of the top-left pixel (the convention of
`pixelvla_model.prompts`); boxes are (x0, y0, x1, y1). `CameraModel.project` uses pixel centres at integers
(OpenCV), so its output is shifted by +0.5 here.

Closure frame: the last frame before the fingers start to close on the object, i.e. the first frame t whose
gripper *command* is "closed" while the command of t - 1 was "open" (Bridge convention: 1 = open, 0 =
closed), or, from the measured gripper *state* alone (normalised, 1 = open), the first frame t after which the
state drops (state[t] - state[t + 1] > `min_drop`) while it is still open (state[t] > threshold). In a
recorded episode the command of frame t shows up in the state of frame t + 1, so both give the same t. In that
frame the gripper surrounds the object and the object is still visible between the open fingers.

Region proposal: with kinematics and camera known, the TCP at closure, the two finger pads, the palm and the
corners of a cube of `radius` metres around the TCP are projected into the image; their box, united with the
box of the SAM 2 gripper mask when that mask is plausible (not empty, not huge, close to the projected
gripper), is expanded by `expand` about its centre. Without kinematics, a detector query for "gripper" gives
the box SAM 2 is prompted with. The geometry alone (no learned weights) already gives a usable proposal.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pixelvla_model import Box, Point
from pixelvla_robots import rotations, wx250s
from pixelvla_robots.camera import CameraModel, image_xy


# ------------------------------------------------------------------------------------------- closure
def find_closure(gripper_actions: np.ndarray | None = None, gripper_state: np.ndarray | None = None,
                 threshold: float = 0.5, min_drop: float = 0.05, min_closed: int = 1) -> int | None:
    """Frame index of the first gripper closure, or None. `gripper_actions` (T,) commands and/or
    `gripper_state` (T,) measured opening, both in [0, 1] with 1 = open; actions win when given.
    `min_closed`: frames the command must stay closed (filters one-frame blips)."""
    if gripper_actions is not None:
        g = np.asarray(gripper_actions, dtype=float).reshape(-1)
        closed = g <= threshold
        for t in range(1, len(g)):
            if closed[t] and not closed[t - 1] and closed[t:t + min_closed].all():
                return t
        return None
    if gripper_state is not None:
        s = np.asarray(gripper_state, dtype=float).reshape(-1)
        for t in range(len(s) - 1):
            if s[t] > threshold and s[t] - s[t + 1] > min_drop:
                return t
        return None
    raise ValueError("find_closure needs gripper_actions or gripper_state")


def finger_state(gripper_positions: np.ndarray) -> np.ndarray:
    """WX250s left-finger positions (T,) m -> normalised opening (T,) in [0, 1] (1 = open)."""
    return np.array([wx250s.finger_to_gripper(f) for f in np.asarray(gripper_positions, dtype=float).reshape(-1)])


# ------------------------------------------------------------------------------------------- geometry
def camera_from_arrays(intrinsics: np.ndarray, pose: np.ndarray, height: int, width: int) -> CameraModel:
    """CameraModel from (fx, fy, cx, cy) px and an optical-frame pose (x, y, z m, qw, qx, qy, qz) in the base frame."""
    fx, fy, cx, cy = (float(v) for v in np.asarray(intrinsics, dtype=float).reshape(4))
    pose = np.asarray(pose, dtype=float).reshape(7)
    return CameraModel("camera", int(width), int(height), fx, fy, cx, cy, pose[:3].copy(),
                       rotations.quat_to_matrix(pose[3:]))


def gripper_points(tcp_pose: np.ndarray, finger: float | None = None) -> dict[str, np.ndarray]:
    """3-D points (base frame, m) of the gripper for a TCP pose (x, y, z, qw, qx, qy, qz): "tcp", "left_pad",
    "right_pad" (TCP +- finger along the TCP y axis), "palm" (gripper_link origin, TCP_OFFSET behind the TCP)."""
    pose = np.asarray(tcp_pose, dtype=float).reshape(7)
    pos, rot = pose[:3], rotations.quat_to_matrix(pose[3:])
    finger = wx250s.FINGER_OPEN if finger is None or not np.isfinite(finger) else float(finger)
    return {
        "tcp": pos, "left_pad": pos + rot[:, 1] * finger, "right_pad": pos - rot[:, 1] * finger,
        "palm": pos - rot[:, 0] * wx250s.TCP_OFFSET * 0.5,
    }


def project_pixels(camera: CameraModel, points: np.ndarray) -> np.ndarray:
    """(N, 3) base-frame points -> (N, 2) pixels in the corner convention (NaN behind the camera)."""
    uv, _ = camera.project(np.asarray(points, dtype=float).reshape(-1, 3))
    return image_xy(uv)


def clip_box(box, height: int, width: int) -> tuple[float, float, float, float] | None:
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = np.clip([x0, x1], 0.0, width)
    y0, y1 = np.clip([y0, y1], 0.0, height)
    return (float(x0), float(y0), float(x1), float(y1)) if x1 > x0 and y1 > y0 else None


def expand_box(box, factor: float, margin: float = 0.0) -> tuple[float, float, float, float]:
    """Scale a box by `factor` about its centre and grow each side by `margin` px."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * factor + margin, (y1 - y0) / 2 * factor + margin
    return (cx - hw, cy - hh, cx + hw, cy + hh)


def union_box(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Tight box of a mask in the corner convention (x1 = max col + 1), None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def box_iou(a, b) -> float:
    if a is None or b is None:
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def box_mask_fraction(box, mask: np.ndarray) -> float:
    """Fraction of the pixels of `box` (rounded outwards) that are set in `mask`."""
    if box is None or mask is None:
        return 0.0
    c0, r0 = int(np.floor(box[0])), int(np.floor(box[1]))
    c1, r1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    sub = mask[max(0, r0):max(0, r1), max(0, c0):max(0, c1)]
    return float(sub.mean()) if sub.size else 0.0


# ------------------------------------------------------------------------------------------- proposal
@dataclass
class ProposalSettings:
    """radius: half size (m) of the cube around the TCP that the proposal covers; expand: scale factor of the
    final box; margin: px added to each side; max_gripper_frac: a gripper mask larger than this fraction of
    the image is implausible (ignored); max_mask_distance: ... farther (px, from the projected gripper box)."""

    radius: float = 0.04
    expand: float = 1.2
    margin: float = 2.0
    max_gripper_frac: float = 0.25
    max_mask_distance: float = 8.0
    gripper_query: str = "gripper"
    gripper_box_threshold: float = 0.1


@dataclass
class Proposal:
    """Region proposal of one closure frame: box (x0, y0, x1, y1) px; how it was made."""

    box: tuple[float, float, float, float]
    frame: int
    method: str                                   # "geometry", "geometry+mask", "detector+mask", "detector"
    gripper_mask: np.ndarray | None = None        # (H, W) bool, SAM 2's gripper mask if one was used
    tcp_pixel: tuple[float, float] | None = None  # projected TCP (corner convention)
    details: dict = field(default_factory=dict)


def geometry_box(camera: CameraModel, tcp_pose: np.ndarray, finger: float | None, radius: float) -> tuple | None:
    """Box (px) of the projected gripper points and of a cube of `radius` m around the TCP; None if off-screen."""
    pts = gripper_points(tcp_pose, finger)
    offsets = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * radius
    cloud = np.concatenate([np.stack(list(pts.values())), pts["tcp"] + offsets])
    uv = project_pixels(camera, cloud)
    if not np.all(np.isfinite(uv)):
        return None
    return clip_box((uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()), camera.height, camera.width)


def propose_region(image: np.ndarray, frame: int, *, camera: CameraModel | None = None,
                   tcp_pose: np.ndarray | None = None, finger: float | None = None, segmenter=None, detector=None,
                   settings: ProposalSettings | None = None) -> Proposal | None:
    """The region proposal for `image` (the closure frame). Kinematic path when `camera` and `tcp_pose` are
    given (SAM 2 gripper mask from finger / palm points when `segmenter` is given); else the detector path
    (needs `detector` and `segmenter`). None when neither path gives a box."""
    s = settings or ProposalSettings()
    h, w = image.shape[:2]
    if camera is not None and tcp_pose is not None:
        geo = geometry_box(camera, tcp_pose, finger, s.radius)
        if geo is None:
            return None
        pts = gripper_points(tcp_pose, finger)
        uv = project_pixels(camera, np.stack([pts["tcp"], pts["left_pad"], pts["right_pad"], pts["palm"]]))
        tcp_px = (float(uv[0, 0]), float(uv[0, 1]))
        box, method, gmask = geo, "geometry", None
        if segmenter is not None:
            clicks = [Point(float(np.clip(x, 0, w)), float(np.clip(y, 0, h))) for x, y in uv[1:]]
            gmask = segmenter.segment(image, clicks)
            mbox = mask_box(gmask)
            near = mbox is not None and box_iou(expand_box(mbox, 1.0, s.max_mask_distance), geo) > 0
            if mbox is not None and gmask.mean() <= s.max_gripper_frac and near:
                box, method = union_box(geo, mbox), "geometry+mask"
        final = clip_box(expand_box(box, s.expand, s.margin), h, w)
        return Proposal(final, frame, method, gmask, tcp_px, {"geometry_box": geo})
    if detector is None or segmenter is None:
        return None
    dets = [d for d in detector.detect(image, s.gripper_query) if d.score >= s.gripper_box_threshold]
    if not dets:
        return None
    gbox = dets[0].box
    gmask = segmenter.segment(image, [Box(*gbox)])
    mbox = mask_box(gmask)
    usable = mbox is not None and gmask.mean() <= s.max_gripper_frac
    box = union_box(gbox, mbox) if usable else gbox
    final = clip_box(expand_box(box, s.expand * 1.25, s.margin), h, w)
    return Proposal(final, frame, "detector+mask" if usable else "detector", gmask, None,
                    {"gripper_box": gbox, "gripper_score": dets[0].score})


__all__ = ["find_closure", "finger_state", "camera_from_arrays", "gripper_points", "project_pixels", "propose_region",
           "geometry_box", "Proposal", "ProposalSettings", "mask_box", "box_iou", "expand_box", "clip_box", "union_box",
           "box_mask_fraction"]
