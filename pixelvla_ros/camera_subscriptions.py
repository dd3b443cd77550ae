"""The camera a node projects with: `camera/camera_info` and `camera/pose`, subscribed once for every node.

Topics (relative: a namespace moves them):
- `camera/camera_info` (sensor_msgs/CameraInfo, SENSOR QoS): the intrinsics and the image size;
- `camera/pose` (geometry_msgs/PoseStamped, LATCHED QoS): the optical frame's pose in the base frame.
`camera()` is their pixelvla_robots.camera.CameraModel, None until both have arrived.
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo

from pixelvla_ros import qos
from pixelvla_robots.camera import CameraModel, pose_arrays


class CameraSubscriptions:
    """Subscribes `node` to the camera pose and, unless `camera_info` is False, to the camera info (a node that
    reads the camera-rate info only at times subscribes with `subscribe_info()` then and destroys that subscription
    itself; the last info stays). `base_frame`: poses stamped in another frame are ignored with a warning (None:
    any frame is taken). `pose`: (position (3,) m, rotation (3, 3) optical frame -> base frame) used until
    `camera/pose` arrives."""

    def __init__(self, node: Node, *, camera_info: bool = True, base_frame: str | None = None,
                 pose: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.node = node
        self.base_frame = base_frame
        self.info: CameraInfo | None = None  # the newest
        self.pose = pose
        node.create_subscription(PoseStamped, "camera/pose", self.on_pose, qos.LATCHED)
        if camera_info:
            self.subscribe_info()

    def subscribe_info(self):
        """The subscription to `camera/camera_info` (a new one each call)."""
        return self.node.create_subscription(CameraInfo, "camera/camera_info", self.on_info, qos.SENSOR)

    def on_info(self, msg: CameraInfo) -> None:
        self.info = msg

    def on_pose(self, msg: PoseStamped) -> None:
        if self.base_frame is not None and msg.header.frame_id and msg.header.frame_id != self.base_frame:
            self.node.get_logger().warning(f"camera pose in {msg.header.frame_id!r}, expected {self.base_frame!r}: ignored")
            return
        self.pose = pose_arrays(msg.pose)

    def camera(self) -> CameraModel | None:
        """The camera of the newest info and pose; None until both have arrived."""
        if self.info is None or self.pose is None:
            return None
        return CameraModel.from_camera_info(self.info, *self.pose)
