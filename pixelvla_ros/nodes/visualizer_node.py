"""Visualizer node: what the policy sees and plans, for the operator's RViz.

- `/pixelvla/overlay` (rgb8): the camera image with the target mask tinted, the visual prompt drawn
  (points green, box/line outlined; the place prompt the same in blue) and the predicted end-effector path
  projected into the image (red);
- `/pixelvla/markers` (visualization_msgs/MarkerArray, base frame): the predicted TCP path of the
  newest chunk as a line strip with a sphere per action.
The path starts at the TCP of the latest `/joint_states` and applies the chunk's deltas in order.
The camera projection needs `/camera/camera_info` and `/camera/pose` (as the prompt node).
"""
from __future__ import annotations

import sys

import numpy as np
from geometry_msgs.msg import Point, PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import ImageError, image_to_mono, image_to_rgb, rgb_to_image
from pixelvla_ros.msg import ActionChunk, VisualPrompt
from pixelvla_ros.node_base import ParameterMixin, joint_positions, run_node
from pixelvla_ros.prompt_conversions import is_clear
from pixelvla_training.robots import wx250s
from pixelvla_training.sim.camera import CameraModel
from pixelvla_training.visualization import draw_box, draw_points, draw_polyline, predicted_tcp_path, tint_mask


class VisualizerNode(ParameterMixin, Node):
    def __init__(self) -> None:
        super().__init__("visualizer")
        self.base_frame = self.declare("base_frame", "wx250s/base_link", "frame of the markers and the camera pose")
        self.joint_names = list(self.declare("joint_names", list(wx250s.JOINT_NAMES), "arm joints, kinematics order"))
        self.joints: np.ndarray | None = None
        self.path: np.ndarray | None = None  # (N+1, 3) m, base frame
        self.mask: np.ndarray | None = None
        self.prompts: dict[str, VisualPrompt] = {}  # "target" / "place" -> the prompt in force
        self.info: CameraInfo | None = None
        self.camera_pose: tuple[np.ndarray, np.ndarray] | None = None
        self.overlay_pub = self.create_publisher(Image, "/pixelvla/overlay", qos.SENSOR)
        self.marker_pub = self.create_publisher(MarkerArray, "/pixelvla/markers", 10)
        self.create_subscription(Image, "/camera/image_raw", self.on_image, qos.SENSOR)
        self.create_subscription(CameraInfo, "/camera/camera_info", lambda m: setattr(self, "info", m), qos.SENSOR)
        self.create_subscription(PoseStamped, "/camera/pose", self.on_camera_pose, qos.LATCHED)
        self.create_subscription(JointState, "/joint_states", self.on_joint_state, qos.SENSOR)
        self.create_subscription(ActionChunk, "/pixelvla/action_chunk", self.on_chunk, qos.COMMAND)
        self.create_subscription(VisualPrompt, "/pixelvla/prompt", lambda m: self.on_prompt("target", m), qos.LATCHED)
        self.create_subscription(VisualPrompt, "/pixelvla/place_prompt", lambda m: self.on_prompt("place", m), qos.LATCHED)
        self.create_subscription(Image, "/pixelvla/mask", self.on_mask, qos.LATCHED)

    def on_camera_pose(self, msg: PoseStamped) -> None:
        p, o = msg.pose.position, msg.pose.orientation
        self.camera_pose = (np.array([p.x, p.y, p.z]), wx250s.quat_to_matrix(np.array([o.w, o.x, o.y, o.z])))

    def on_joint_state(self, msg: JointState) -> None:
        joints = joint_positions(msg, self.joint_names)
        if joints is not None:
            self.joints = joints
        elif set(self.joint_names) <= set(msg.name):  # (a message of other joints, e.g. the gripper's, is normal)
            self.get_logger().warning("ignoring /joint_states with NaN or inf arm joint positions",
                                      throttle_duration_sec=5.0)

    def on_chunk(self, msg: ActionChunk) -> None:
        if self.joints is None or msg.action_dim != 7 or len(msg.actions) != msg.horizon * 7:
            return
        actions = np.asarray(msg.actions, dtype=float).reshape(msg.horizon, 7)
        if not np.all(np.isfinite(actions)):
            return
        self.path = predicted_tcp_path(self.joints, actions)
        self.publish_markers(msg)

    def on_prompt(self, marks: str, msg: VisualPrompt) -> None:
        if is_clear(msg):
            self.prompts.pop(marks, None)
        else:
            self.prompts[marks] = msg

    def on_mask(self, msg: Image) -> None:
        try:
            mask = image_to_mono(msg) > 0
        except ImageError:
            return
        self.mask = mask if mask.any() else None

    def on_image(self, msg: Image) -> None:
        try:
            image = image_to_rgb(msg)
        except ImageError:
            return  # the policy node reports bad images
        if self.mask is not None and self.mask.shape == image.shape[:2]:
            image = tint_mask(image, self.mask)
        for marks, prompt in self.prompts.items():
            color = (60, 255, 60) if marks == "target" else (60, 140, 255)
            xy = np.array([(p.x, p.y) for p in prompt.points])
            if prompt.type == VisualPrompt.BOX and len(xy) == 2:
                draw_box(image, *xy[0], *xy[1], color=color)
            elif prompt.type == VisualPrompt.LINE:
                draw_polyline(image, xy, color=color)
            elif len(xy):
                draw_points(image, xy, color=color)
        camera = self.camera()
        if camera is not None and self.path is not None:
            uv, depth = camera.project(self.path)
            uv[depth <= 0] = np.nan
            draw_polyline(image, uv + 0.5, thickness=2)  # pixel centres -> corner origin
            draw_points(image, uv[1:] + 0.5, color=(255, 60, 60), radius=1)
        self.overlay_pub.publish(rgb_to_image(image, msg.header))

    def camera(self) -> CameraModel | None:
        if self.info is None or self.camera_pose is None:
            return None
        k = self.info.k
        return CameraModel("camera", self.info.width, self.info.height, k[0], k[4], k[2], k[5], *self.camera_pose)

    def publish_markers(self, chunk: ActionChunk) -> None:
        points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in self.path]
        line = Marker(ns="pixelvla_path", id=0, type=Marker.LINE_STRIP, action=Marker.ADD, points=points)
        line.scale.x = 0.004
        line.color = ColorRGBA(r=1.0, g=0.25, b=0.25, a=1.0)
        dots = Marker(ns="pixelvla_path", id=1, type=Marker.SPHERE_LIST, action=Marker.ADD, points=points[1:])
        dots.scale.x = dots.scale.y = dots.scale.z = 0.012
        dots.color = ColorRGBA(r=1.0, g=0.8, b=0.2, a=1.0)
        for marker in (line, dots):
            marker.header.frame_id = self.base_frame
            marker.header.stamp = chunk.header.stamp
            marker.pose.orientation.w = 1.0
        self.marker_pub.publish(MarkerArray(markers=[line, dots]))


def main(args=None) -> int:
    return run_node(VisualizerNode, args)


if __name__ == "__main__":
    sys.exit(main())
