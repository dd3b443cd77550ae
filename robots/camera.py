"""Pinhole camera model of a rendered MuJoCo camera: intrinsics for CameraInfo, pose for a static transform.

Frames and conventions:
- Pixel coordinates ``(u, v)``: u to the right, v down, pixel centres at integers, (0, 0) = centre of the
  top-left pixel (OpenCV / ROS CameraInfo convention). Images are ``(H, W, 3)`` arrays, row = v.
- Optical frame (ROS ``*_optical_frame``): z forward along the viewing direction, x right, y down.
  MuJoCo's own camera frame looks along -z with y up; ``rotation`` here is already the optical frame.
- ``position`` (3,) m and ``rotation`` (3, 3) map optical-frame points into the world frame, which is the
  robot base frame (``base_link``) in this simulator: ``p_world = rotation @ p_cam + position``.
- MuJoCo renders an ideal pinhole (no distortion) with square pixels: ``fy = (H / 2) / tan(fovy / 2)``,
  ``fx = fy``, ``cx = (W - 1) / 2``, ``cy = (H - 1) / 2``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixelvla_robots.rotations import matrix_to_quat, quat_to_matrix


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics + extrinsics of one camera at one render size (all floats, metres, pixels)."""

    name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    position: np.ndarray   # (3,) m, optical centre in the world/base frame
    rotation: np.ndarray   # (3, 3) optical frame -> world frame

    @classmethod
    def from_camera_info(cls, info, position: np.ndarray, rotation: np.ndarray, name: str = "camera") -> "CameraModel":
        """From a sensor_msgs/CameraInfo (width, height, k) and the optical frame's pose in the base frame."""
        k = info.k
        return cls(name, int(info.width), int(info.height), float(k[0]), float(k[4]), float(k[2]), float(k[5]),
                   np.asarray(position, float), np.asarray(rotation, float))

    @property
    def K(self) -> np.ndarray:
        """(3, 3) intrinsic matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (CameraInfo.k, row-major)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def P(self) -> np.ndarray:
        """(3, 4) projection matrix [K | 0] (CameraInfo.p for a monocular camera)."""
        return np.hstack([self.K, np.zeros((3, 1))])

    @property
    def quaternion_xyzw(self) -> np.ndarray:
        """(4,) orientation of the optical frame in the world frame, ROS order (x, y, z, w)."""
        w, x, y, z = matrix_to_quat(self.rotation)
        return np.array([x, y, z, w])

    def camera_info(self) -> dict:
        """Fields of a sensor_msgs/CameraInfo: width, height, distortion_model, d, k, r, p (flat lists)."""
        return {
            "width": self.width, "height": self.height, "distortion_model": "plumb_bob",
            "d": [0.0] * 5, "k": self.K.ravel().tolist(), "r": np.eye(3).ravel().tolist(),
            "p": self.P.ravel().tolist(),
        }

    def world_to_camera(self, points) -> np.ndarray:
        """(N, 3) world points -> (N, 3) points in the optical frame (m)."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        return (points - self.position) @ self.rotation

    def project(self, points) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) world points -> ((N, 2) pixels (u, v), (N,) depth along the optical axis, m).

        Points behind the camera (depth <= 0) get NaN pixels.
        """
        cam = self.world_to_camera(points)
        depth = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * cam[:, 0] / depth + self.cx
            v = self.fy * cam[:, 1] / depth + self.cy
        uv = np.stack([u, v], axis=1)
        uv[depth <= 0] = np.nan
        return uv, depth

    def pixel_ray(self, u: float, v: float) -> tuple[np.ndarray, np.ndarray]:
        """Ray through pixel (u, v): (origin (3,), unit direction (3,)) in the world frame."""
        direction = self.rotation @ np.array([(u - self.cx) / self.fx, (v - self.cy) / self.fy, 1.0])
        return self.position.copy(), direction / np.linalg.norm(direction)

    def point_at_height(self, u: float, v: float, z: float) -> np.ndarray:
        """(3,) world point where the ray through pixel (u, v) meets the horizontal plane at height z (m); NaN
        where the ray runs parallel to it or meets it behind the camera."""
        origin, direction = self.pixel_ray(u, v)
        if abs(direction[2]) < 1e-9 or (z - origin[2]) / direction[2] <= 0:
            return np.full(3, np.nan)
        return origin + (z - origin[2]) / direction[2] * direction

    def resized(self, width: int, height: int) -> "CameraModel":
        """The same camera rendering (width, height) pixels (the image resized, the view unchanged)."""
        sx, sy = width / self.width, height / self.height
        return CameraModel(self.name, int(width), int(height), self.fx * sx, self.fy * sy,
                           (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, self.position, self.rotation)


def plane_click_map(camera: CameraModel, z: float, origin) -> np.ndarray:
    """(4, 3) float32 projective map M of a click to where it lies from `origin` (3,) (the TCP, m) on the
    horizontal plane at height z (m): M @ [x, y, 1] = w * [dx, dy, dz, 1] for x, y in [0, 1] of the image (a
    corner-origin pixel's coordinates over the image's width and height, as the model's prompts take them,
    so the map does not depend on the size the image is rendered or resized to). w > 0 where the click's ray
    meets the plane in front of the camera; the model's input click_to_tcp (modeling.place_prompts).
    All zeros when the camera sits in the plane and no click can be placed."""
    # The ray through [x, y, 1]: d = R K^-1 A [x, y, 1], A taking it to the (u, v) pixel centre. It meets the
    # plane at o + t d, t = (z - o_z) / d_z; times d_z: (o - origin) d_z + (z - o_z) d, with w = d_z.
    to_uv = np.array([[camera.width, 0.0, -PIXEL_CENTRE], [0.0, camera.height, -PIXEL_CENTRE], [0.0, 0.0, 1.0]])
    ray = camera.rotation @ np.linalg.inv(camera.K) @ to_uv  # (3, 3): [x, y, 1] -> direction d
    height = z - camera.position[2]
    if height == 0.0:
        return np.zeros((4, 3), np.float32)
    up = np.array([0.0, 0.0, 1.0])
    offset = np.outer(camera.position - np.asarray(origin, float), up @ ray) + height * ray
    # t > 0 needs d_z of the sign of (z - o_z): scaled by that sign, w > 0 exactly where the ray meets the plane.
    return (np.sign(height) * np.vstack([offset, up @ ray])).astype(np.float32)


def intrinsics(width: int, height: int, fovy_deg: float) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels of a MuJoCo camera with vertical field of view `fovy_deg` degrees."""
    fy = (height / 2.0) / np.tan(np.deg2rad(fovy_deg) / 2.0)
    return float(fy), float(fy), (width - 1) / 2.0, (height - 1) / 2.0


