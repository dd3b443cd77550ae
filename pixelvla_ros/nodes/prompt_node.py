"""Prompt node: operator clicks -> VisualPrompt in image pixels.

- RViz "Publish Point" (`/clicked_point`, geometry_msgs/PointStamped): a 3-D point in the base frame,
  projected into the image with the camera's CameraInfo (`/camera/camera_info`) and its pose in the
  base frame (`/camera/pose`, geometry_msgs/PoseStamped, or the `camera_position` /
  `camera_orientation` parameters). Clicks behind the camera or outside the image are dropped with
  a warning; clicks in another frame too (no tf2 here: publish points in `base_frame`).
- rqt_image_view clicks (`/camera/image_raw_mouse_left`, geometry_msgs/Point): already pixels.
Pixel coordinates follow VisualPrompt: origin at the top-left pixel's corner, so the centre of
pixel (col, row) is (col + 0.5, row + 0.5).

`mode` (parameter, changeable at run time): "point" publishes each click as a POINT prompt, "box"
makes a BOX from every two clicks, "line" grows a LINE with every click. `marks` (parameter, changeable at
run time): "target" publishes on `/pixelvla/prompt` (the object to pick), "place" on
`/pixelvla/place_prompt` (where to put it; models trained with place prompts). `~/clear`
(std_srvs/Trigger) forgets the clicks and publishes a clearing prompt (a POINT without points) on both.
"""
from __future__ import annotations

import sys

import numpy as np
from geometry_msgs.msg import Point, PointStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from std_srvs.srv import Trigger

from pixelvla_ros import qos
from pixelvla_ros.camera_subscriptions import CameraSubscriptions
from pixelvla_ros.msg import VisualPrompt
from pixelvla_ros.node_base import ParameterMixin, run_node
from pixelvla_robots.rotations import quat_to_matrix
from pixelvla_robots.camera import image_xy

MODES = ("point", "box", "line")
TOPICS = {"target": "pixelvla/prompt", "place": "pixelvla/place_prompt"}  # what the clicks mark -> topic


