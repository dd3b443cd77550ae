"""Visualizer node: what the policy sees and plans, for the operator's RViz.

- `/pixelvla/overlay` (rgb8): the camera image with the target mask tinted, the visual prompt drawn
  (points green, box/line outlined; the place prompt the same in blue) and the predicted end-effector path
  projected into the image (red);
- `/pixelvla/markers` (visualization_msgs/MarkerArray, base frame): the predicted TCP path of the
  newest chunk as a line strip with a sphere per action;
- `/pixelvla/table` (visualization_msgs/Marker TRIANGLE_LIST, base frame, latched): the table plane at
  `table_height`, coloured with the camera image laid onto it (`table_cells` cells, training.visualization.
  table_mesh), at most `table_rate_hz` and only while someone subscribes. It gives RViz's "Publish Point"
  geometry to hit: a click on an object seen on the table returns a point that projects back onto the
  object's pixel, which the prompt node turns into a prompt.
The path starts at the TCP of the latest `/joint_states` and applies the chunk's deltas in order.
The camera projection needs `/camera/camera_info` and `/camera/pose` (as the prompt node). The camera is
`/camera/image_raw`, or with `image_transport` compressed `/camera/image_raw/compressed`; overlays are drawn
for at most `overlay_rate_hz` frames a second (the newest one each time).
"""
from __future__ import annotations

import copy
import struct
import sys
import time

import numpy as np
from geometry_msgs.msg import Point
from rclpy.node import Node
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from pixelvla_ros import qos
from pixelvla_ros.camera_subscriptions import CameraSubscriptions
from pixelvla_ros.image_conversions import TRANSPORTS, CameraFrame, ImageError, image_to_mono, rgb_to_image
from pixelvla_ros.msg import ActionChunk, VisualPrompt
from pixelvla_ros.node_base import ParameterMixin, joint_positions, run_node, subscribe_camera
from pixelvla_ros.prompt_conversions import is_clear
from pixelvla_robots.camera import CameraModel
from pixelvla_training.visualization import (
    PLACE_COLOR, TARGET_COLOR, draw_box, draw_path, draw_points, draw_polyline, path_in_image, predicted_tcp_path,
    table_mesh, tint_mask,
)

# Values no real marker holds, to find the point and colour arrays in a serialized template (exact in float32).
_POINT_PROBE = (-7777.125, 8888.25, -9999.5)
_COLOR_PROBE = (0.3671875, 0.2421875, 0.6796875, 0.8515625)


def triangle_list_cdr(template: Marker, vertices: np.ndarray, colors: np.ndarray) -> bytes:
    """The serialized `template` with (N, 3) float `vertices` (m) as its points and (N, 3) `colors` in [0, 1] (alpha
    1) as its colors, for Publisher.publish(bytes).

    rclpy converts a Marker holding 18 000 Point and ColorRGBA objects in ~0.4 s, one Python object at a time;
    in CDR the two arrays are plain little-endian float64 x y z and float32 r g b a after a uint32 count, so
    they are spliced into a template serialized with one probe point and colour instead (~1 ms). The shift
    this makes (40 bytes per extra vertex) is a multiple of 8, so every later field keeps its alignment.
    """
    probe = copy.copy(template)
    probe.points = [Point(x=_POINT_PROBE[0], y=_POINT_PROBE[1], z=_POINT_PROBE[2])]
    probe.colors = [ColorRGBA(r=_COLOR_PROBE[0], g=_COLOR_PROBE[1], b=_COLOR_PROBE[2], a=_COLOR_PROBE[3])]
    data = serialize_message(probe)
    if data[:2] != b"\x00\x01":
        raise ValueError("expected little-endian CDR")
    points_at = data.find(struct.pack("<3d", *_POINT_PROBE))
    colors_at = data.find(struct.pack("<4f", *_COLOR_PROBE))
    # the points' count sits before them, or before 4 bytes of padding to the float64 alignment
    count_at = points_at - 4 if struct.unpack_from("<I", data, points_at - 4)[0] == 1 else points_at - 8
    if points_at < 0 or colors_at != points_at + 28 or struct.unpack_from("<I", data, count_at)[0] != 1:
        raise ValueError("unexpected Marker serialization")
    n = len(vertices)
    rgba = np.concatenate([np.asarray(colors, "<f4").reshape(n, 3), np.ones((n, 1), "<f4")], axis=1)
    return b"".join([data[:count_at], struct.pack("<I", n), data[count_at + 4:points_at],
                     np.asarray(vertices, "<f8").reshape(n, 3).tobytes(), struct.pack("<I", n), rgba.tobytes(),
                     data[colors_at + 16:]])


