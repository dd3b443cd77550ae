"""The visualizer's table plane for RViz: a TRIANGLE_LIST Marker in the base frame, textured with the camera image
as training.visualization.table_mesh lays it out (the geometry itself: test/test_console_plane.py)."""
from pathlib import Path

import numpy as np
import pytest
import yaml
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import Marker

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import rgb_to_image
from pixelvla_robots.camera import CameraModel
from pixelvla_training.visualization import table_mesh
from support.console import NodeProcess

pytestmark = pytest.mark.ros
W, H = 64, 48


def camera() -> CameraModel:
    position, target = np.array([0.75, 0.05, 0.55]), np.array([0.3, 0.0, 0.0])
    z = (target - position) / np.linalg.norm(target - position)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    return CameraModel("cam", W, H, 55.0, 55.0, (W - 1) / 2, (H - 1) / 2, position, np.stack([x, np.cross(z, x), z], 1))


def test_table_marker_is_a_valid_triangle_list_of_the_camera_image(ros_node):
    cam = camera()
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    frame = rgb_to_image(image)
    frame.header.stamp.sec, frame.header.frame_id = 77, "camera_optical"
    info = CameraInfo(width=W, height=H, k=cam.K.ravel().tolist())
    pose = PoseStamped()
    pose.header.frame_id = "wx250s/base_link"
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = cam.position
    pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z, pose.pose.orientation.w = cam.quaternion_xyzw
    markers = ros_node.collect(Marker, "/pixelvla/table", qos.LATCHED)
    images = ros_node.publisher(Image, "/camera/image_raw", qos.SENSOR)
    infos = ros_node.publisher(CameraInfo, "/camera/camera_info", qos.SENSOR)
    ros_node.publisher(PoseStamped, "/camera/pose", qos.LATCHED).publish(pose)
    node = NodeProcess("pixelvla_ros.nodes.visualizer_node", "-p", "table_height:=0.01", "-p", "table_rate_hz:=5.0")
    try:
        def published() -> bool:
            infos.publish(info)
            images.publish(frame)
            ros_node.spin_for(0.1)
            return bool(markers)
        assert ros_node.spin_until(published, timeout=60), f"no table marker:\n{node.output}"
    finally:
        assert node.stop() == 0, node.output
    marker = markers[-1]
    assert marker.type == Marker.TRIANGLE_LIST and marker.action == Marker.ADD
    assert marker.header.frame_id == "wx250s/base_link" and marker.header.stamp.sec == 77
    assert (marker.scale.x, marker.scale.y, marker.scale.z) == (1.0, 1.0, 1.0) and marker.pose.orientation.w == 1.0
    assert marker.color.a == 1.0  # RViz multiplies every vertex's alpha by it
    assert len(marker.points) > 0 and len(marker.points) % 3 == 0 and len(marker.colors) == len(marker.points)
    vertices, colors = table_mesh(cam, image, height=0.01, cells=(64, 48))
    assert np.allclose([[p.x, p.y, p.z] for p in marker.points], vertices)
    assert np.allclose([[c.r, c.g, c.b] for c in marker.colors], colors, atol=1e-6)
    assert all(c.a == 1.0 for c in marker.colors)


def test_the_rviz_layout_shows_the_table():
    layout = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "pixelvla.rviz").read_text())
    displays = {d["Name"]: d for d in layout["Visualization Manager"]["Displays"]}
    table = displays["Table (camera image)"]
    assert table["Class"] == "rviz_default_plugins/Marker" and table["Enabled"]
    assert table["Topic"]["Value"] == "/pixelvla/table" and table["Topic"]["Durability Policy"] == "Transient Local"
    tools = {t["Class"]: t for t in layout["Visualization Manager"]["Tools"]}
    assert tools["rviz_default_plugins/PublishPoint"]["Topic"]["Value"] == "/clicked_point"
