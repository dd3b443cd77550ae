"""The operator stand-in clicks the target in 3-D; the prompt node's pixel lands on the target's mask."""
import signal
from pathlib import Path

import pytest
from sensor_msgs.msg import Image

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import image_to_mono
from pixelvla_ros.msg import VisualPrompt
from support import start_launch

pytestmark = pytest.mark.ros
NODE_SET = str(Path(__file__).parent / "node_sets" / "sim_operator.nodes.yaml")


@pytest.mark.parametrize("seed", [3, 11])
def test_rviz_style_click_projects_onto_the_target(ros_node, seed):
    prompts = ros_node.collect(VisualPrompt, "/pixelvla/prompt", qos.LATCHED)
    masks = ros_node.collect(Image, "/sim/target_mask", qos.LATCHED)
    runner = start_launch(NODE_SET, f"seed:={seed}")
    try:
        assert ros_node.spin_until(lambda: prompts and masks, timeout=60), "no prompt from the operator's click"
    finally:
        runner.send_signal(signal.SIGINT)
        runner.communicate(timeout=30)
    point = prompts[0].points[0]
    mask = image_to_mono(masks[0]) > 0
    col, row = int(point.x), int(point.y)  # corner origin: the pixel containing the point
    assert mask[row, col], f"prompt pixel ({point.x:.1f}, {point.y:.1f}) is not on the target"