class PromptNode(ParameterMixin, Node):
    def __init__(self) -> None:
        super().__init__("prompt")
        self.mode = self.declare("mode", "point", "point, box (two clicks) or line (a click sequence)")
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {MODES}")
        self.marks = self.declare("marks", "target", "what the clicks mark: target (the object) or place (where it goes)")
        if self.marks not in TOPICS:
            raise ValueError(f"marks {self.marks!r} is not one of {tuple(TOPICS)}")
        self.base_frame = self.declare("base_frame", "wx250s/base_link", "frame RViz clicks must be in")
        position = self.declare("camera_position", [0.0, 0.0, 0.0], "camera optical centre in base_frame (m); used until /camera/pose arrives")
        orientation = self.declare("camera_orientation", [0.0, 0.0, 0.0, 0.0], "optical frame orientation (x y z w) in base_frame; all zero = unknown")
        known = np.linalg.norm(orientation) > 0
        pose = (np.array(position, float), self.rotation_from_xyzw(orientation)) if known else None
        self.clicks: list[tuple[float, float]] = []
        self.frame_id, self.stamp = "", None
        self.count = 0
        self.add_on_set_parameters_callback(self.on_parameters)
        self.pubs = {marks: self.create_publisher(VisualPrompt, topic, qos.LATCHED) for marks, topic in TOPICS.items()}
        self.camera_topics = CameraSubscriptions(self, base_frame=self.base_frame, pose=pose)
        self.create_subscription(PointStamped, "clicked_point", self.on_clicked_point, 10)
        self.create_subscription(Point, "camera/image_raw_mouse_left", self.on_pixel_click, 10)
        self.create_service(Trigger, "~/clear", self.on_clear)

    @staticmethod
    def rotation_from_xyzw(q) -> np.ndarray:
        x, y, z, w = q
        return quat_to_matrix(np.array([w, x, y, z], float))

    def on_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == "mode":
                if param.value not in MODES:
                    return SetParametersResult(successful=False, reason=f"mode must be one of {MODES}")
                self.mode = param.value
                self.clicks.clear()
            elif param.name == "marks":
                if param.value not in TOPICS:
                    return SetParametersResult(successful=False, reason=f"marks must be one of {tuple(TOPICS)}")
                self.marks = param.value
                self.clicks.clear()
        return SetParametersResult(successful=True)

    def on_clicked_point(self, msg: PointStamped) -> None:
        if msg.header.frame_id != self.base_frame:
            self.get_logger().warning(f"click in frame {msg.header.frame_id!r} dropped: set RViz's fixed frame to {self.base_frame!r}")
            return
        camera = self.camera_topics.camera()
        if camera is None:
            self.get_logger().warning("click dropped: no camera info or camera pose yet")
            return
        uv, depths = camera.project([[msg.point.x, msg.point.y, msg.point.z]])
        (u, v), depth = uv[0], depths[0]
        if depth <= 0:
            self.get_logger().warning(f"click ({msg.point.x:.3f}, {msg.point.y:.3f}, {msg.point.z:.3f}) is behind the camera: dropped")
            return
        x, y = image_xy((u, v)).tolist()  # pixel-centre convention (OpenCV) -> corner origin (VisualPrompt)
        if not (0 <= x < camera.width and 0 <= y < camera.height):
            self.get_logger().warning(f"click projects to pixel ({x:.1f}, {y:.1f}), outside the {camera.width}x{camera.height} image: dropped")
            return
        self.add_click(x, y)

    def on_pixel_click(self, msg: Point) -> None:
        info = self.camera_topics.info
        if info is not None and not (0 <= msg.x < info.width and 0 <= msg.y < info.height):
            self.get_logger().warning(f"pixel click ({msg.x}, {msg.y}) outside the image: dropped")
            return
        self.add_click(*image_xy((msg.x, msg.y)).tolist())

    def add_click(self, x: float, y: float) -> None:
        self.clicks.append((x, y))
        if self.mode == "point":
            self.publish(VisualPrompt.POINT, self.clicks[-1:])
            self.clicks.clear()
        elif self.mode == "box" and len(self.clicks) == 2:
            (xa, ya), (xb, yb) = self.clicks
            if xa == xb or ya == yb:
                self.get_logger().warning("box corners share a row or column (degenerate box): click two opposite corners")
            else:
                self.publish(VisualPrompt.BOX, [(min(xa, xb), min(ya, yb)), (max(xa, xb), max(ya, yb))])
            self.clicks.clear()
        elif self.mode == "line" and len(self.clicks) >= 2:
            self.publish(VisualPrompt.LINE, self.clicks)

    def publish(self, prompt_type: int, points: list[tuple[float, float]]) -> None:
        msg = VisualPrompt(type=prompt_type, points=[Point(x=x, y=y) for x, y in points], prompt_id=f"click-{self.count}")
        msg.labels = [1] * len(points) if prompt_type == VisualPrompt.POINT else []
        msg.header.stamp = self.get_clock().now().to_msg()
        info = self.camera_topics.info
        msg.header.frame_id = info.header.frame_id if info is not None else ""
        self.pubs[self.marks].publish(msg)
        self.count += 1
        self.get_logger().info(f"{msg.prompt_id}: {self.mode} prompt on the {self.marks} at "
                               f"{[(round(x, 1), round(y, 1)) for x, y in points]}")

    def on_clear(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.clicks.clear()
        clear = VisualPrompt(type=VisualPrompt.POINT, prompt_id=f"clear-{self.count}")
        clear.header.stamp = self.get_clock().now().to_msg()
        for pub in self.pubs.values():
            pub.publish(clear)
        self.count += 1
        response.success, response.message = True, "target and place prompts cleared"
        return response


def main(args=None) -> int:
    return run_node(PromptNode, args)


if __name__ == "__main__":
    sys.exit(main())