# MuJoCo camera frame (x right, y up, looking along -z) -> optical frame (x right, y down, z forward).
MUJOCO_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


PIXEL_CENTRE = 0.5  # where a pixel's centre lies in image coordinates whose origin is its corner


def image_xy(uv) -> np.ndarray:
    """Pixel-centre coordinates (pixel indices (col, row), or a CameraModel's (u, v), origin at the top-left
    pixel's centre) -> image coordinates (x, y) with the origin at the top-left pixel's corner, the convention of
    VisualPrompt and of the drawings: pixel (col, row) covers [col, col + 1) x [row, row + 1) and its centre is
    (col + 0.5, row + 0.5). `uv`: (2,) or (..., 2)."""
    return np.asarray(uv, dtype=float) + PIXEL_CENTRE


def pixel_uv(xy) -> np.ndarray:
    """The inverse of image_xy: corner-origin image coordinates -> pixel-centre coordinates."""
    return np.asarray(xy, dtype=float) - PIXEL_CENTRE


def pose_arrays(pose) -> tuple[np.ndarray, np.ndarray]:
    """A geometry_msgs/Pose (or anything shaped like it: position.x/y/z, orientation.x/y/z/w) -> (position (3,)
    m, rotation (3, 3): the pose's frame -> its parent frame), the form CameraModel takes."""
    p, o = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z], float), quat_to_matrix(np.array([o.w, o.x, o.y, o.z], float))
