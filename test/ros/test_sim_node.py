"""The simulator node at an episode's boundaries, its callbacks called in process (over DDS the order of
messages across topics, and against the step timer, would be a race):
- everything the policy reads at a step goes out before that step's frame (the policy node computes a chunk
  when a frame arrives, from the newest joint state, mask and prompt it holds); the node's publishers are
  real, the test records the order of their publish calls;
- a command stamped before a reset, computed for the previous episode's arm, does not move the new one;
- an episode stands still until its first move, computed from one of its own frames, is in;
- the "words" operator stand-in accepts the policy's words' prompts of the episode, and names what they name.
"""
from contextlib import contextmanager

import numpy as np
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from geometry_msgs.msg import Point

from pixelvla_robots import wx250s
from pixelvla_robots.camera import image_xy
from pixelvla_ros.image_conversions import image_to_mono
from pixelvla_ros.msg import ActionChunk, VisualPrompt
from pixelvla_ros.prompt_conversions import is_clear
from pixelvla_sim.prompts import click_pixel
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


def _words_box(sim, object_id: str, stamp_s: float) -> VisualPrompt:
    x, y = image_xy(click_pixel(sim.obs, object_id)).tolist()
    msg = VisualPrompt(type=VisualPrompt.BOX, points=[Point(x=x + 4, y=y + 4), Point(x=x - 4, y=y - 4)], prompt_id="words-1")
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int(round(stamp_s % 1 * 1e9))
    return msg


def test_the_words_operator_accepts_the_words_prompts_of_the_episode_and_its_mask_follows_them(ros_domain):
    with sim_node(ros_domain, "operator:=words", "start_hold_periods:=5") as sim:
        published = {name: [] for name in ("prompt_pub", "place_pub", "mask_pub")}
        for name in published:
            publisher = getattr(sim, name)
            publish = publisher.publish
            publisher.publish = lambda msg, name=name, publish=publish: (published[name].append(msg), publish(msg))
        now = lambda: sim.get_clock().now().nanoseconds * 1e-9  # noqa: E731
        before = now()
        sim.reset_episode("put_this_cube_on_plate", 3)
        assert [is_clear(m) for m in published["prompt_pub"] + published["place_pub"]] == [True, True]
        assert not image_to_mono(published["mask_pub"][-1]).any()  # nothing named yet
        other = next(name for name in sim.obs["masks"] if name not in (sim.obs["target_object"], sim.obs["destination"])
                     and name.startswith("cube"))
        sim.on_words_prompt(_words_box(sim, other, before))  # drawn on the previous episode's frame
        assert sim.named_object is None and len(published["prompt_pub"]) == 1
        sim.on_chunk(_chunk(now()))  # a chunk from the instruction alone
        sim.on_arm_command(_trajectory(wx250s.HOME_Q, now()))
        sim.on_step()
        assert sim.obs["step"] == 0  # not the episode's own: its prompts are not in yet
        accepted = _words_box(sim, other, now())
        sim.on_words_prompt(accepted)
        assert sim.named_object == other and published["prompt_pub"][-1] is accepted
        sim.on_words_prompt(_words_box(sim, sim.obs["target_object"], now()))  # a later proposal: accepted already
        assert sim.named_object == other
        sim.on_step()
        assert np.array_equal(image_to_mono(published["mask_pub"][-1]) > 0, sim.obs["masks"][other])
        sim.on_chunk(_chunk(now()))
        sim.on_arm_command(_trajectory(wx250s.HOME_Q, now()))
        sim.on_step()
        assert sim.obs["step"] == 1
