"""The simulator node at an episode's boundaries, its callbacks called in process (over DDS the order of
messages across topics, and against the step timer, would be a race):
- everything the policy reads at a step goes out before that step's frame (the policy node computes a chunk
  when a frame arrives, from the newest joint state, mask and prompt it holds); the node's publishers are
  real, the test records the order of their publish calls;
- a command stamped before a reset, computed for the previous episode's arm, does not move the new one;
- an episode stands still until its first move, computed from one of its own frames, is in.
"""
from contextlib import contextmanager

import numpy as np
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pixelvla_robots import wx250s
from pixelvla_ros.msg import ActionChunk
INPUTS = ("joint_pub", "mask_pub", "prompt_pub", "place_pub")


@contextmanager
def sim_node(domain: int, *parameters: str):
    """A SimNode in this process with `parameters` ("name:=value"), destroyed with its context afterwards."""
    import rclpy

    from pixelvla_ros.nodes.sim_node import SimNode

    args = ["--ros-args", *[a for p in parameters for a in ("-p", p)]] if parameters else None
    rclpy.init(args=args, domain_id=domain)
    sim = SimNode()
    try:
        yield sim
    finally:
        sim.destroy_node()
        rclpy.shutdown()


def test_joints_mask_and_prompts_of_a_step_are_published_before_its_frame(ros_domain):
    with sim_node(ros_domain, "operator:=prompt_place") as sim:
        published: list[str] = []
        for name in (*INPUTS, "image_pub"):
            publisher = getattr(sim, name)
            publish = publisher.publish
            publisher.publish = lambda msg, name=name, publish=publish: (published.append(name), publish(msg))
        sim.reset_episode("put_this_cube_on_plate", 3)  # the episode's first frame: the prompts come with it
        sim.on_step()
        frames = [i for i, name in enumerate(published) if name == "image_pub"]
        assert len(frames) == 2
        first_frame = published[:frames[0]]
        assert sorted(first_frame) == sorted(INPUTS), f"before the first frame: {first_frame}"
        second_frame = published[frames[0] + 1:frames[1]]
        assert {"joint_pub", "mask_pub"} <= set(second_frame), f"before the second frame: {second_frame}"


def _trajectory(positions, stamp_s: float) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(wx250s.JOINT_NAMES), points=[JointTrajectoryPoint(positions=list(positions))])
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int(round(stamp_s % 1 * 1e9))
    return msg


def test_a_command_stamped_before_a_reset_does_not_move_the_new_episode(ros_domain):
    with sim_node(ros_domain) as sim:
        far = wx250s.HOME_Q + np.array([0.6, 0.3, -0.3, 0.0, 0.3, 0.0])
        before = sim.get_clock().now().nanoseconds * 1e-9
        sim.reset_episode("put_this_cube_on_plate", 3)
        start = sim.q_target.copy()
        sim.on_arm_command(_trajectory(far, before))  # in flight when the episode was reset
        assert np.array_equal(sim.q_target, start)
        sim.on_arm_command(_trajectory(far, sim.get_clock().now().nanoseconds * 1e-9))
        assert np.allclose(sim.q_target, far)


def _chunk(stamp_s: float) -> ActionChunk:
    msg = ActionChunk(horizon=1, action_dim=7, actions=[0.0] * 7)
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int(round(stamp_s % 1 * 1e9))
    return msg


def test_an_episode_stands_still_until_a_move_from_a_chunk_of_its_own_frames(ros_domain):
    with sim_node(ros_domain, "start_hold_periods:=5") as sim:
        now = lambda: sim.get_clock().now().nanoseconds * 1e-9  # noqa: E731
        before = now()
        sim.reset_episode("put_this_cube_on_plate", 3)
        move = wx250s.HOME_Q + np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.0])
        sim.on_chunk(_chunk(before))  # computed from the previous episode's last frame
        sim.on_arm_command(_trajectory(move, now()))  # the executor's move from it
        sim.on_step()
        assert sim.obs["step"] == 0
        sim.on_chunk(_chunk(sim.reset_time))  # from the episode's first frame
        sim.on_step()  # no move from it yet
        assert sim.obs["step"] == 0
        sim.on_arm_command(_trajectory(move, now()))
        sim.on_step()
        assert sim.obs["step"] == 1


def test_an_episode_without_a_policy_starts_after_start_hold_periods(ros_domain):
    with sim_node(ros_domain, "start_hold_periods:=2") as sim:
        sim.reset_episode("put_this_cube_on_plate", 3)
        sim.q_target = wx250s.HOME_Q + np.array([0.2, 0.0, 0.0, 0.0, 0.0, 0.0])  # a move is waiting
        for _ in range(2):
            sim.on_step()
            assert sim.obs["step"] == 0
        sim.on_step()
        assert sim.obs["step"] == 1
