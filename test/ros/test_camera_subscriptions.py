"""CameraSubscriptions over DDS: the camera model of the newest camera info and pose, none before both."""
import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo

from pixelvla_ros import qos
from pixelvla_ros.camera_subscriptions import CameraSubscriptions
from pixelvla_robots.wx250s import matrix_to_quat

pytestmark = pytest.mark.ros
BASE = "wx250s/base_link"
# Optical z = base x, optical x = base -y, optical y = base -z (columns: the optical axes in the base frame).
R = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_info():
    info = CameraInfo(width=160, height=120)
    info.k = [100.0, 0.0, 79.5, 0.0, 100.0, 59.5, 0.0, 0.0, 1.0]
    return info


def camera_pose(frame_id, position):
    msg = PoseStamped()
    msg.header.frame_id = frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = position
    w, x, y, z = matrix_to_quat(R)
    msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z, msg.pose.orientation.w = x, y, z, w
    return msg


def test_the_camera_comes_from_the_newest_info_and_pose(ros_node):
    cameras = CameraSubscriptions(ros_node.node, base_frame=BASE)
    info_pub = ros_node.publisher(CameraInfo, "camera/camera_info", qos.SENSOR)
    pose_pub = ros_node.publisher(PoseStamped, "camera/pose", qos.LATCHED)
    pose_pub.publish(camera_pose(BASE, (0.0, 0.0, 0.5)))
    assert ros_node.spin_until(lambda: cameras.pose is not None, timeout=10)
    assert cameras.camera() is None  # no camera info yet
    assert ros_node.spin_until(lambda: info_pub.publish(camera_info()) or cameras.camera() is not None, timeout=10)
    camera = cameras.camera()
    assert (camera.width, camera.height, camera.fx, camera.cy) == (160, 120, 100.0, 59.5)
    np.testing.assert_allclose(camera.position, [0.0, 0.0, 0.5])
    np.testing.assert_allclose(camera.rotation, R, atol=1e-12)
    # 1 m ahead of the camera (base +x), on its axis: the principal point
    uv, depth = camera.project([[1.0, 0.0, 0.5]])
    np.testing.assert_allclose(uv[0], [79.5, 59.5], atol=1e-9)
    assert depth[0] == pytest.approx(1.0)

    pose_pub.publish(camera_pose("world", (9.0, 9.0, 9.0)))  # another frame: ignored
    ros_node.spin_for(1.0)
    np.testing.assert_allclose(cameras.camera().position, [0.0, 0.0, 0.5])
    pose_pub.publish(camera_pose(BASE, (0.1, 0.0, 0.5)))
    assert ros_node.spin_until(lambda: cameras.pose[0][0] == pytest.approx(0.1), timeout=10)
    np.testing.assert_allclose(cameras.camera().position, [0.1, 0.0, 0.5])


def test_the_pose_given_holds_until_one_arrives_and_the_info_waits_to_be_subscribed(ros_node):
    given = (np.array([0.0, 0.0, 0.4]), R)
    cameras = CameraSubscriptions(ros_node.node, camera_info=False, pose=given)
    info_pub = ros_node.publisher(CameraInfo, "camera/camera_info", qos.SENSOR)
    ros_node.spin_for(0.5)
    info_pub.publish(camera_info())
    ros_node.spin_for(0.5)
    assert cameras.info is None and cameras.camera() is None  # not subscribed to the info
    subscription = cameras.subscribe_info()
    assert ros_node.spin_until(lambda: info_pub.publish(camera_info()) or cameras.camera() is not None, timeout=10)
    np.testing.assert_allclose(cameras.camera().position, [0.0, 0.0, 0.4])
    ros_node.node.destroy_subscription(subscription)