class VisualizerNode(ParameterMixin, Node):
    def __init__(self) -> None:
        super().__init__("visualizer")
        self.base_frame = self.declare("base_frame", "wx250s/base_link", "frame of the markers and the camera pose")
        self.robot = self.declare_robot()
        self.joint_names = list(self.declare("joint_names", list(self.robot.joint_names), "arm joints, kinematics order"))
        self.table_height = self.declare("table_height", 0.0, "height of the table top in base_frame (m, z)")
        self.table_cells = list(self.declare("table_cells", [64, 48], "cells (columns, rows) of the table marker"))
        table_rate = self.declare("table_rate_hz", 1.0, "table marker updates per second at most (0: off)",
                                  minimum=0.0)
        self.table_period = 1.0 / table_rate if table_rate > 0 else None
        self.table_max_range = self.declare("table_max_range", 3.0, "the table plane ends this far from the camera (m)",
                                            minimum=0.1)
        self.table_published = -float("inf")  # monotonic s
        overlay_rate = self.declare("overlay_rate_hz", 15.0, "overlays per second at most (0: one per camera frame)",
                                    minimum=0.0)
        self.overlay_period = 1.0 / overlay_rate if overlay_rate > 0 else 0.0
        self.overlay_published = -float("inf")  # monotonic s
        transport = self.declare("image_transport", "raw", "raw: sensor_msgs/Image on the camera topic; "
                                 "compressed: JPEG/PNG on <topic>/compressed", read_only=True, choices=TRANSPORTS)
        self.joints: np.ndarray | None = None
        self.path: np.ndarray | None = None  # (N+1, 3) m, base frame
        self.mask: np.ndarray | None = None
        self.prompts: dict[str, VisualPrompt] = {}  # "target" / "place" -> the prompt in force
        self.overlay_pub = self.create_publisher(Image, "pixelvla/overlay", qos.SENSOR)
        self.marker_pub = self.create_publisher(MarkerArray, "pixelvla/markers", 10)
        self.table_pub = self.create_publisher(Marker, "pixelvla/table", qos.LATCHED)
        subscribe_camera(self, "camera/image_raw", transport, self.on_image)
        self.camera_topics = CameraSubscriptions(self)
        self.create_subscription(JointState, "joint_states", self.on_joint_state, qos.SENSOR)
        self.create_subscription(ActionChunk, "pixelvla/action_chunk", self.on_chunk, qos.COMMAND)
        self.create_subscription(VisualPrompt, "pixelvla/prompt", lambda m: self.on_prompt("target", m), qos.LATCHED)
        self.create_subscription(VisualPrompt, "pixelvla/place_prompt", lambda m: self.on_prompt("place", m), qos.LATCHED)
        self.create_subscription(Image, "pixelvla/mask", self.on_mask, qos.LATCHED)

    def on_joint_state(self, msg: JointState) -> None:
        joints = joint_positions(msg, self.joint_names)
        if joints is not None:
            self.joints = joints
        elif set(self.joint_names) <= set(msg.name):  # (a message of other joints, e.g. the gripper's, is normal)
            self.get_logger().warning("ignoring /joint_states with NaN or inf arm joint positions",
                                      throttle_duration_sec=5.0)

    def on_chunk(self, msg: ActionChunk) -> None:
        if self.joints is None or not self.robot.has_kinematics or msg.action_dim != 7 or len(msg.actions) != msg.horizon * 7:
            return
        actions = np.asarray(msg.actions, dtype=float).reshape(msg.horizon, 7)
        if not np.all(np.isfinite(actions)):
            return
        self.path = predicted_tcp_path(self.joints, actions, self.robot.fk)
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

    def on_image(self, msg: Image | CompressedImage) -> None:
        now = time.monotonic()
        if now - self.overlay_published < self.overlay_period:
            return  # frames faster than overlay_rate_hz are not drawn (nor decoded)
        try:
            raw = CameraFrame.received(msg).rgb
        except ImageError:
            return  # the policy node reports bad images
        self.overlay_published = now
        image = raw.copy()
        if self.mask is not None and self.mask.shape == image.shape[:2]:
            image = tint_mask(image, self.mask)
        for marks, prompt in self.prompts.items():
            color = TARGET_COLOR if marks == "target" else PLACE_COLOR
            xy = np.array([(p.x, p.y) for p in prompt.points])
            if prompt.type == VisualPrompt.BOX and len(xy) == 2:
                draw_box(image, *xy[0], *xy[1], color=color)
            elif prompt.type == VisualPrompt.LINE:
                draw_polyline(image, xy, color=color)
            elif len(xy):
                draw_points(image, xy, color=color)
        camera = self.camera_topics.camera()
        if camera is not None and self.path is not None:
            draw_path(image, path_in_image(camera, self.path))
        self.overlay_pub.publish(rgb_to_image(image, msg.header))
        if camera is not None:
            self.publish_table(camera, raw, msg.header.stamp)

    def publish_table(self, camera: CameraModel, rgb: np.ndarray, stamp) -> None:
        """The table plane textured with this camera image (raw, without the overlay), rate-limited."""
        now = time.monotonic()
        if self.table_period is None or now - self.table_published < self.table_period:
            return
        if self.table_pub.get_subscription_count() == 0:
            return
        self.table_published = now
        vertices, colors = table_mesh(camera, rgb, self.table_height, tuple(self.table_cells),
                                      self.table_max_range)
        if len(vertices) == 0:
            self.get_logger().warning("the table plane is out of the camera's view: no table marker",
                                      throttle_duration_sec=10.0)
            return
        self.table_pub.publish(triangle_list_cdr(self.table_marker(stamp), vertices, colors))

    def table_marker(self, stamp) -> Marker:
        """The table marker without its points and colours (triangle_list_cdr adds them)."""
        marker = Marker(ns="pixelvla_table", id=0, type=Marker.TRIANGLE_LIST, action=Marker.ADD)
        marker.header.frame_id = self.base_frame
        marker.header.stamp = stamp
        marker.pose.orientation.w = 1.0
        marker.scale.x = marker.scale.y = marker.scale.z = 1.0  # vertices are in metres as they are
        marker.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)  # RViz multiplies each vertex's alpha by color.a
        return marker

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
