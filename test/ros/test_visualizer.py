"""The visualizer draws the mask, the prompts and the projected path, and publishes path markers."""
import signal
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import Image
from visualization_msgs.msg import MarkerArray

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import image_to_rgb
from support import start_launch

pytestmark = pytest.mark.ros
NODE_SET = str(Path(__file__).parent / "node_sets" / "sim_visualizer.nodes.yaml")


def test_overlay_and_markers(ros_node):
    overlays = ros_node.collect(Image, "/pixelvla/overlay", qos.SENSOR)
    raw = ros_node.collect(Image, "/camera/image_raw", qos.SENSOR)
    markers = ros_node.collect(MarkerArray, "/pixelvla/markers")
    runner = start_launch(NODE_SET)

    def pairs():  # (overlay, camera image it was drawn on); best effort: either may have been dropped
        by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in raw}
        return [(o, by_stamp[k]) for o in overlays if (k := (o.header.stamp.sec, o.header.stamp.nanosec)) in by_stamp]

    def drawn(pair) -> float:  # share of the pixels the overlay changed
        overlay, original = pair
        return float(np.any(image_to_rgb(overlay) != image_to_rgb(original), axis=2).mean())

    def place_drawn() -> bool:  # the operator stand-in's place prompt on the plate, in its own colour
        return any(np.all(image_to_rgb(o) == (60, 140, 255), axis=2).sum() >= 9 for o in overlays[-3:])

    try:
        # the first overlays may come before the mask, the prompts and the first chunk reach the visualizer
        assert ros_node.spin_until(lambda: markers and any(drawn(p) > 0.001 for p in pairs()[-3:]), timeout=60), (
            f"{len(overlays)} overlays, {len(markers)} marker arrays; drawn shares {[drawn(p) for p in pairs()[-3:]]}")
        assert ros_node.spin_until(place_drawn, timeout=60), "no overlay shows the place prompt"
    finally:
        runner.send_signal(signal.SIGINT)
        runner.communicate(timeout=30)
    line = markers[-1].markers[0]
    assert line.header.frame_id == "wx250s/base_link" and len(line.points) == 2  # TCP now + one expert action
