"""The simulator node's publishing order: everything the policy reads at a step goes out before that step's frame.

The policy node computes a chunk when a frame arrives, from the newest joint state, mask and prompt it holds.
The node's publishers are real; the test only records, in process, the order of their publish calls (over
DDS, the arrival order across topics is what the test would measure, and that is a race).
"""
INPUTS = ("joint_pub", "mask_pub", "prompt_pub", "place_pub")


def test_joints_mask_and_prompts_of_a_step_are_published_before_its_frame(ros_domain):
    import rclpy

    from pixelvla_ros.nodes.sim_node import SimNode

    rclpy.init(args=["--ros-args", "-p", "operator:=prompt_place"], domain_id=ros_domain)
    sim = SimNode()
    published: list[str] = []
    for name in (*INPUTS, "image_pub"):
        publisher = getattr(sim, name)
        publish = publisher.publish
        publisher.publish = lambda msg, name=name, publish=publish: (published.append(name), publish(msg))
    try:
        sim.reset_episode("put_this_cube_on_plate", 3)  # the episode's first frame: the prompts come with it
        sim.on_step()
        frames = [i for i, name in enumerate(published) if name == "image_pub"]
        assert len(frames) == 2
        first_frame = published[:frames[0]]
        assert sorted(first_frame) == sorted(INPUTS), f"before the first frame: {first_frame}"
        second_frame = published[frames[0] + 1:frames[1]]
        assert {"joint_pub", "mask_pub"} <= set(second_frame), f"before the second frame: {second_frame}"
    finally:
        sim.destroy_node()
        rclpy.shutdown()

