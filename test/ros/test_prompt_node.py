"""The prompt node over DDS: RViz clicks projected into the image as a hand computation says."""
import subprocess
import sys

import numpy as np
import pytest
from geometry_msgs.msg import Point, PointStamped
from sensor_msgs.msg import CameraInfo

from pixelvla_ros import qos
from pixelvla_ros.msg import VisualPrompt
from pixelvla_robots.wx250s import matrix_to_quat

pytestmark = pytest.mark.ros
BASE = "wx250s/base_link"
# Camera at (0, 0, 0.5) in the base frame looking along +x: optical z = base x, optical x = base -y,
# optical y = base -z. Columns of R are the optical axes expressed in the base frame.
R = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def start(mode, marks="target"):
    w, x, y, z = matrix_to_quat(R)
    return subprocess.Popen([sys.executable, "-m", "pixelvla_ros.nodes.prompt_node", "--ros-args",
                             "-p", f"mode:={mode}", "-p", f"marks:={marks}", "-p", f"base_frame:={BASE}",
                             "-p", "camera_position:=[0.0, 0.0, 0.5]",
                             "-p", f"camera_orientation:=[{x}, {y}, {z}, {w}]"])


def camera_info():
    info = CameraInfo(width=160, height=120, distortion_model="plumb_bob")
    info.k = [100.0, 0.0, 79.5, 0.0, 100.0, 59.5, 0.0, 0.0, 1.0]
    info.header.frame_id = "camera_optical_frame"
    return info


def click(x, y, z, frame=BASE):
    msg = PointStamped()
    msg.header.frame_id = frame
    msg.point.x, msg.point.y, msg.point.z = x, y, z
    return msg


@pytest.fixture
def prompt_node(ros_node, request):
    node = start(getattr(request, "param", "point"))
    prompts = ros_node.collect(VisualPrompt, "/pixelvla/prompt", qos.LATCHED)
    info_pub = ros_node.publisher(CameraInfo, "/camera/camera_info", qos.SENSOR)
    clicks = ros_node.publisher(PointStamped, "/clicked_point")
    pixels = ros_node.publisher(Point, "/camera/image_raw_mouse_left")
    ros_node.spin_until(lambda: ros_node.node.count_subscribers("/clicked_point") > 0, timeout=30)
    for _ in range(5):
        info_pub.publish(camera_info())
        ros_node.spin_for(0.1)
    yield ros_node, prompts, clicks, pixels
    node.terminate()
    node.wait(timeout=20)


def test_clicked_point_projects_to_the_hand_computed_pixel(prompt_node):
    probe, prompts, clicks, _ = prompt_node
    # (2.0, -0.5, 0.75) in the base frame -> optical (0.5, -0.25, 2.0) ->
    # u = 100 * 0.5 / 2 + 79.5 = 104.5, v = 100 * -0.25 / 2 + 59.5 = 47.0 (pixel centres at integers)
    # -> VisualPrompt's corner origin: (105.0, 47.5).
    clicks.publish(click(2.0, -0.5, 0.75))
    assert probe.spin_until(lambda: prompts, timeout=20)
    msg = prompts[-1]
    assert msg.type == VisualPrompt.POINT and list(msg.labels) == [1]
    assert (msg.points[0].x, msg.points[0].y) == pytest.approx((105.0, 47.5))


def test_clicks_behind_outside_or_in_another_frame_are_dropped(prompt_node):
    probe, prompts, clicks, _ = prompt_node
    clicks.publish(click(-1.0, 0.0, 0.5))        # behind the camera
    clicks.publish(click(2.0, -5.0, 0.5))        # u = 329.5: right of the image
    clicks.publish(click(2.0, 0.0, 0.5, "map"))  # a frame the node cannot transform
    probe.spin_for(1.5)
    assert prompts == []
    clicks.publish(click(1.0, 0.0, 0.5))         # the optical axis: the image centre
    assert probe.spin_until(lambda: prompts, timeout=20)
    assert (prompts[-1].points[0].x, prompts[-1].points[0].y) == pytest.approx((80.0, 60.0))


@pytest.mark.parametrize("prompt_node", ["box"], indirect=True)
def test_two_pixel_clicks_make_a_box(prompt_node):
    probe, prompts, _, pixels = prompt_node
    pixels.publish(Point(x=90.0, y=20.0))
    probe.spin_for(0.5)
    assert prompts == []  # one corner is not a box yet
    pixels.publish(Point(x=30.0, y=70.0))
    assert probe.spin_until(lambda: prompts, timeout=20)
    box = prompts[-1]
    assert box.type == VisualPrompt.BOX
    assert [(p.x, p.y) for p in box.points] == [(30.5, 20.5), (90.5, 70.5)]


def test_place_clicks_go_to_the_place_topic_and_clear_clears_both(ros_node):
    from std_srvs.srv import Trigger

    node = start("point", marks="place")
    targets = ros_node.collect(VisualPrompt, "/pixelvla/prompt", qos.LATCHED)
    places = ros_node.collect(VisualPrompt, "/pixelvla/place_prompt", qos.LATCHED)
    pixels = ros_node.publisher(Point, "/camera/image_raw_mouse_left")
    try:
        assert ros_node.spin_until(lambda: pixels.get_subscription_count() > 0, timeout=30)
        pixels.publish(Point(x=12.0, y=34.0))
        assert ros_node.spin_until(lambda: places, timeout=20)
        assert [(p.x, p.y) for p in places[-1].points] == [(12.5, 34.5)] and not targets
        clear = ros_node.node.create_client(Trigger, "/prompt/clear")
        assert clear.wait_for_service(timeout_sec=20)
        future = clear.call_async(Trigger.Request())
        assert ros_node.spin_until(future.done, timeout=20) and future.result().success
        assert ros_node.spin_until(lambda: targets and len(places) == 2, timeout=20)
        assert not places[-1].points and not targets[-1].points  # clearing prompts on both topics
    finally:
        node.terminate()
        node.wait(timeout=20)
