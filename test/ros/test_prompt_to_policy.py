"""Operator prompt -> segmenter mask -> policy: the chunk changes against the text-only chunk."""
import signal
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import image_to_mono, mono_to_image, rgb_to_image
from pixelvla_ros.msg import ActionChunk, VisualPrompt
from support import publish_calibration, start_launch

pytestmark = pytest.mark.ros
NODE_SET = str(Path(__file__).parent / "node_sets" / "policy_segmenter.nodes.yaml")


def test_prompt_through_the_segmenter_changes_the_policy_output(ros_node):
    chunks = ros_node.collect(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND)
    masks = ros_node.collect(Image, "/pixelvla/mask", qos.LATCHED)
    camera = ros_node.publisher(Image, "/camera/image_raw", qos.SENSOR)
    joints = ros_node.publisher(JointState, "/joint_states", qos.SENSOR)  # the shipped model reads the robot state
    state = JointState(name=["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger"],
                       position=[0.0, -0.9, 1.1, 0.0, -0.3, 0.0, 0.037])
    prompts = ros_node.publisher(VisualPrompt, "/pixelvla/prompt", qos.LATCHED)
    ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED).publish(String(data="put this cube on the plate"))
    publish_calibration(ros_node)  # the shipped model places its prompts from the gripper
    image = rgb_to_image(np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    runner = start_launch(NODE_SET)

    def chunk_after(count: int) -> np.ndarray:
        """Keep the camera streaming (the same scene) until more than `count` chunks arrived."""
        assert ros_node.spin_until(lambda: (joints.publish(state), camera.publish(image), len(chunks) > count)[2],
                                   timeout=90)
        return np.array(chunks[-1].actions)

    try:
        text_only = chunk_after(0)
        target = np.zeros((96, 128), bool)
        target[30:60, 40:80] = True
        prompts.publish(VisualPrompt(type=VisualPrompt.MASK, mask=mono_to_image(target), prompt_id="operator-1"))
        assert ros_node.spin_until(lambda: (camera.publish(image), any(image_to_mono(m).any() for m in masks))[1], timeout=60)
        ros_node.spin_for(0.5)  # the policy has the mask too
        prompted = chunk_after(len(chunks))
    finally:
        runner.send_signal(signal.SIGINT)
        runner.communicate(timeout=30)
    assert np.array_equal(image_to_mono(masks[0]) > 0, target)  # SAM 2 passes a mask prompt through, then tracks
    assert not np.allclose(text_only, prompted)
