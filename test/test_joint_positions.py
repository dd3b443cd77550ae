"""joint_positions: the configured joints of a JointState, in order, or None for a partial or corrupt one."""
import math

import numpy as np
from sensor_msgs.msg import JointState

from pixelvla_ros.node_base import joint_positions


def test_positions_come_in_the_asked_order():
    msg = JointState(name=["elbow", "waist", "left_finger"], position=[0.3, -0.1, 0.02])
    np.testing.assert_array_equal(joint_positions(msg, ["waist", "elbow"]), [-0.1, 0.3])
    np.testing.assert_array_equal(joint_positions(msg, ["left_finger"]), [0.02])


def test_a_missing_or_non_finite_joint_gives_none():
    msg = JointState(name=["waist", "elbow"], position=[0.1, math.nan])
    assert joint_positions(msg, ["waist", "shoulder"]) is None  # shoulder missing
    assert joint_positions(msg, ["waist", "elbow"]) is None  # NaN
    assert joint_positions(JointState(name=["waist"], position=[]), ["waist"]) is None  # no position for it
