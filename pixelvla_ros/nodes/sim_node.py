"""Simulated WidowX 250 tabletop as a ROS node: the same topics as the real arm and its camera.

Each control period (default 0.2 s, 5 Hz) the node applies the latest arm and gripper targets,
steps the physics by `sim_step_s` simulated seconds (default: one control period, real time; set it
to 0.2 with control_rate_hz:=10 on every node of the stack to run episodes at twice real time),
steps the physics (`pixelvla_sim.TabletopEnv`), and publishes:
- `/camera/image_raw` (rgb8) and `/camera/camera_info` (with every image), stamped with the step's time,
  after the step's joint state, mask and operator prompt (the policy computes from a frame when it arrives);
- `/joint_states`: the six arm joints (rad) and both fingers (m);
- `/camera/pose` (geometry_msgs/PoseStamped, latched): the optical frame's pose in the base frame,
  the static transform base -> camera (for projecting RViz clicks);
- `/sim/target_mask` (mono8): the ground-truth mask of the object the operator stand-in names (see below;
  all zero while it names none), every frame, with that frame's header (so the policy's mask-lag check always
  finds it aligned): what a perfect segmenter tracking the operator's prompt gives;
- `/sim/episode` (std_msgs/String, JSON, latched): task, seed, instruction, target_object, step, success,
  first_reached, first_touched and first_lifted (the object the gripper reached, touched and lifted
  first, see TabletopEnv), done.
Commands, as for the real arm's controllers: `/arm_controller/joint_trajectory` and
`/gripper_controller/joint_trajectory` (the last point of each trajectory is the target; an arm
trajectory without points stops the arm where it is: its measured joints become the target). A trajectory
stamped before the last reset was computed for the previous episode's arm and is ignored.
Resets: `~/reset` (std_srvs/Trigger) restarts the current task + seed; `/sim/reset`
(std_msgs/String, JSON {"task": ..., "seed": ...}) switches episodes.
`publish_instruction` (default true) publishes each episode's instruction on `/pixelvla/instruction`
(latched), as an operator typing it would.
Operator stand-in (`operator` parameter): "click" publishes the target's top centre on
`/clicked_point` (base frame) at the first steps of each episode, as a person would with RViz's
Publish Point tool; "prompt" publishes a POINT VisualPrompt on the target's pixels; "prompt_place" also one
on the destination's pixels on `/pixelvla/place_prompt` (where the target goes); each of these names the
task's target. "words" clears both prompts at each reset and accepts the policy's words' prompts of the
episode's first frame it gets (`/pixelvla/words/prompt` and `/pixelvla/words/place_prompt`, stamped at or
after the reset) as they are, republishing them as the prompts; it names the object with the most pixels in
the accepted box (pixelvla_sim.prompts.segment_box), whichever it is. "none" names nothing.
With `expert:=true` the scripted expert (privileged state) publishes its action each step as an
ActionChunk, standing in for the policy so the executor -> IK -> controller path is exercised.
Every episode stands still at step 0 after a reset (the camera streaming) until its first move is in: an arm
command that arrives after an ActionChunk computed from one of its own frames with its prompts (stamped at or
after the reset; with "words", after the words' prompts were accepted), or for at most `start_hold_periods`
control periods. The chunk the policy was computing from the previous
episode's last frame, and the executor's moves from it, arrive after the reset and are not waited for. The
world then starts moving at the next period with the action of a chunk of its own first frame, that chunk's
next action follows a period later, and the policy's next frame is two periods on, as in an in-process episode
(pixelvla_sim.control). With a fixed hold instead, a third of the episodes ran two actions of a chunk before the
world moved, both in its first step.
With `wait_for_policy:=true` (the `sim` node set) the first episode holds at step 0, the camera streaming,
until the policy reports ACTIVE on `/pixelvla/status` or a reset comes: loading a model takes seconds that
would otherwise come out of the episode's steps.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
from geometry_msgs.msg import Point, PointStamped, PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import mono_to_image, rgb_to_image
from pixelvla_ros.msg import ActionChunk, PolicyStatus, VisualPrompt
from pixelvla_ros.node_base import ParameterMixin, run_node, stamp_seconds
from pixelvla_ros.prompt_conversions import PromptError, prompt_from_msg, words_to_accept
from pixelvla_robots.camera import image_xy
from pixelvla_sim.env import TabletopEnv
from pixelvla_sim.expert import ScriptedExpert
from pixelvla_sim.prompts import click_pixel, click_point, segment_box
from pixelvla_sim.tasks import get_task

DIMENSIONS = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
OPERATORS = ("none", "click", "prompt", "prompt_place", "words")
SIMULATED_ROBOT = "wx250s"  # the arm of pixelvla_sim's scene


class SimNode(ParameterMixin, Node):
    def __init__(self) -> None:
        super().__init__("sim")
        self.robot = self.declare_robot()
        if self.robot.model != SIMULATED_ROBOT:
            raise ValueError(f"robot_model {self.robot.model}: the simulator models the {SIMULATED_ROBOT} only")
        self.task = self.declare("task", "put_red_cube_on_plate", "task to start with")
        self.seed = self.declare("seed", 0, "seed of the first episode", minimum=0)
        get_task(self.task)  # an unknown task fails at start-up with the list of known ones
        size = self.declare("image_size", 224, "rendered image width and height (px)", minimum=32, maximum=1024)
        rate = self.declare("control_rate_hz", 5.0, "control steps per (wall-clock) second", minimum=0.5, maximum=100.0)
        sim_step = self.declare("sim_step_s", 0.0, "simulated seconds per control step (0: 1 / control_rate_hz)", minimum=0.0)
        self.base_frame = self.declare("base_frame", "wx250s/base_link", "frame of joint targets and the camera pose")
        self.camera_frame = self.declare("camera_frame", "camera_optical_frame", "optical frame of the camera")
        self.use_expert = self.declare("expert", False, "publish the scripted expert's actions as ActionChunks")
        self.publish_instruction = self.declare("publish_instruction", True, "publish each episode's instruction")
        self.operator = self.declare("operator", "none", "operator stand-in: none, click (/clicked_point), prompt, "
                                     "prompt_place (a prompt on the target and a place prompt on the destination) or "
                                     "words (accepts the policy's words' prompts)")
        if self.operator not in OPERATORS:
            raise ValueError(f"operator {self.operator!r}: use one of {', '.join(OPERATORS)}")
        max_steps = self.declare("max_episode_steps", 60, "episode length (control steps)", minimum=1)
        wait_for_policy = self.declare("wait_for_policy", False, "hold the first episode at step 0 until the policy "
                                       "reports ACTIVE on pixelvla/status or a reset comes")
        self.start_hold_periods = self.declare(
            "start_hold_periods", 10, "control periods an episode stands still at step 0 after a reset at most, "
            "waiting for its first move: an arm command after a chunk computed from one of its own frames", minimum=0)
        self.env = TabletopEnv(
            render_size=(size, size),
            shadows=self.declare("shadows", False, "render shadows (slower)"),
            control_period=sim_step or 1.0 / rate,
            max_episode_steps=max_steps,
        )
        self.expert = ScriptedExpert()
        self.period = 1.0 / rate  # wall-clock seconds per step

        self.image_pub = self.create_publisher(Image, "camera/image_raw", qos.SENSOR)
        self.info_pub = self.create_publisher(CameraInfo, "camera/camera_info", qos.SENSOR)
        self.pose_pub = self.create_publisher(PoseStamped, "camera/pose", qos.LATCHED)
        self.joint_pub = self.create_publisher(JointState, "joint_states", qos.SENSOR)
        self.mask_pub = self.create_publisher(Image, "sim/target_mask", qos.LATCHED)
        self.episode_pub = self.create_publisher(String, "sim/episode", qos.LATCHED)
        self.chunk_pub = self.create_publisher(ActionChunk, "pixelvla/action_chunk", qos.COMMAND) if self.use_expert else None
        self.click_pub = self.create_publisher(PointStamped, "clicked_point", 10)
        self.prompt_pub = self.create_publisher(VisualPrompt, "pixelvla/prompt", qos.LATCHED)
        self.place_pub = self.create_publisher(VisualPrompt, "pixelvla/place_prompt", qos.LATCHED)
        self.instruction_pub = self.create_publisher(String, "pixelvla/instruction", qos.LATCHED)
        self.create_subscription(JointTrajectory, "arm_controller/joint_trajectory", self.on_arm_command, qos.COMMAND)
        self.create_subscription(JointTrajectory, "gripper_controller/joint_trajectory", self.on_gripper_command, qos.COMMAND)
        if not self.use_expert:  # the expert's chunks are this node's own
            self.create_subscription(ActionChunk, "pixelvla/action_chunk", self.on_chunk, qos.COMMAND)
        if self.operator == "words":
            self.words_place: VisualPrompt | None = None  # the newest proposal of a place
            self.create_subscription(VisualPrompt, "pixelvla/words/place_prompt", self.on_words_place, qos.LATCHED)
            self.create_subscription(VisualPrompt, "pixelvla/words/prompt", self.on_words_prompt, qos.LATCHED)
        self.create_subscription(String, "sim/reset", self.on_reset_topic, qos.COMMAND)
        self.create_service(Trigger, "~/reset", self.on_reset_service)
        self.sequence = 0
        self.waiting_for = ""  # what the episode holds at step 0 for (empty: it runs)
        self.reset_episode(self.task, self.seed)
        if wait_for_policy:
            # Loading a model takes seconds: an episode started now would lose them from its step budget.
            self.waiting_for = "the policy to report ACTIVE on pixelvla/status (or a reset on sim/reset, ~/reset)"
            self.get_logger().info(f"episode {self.task} seed {self.seed} holds at step 0: waiting for {self.waiting_for}")
            self.create_subscription(PolicyStatus, "pixelvla/status", self.on_policy_status, qos.LATCHED)
        self.create_timer(self.period, self.on_step)

    # ---------------------------------------------------------------- episodes
    def reset_episode(self, task: str, seed: int) -> None:
        """Start `task` from `seed`; ValueError (nothing changed) for an unknown task or bad seed."""
        if self.env.spec is not None and not self.episode_done():
            self.get_logger().warning(f"reset during episode {self.task}/{self.seed} at step {self.env.step_count}")
        self.obs = self.env.reset(task, seed)
        self.task, self.seed = task, seed
        self.reset_time = self.get_clock().now().nanoseconds * 1e-9
        self.waiting_for = ""  # an explicit reset starts the episode at once
        self.start_hold = self.start_hold_periods  # periods left to wait for the episode's first move
        self.own_chunk_seen = False  # a chunk computed from one of this episode's frames, with its prompts, arrived
        # s: chunks stamped from then on are the episode's own (with "words": none until its prompts are accepted)
        self.prompted_since = float("inf") if self.operator == "words" else self.reset_time
        # the object the operator names: its mask goes out every frame
        self.named_object = None if self.operator in ("none", "words") else self.obs["target_object"]
        self.expert.reset()
        self.q_target = self.obs["joint_positions"].copy()
        self.gripper_target = 1.0
        self.camera = self.env.camera_model()  # camera jitter is per episode
        self.get_logger().info(f"episode {task} seed {seed}: {self.obs['instruction']!r}")
        self.publish_camera_pose()
        if self.operator == "words":  # the previous episode's accepted prompts must not stand for this one
            for publisher in (self.prompt_pub, self.place_pub):
                publisher.publish(VisualPrompt(header=self.header(self.camera_frame), type=VisualPrompt.POINT,
                                               prompt_id=f"clear-{task}-{seed}"))
        if self.publish_instruction:
            self.instruction_pub.publish(String(data=self.obs["instruction"]))
        self.publish_observation()

    def episode_done(self) -> bool:
        return bool(self.obs["success"] or self.obs["truncated"])

    def on_reset_topic(self, msg: String) -> None:
        try:
            request = json.loads(msg.data)
            self.reset_episode(str(request["task"]), int(request.get("seed", 0)))
        except (ValueError, KeyError, TypeError) as exc:
            self.get_logger().error(f"reset refused ({exc}); expected JSON {{\"task\": name, \"seed\": int}}")

    def on_policy_status(self, msg: PolicyStatus) -> None:
        if self.waiting_for and msg.state == PolicyStatus.ACTIVE:
            self.waiting_for = ""
            self.get_logger().info(f"the policy is ACTIVE ({msg.model_id}): episode {self.task} seed {self.seed} starts")

    def on_reset_service(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.reset_episode(self.task, self.seed)
        response.success, response.message = True, f"reset to {self.task} seed {self.seed}"
        return response

    # ---------------------------------------------------------------- commands
    def on_chunk(self, msg: ActionChunk) -> None:
        if stamp_seconds(msg.header.stamp) >= self.prompted_since:
            self.own_chunk_seen = True

    def on_words_place(self, msg: VisualPrompt) -> None:
        self.words_place = msg

    def on_words_prompt(self, msg: VisualPrompt) -> None:
        """The operator accepts the first words' prompts drawn on one of the episode's frames, as they are."""
        if self.prompted_since < float("inf") or stamp_seconds(msg.header.stamp) < self.reset_time:
            return  # accepted already, or drawn on the previous episode's frame
        try:
            if msg.type != VisualPrompt.BOX:
                raise PromptError("expected a BOX")
            (box,) = prompt_from_msg(msg, self.obs["rgb"].shape[:2])
        except PromptError as exc:
            self.get_logger().error(f"words' prompt {msg.prompt_id!r} refused: {exc}")
            return
        self.named_object = segment_box(self.obs, box)
        for on_place, proposal in words_to_accept(msg, self.words_place):
            (self.place_pub if on_place else self.prompt_pub).publish(proposal)
        self.prompted_since = self.get_clock().now().nanoseconds * 1e-9
        self.get_logger().info(f"words' prompts accepted: the box names {self.named_object or 'no object'}")

    def meant_for_an_earlier_episode(self, msg: JointTrajectory) -> bool:
        """Whether a trajectory is stamped before the last reset: the executor computed it from the previous
        episode's arm, which the reset put back at its start pose in an instant (a real arm is never moved
        that way). Applied, it would pull the arm back to where the previous episode left it in one step."""
        stamp = stamp_seconds(msg.header.stamp)
        return 0.0 < stamp < self.reset_time

    def on_arm_command(self, msg: JointTrajectory) -> None:
        if self.meant_for_an_earlier_episode(msg):
            self.get_logger().debug("arm trajectory stamped before the last reset: ignored")
            return
        if not msg.points:  # a stop, as ros2_control's joint trajectory controller once defined it
            self.q_target = self.obs["joint_positions"].copy()
            self.get_logger().warning("arm trajectory without points: stopping where the arm is")
            return
        positions = dict(zip(msg.joint_names, msg.points[-1].positions))
        missing = [n for n in self.robot.joint_names if n not in positions]
        if missing or len(msg.joint_names) != len(msg.points[-1].positions):
            self.get_logger().error(
                f"arm trajectory refused: joints {list(msg.joint_names)} with {len(msg.points[-1].positions)} "
                f"positions; expected the joints {list(self.robot.joint_names)}"
            )
            return
        try:
            self.q_target, self.gripper_target = self.env.validate_command(
                [positions[n] for n in self.robot.joint_names], self.gripper_target
            )
        except ValueError as exc:
            self.get_logger().error(f"arm trajectory refused: {exc}")
            return
        if self.own_chunk_seen:  # the episode's first move is in: the world moves at the next period
            self.start_hold = 0

    def on_gripper_command(self, msg: JointTrajectory) -> None:
        if self.meant_for_an_earlier_episode(msg):
            return
        if list(msg.joint_names) != [self.robot.finger_joint] or not msg.points or len(msg.points[-1].positions) != 1:
            self.get_logger().error(f"gripper trajectory refused: expected one point for ['{self.robot.finger_joint}'], "
                                    f"got {list(msg.joint_names)}")
            return
        finger = float(msg.points[-1].positions[0])
        if not np.isfinite(finger):
            self.get_logger().error("gripper trajectory refused: position is not finite")
            return
        self.gripper_target = self.robot.finger_to_gripper(finger)

    # ---------------------------------------------------------------- stepping
    def on_step(self) -> None:
        if self.episode_done() or self.waiting_for or self.start_hold:  # the world stands still, the camera streams
            if self.start_hold and not self.waiting_for:
                self.start_hold -= 1
            self.publish_observation()
            return
        started = time.perf_counter()
        self.obs = self.env.step(self.q_target, self.gripper_target)
        self.publish_observation()
        if self.episode_done():
            self.get_logger().info(
                f"episode {self.task} seed {self.seed} ended at step {self.obs['step']}: "
                f"{'success' if self.obs['success'] else 'no success'}"
            )
        elapsed = time.perf_counter() - started
        if elapsed > self.period:
            self.get_logger().warning(f"sim step took {elapsed * 1e3:.0f} ms > period {self.period * 1e3:.0f} ms")

    def header(self, frame_id: str) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id=frame_id)

    def publish_observation(self) -> None:
        # The policy node computes a chunk when a frame arrives, from the newest joint state, mask and prompt it
        # holds. So every input of this instant goes out before the frame: a frame published first can meet
        # the previous step's joints and mask, or at an episode's first step the previous episode's prompt.
        obs = self.obs
        image_header = self.header(self.camera_frame)
        joints = JointState(header=self.header(self.base_frame))
        joints.name = [*self.robot.joint_names, *self.robot.finger_names]
        finger = float(obs["gripper_position"])
        joints.position = [*map(float, obs["joint_positions"]), finger, -finger]
        self.joint_pub.publish(joints)
        if obs["masks"] is not None:
            named = obs["masks"].get(self.named_object)
            self.mask_pub.publish(mono_to_image(named if named is not None else np.zeros_like(obs["rgb"][..., 0], bool),
                                                image_header))
        if obs["step"] < 3 and not self.waiting_for:  # the first steps: late subscribers (volatile /clicked_point) still get one
            self.operator_click(image_header)
        self.image_pub.publish(rgb_to_image(obs["rgb"], image_header))
        info = CameraInfo(header=image_header)
        for key, value in self.camera.camera_info().items():
            setattr(info, key, value)
        self.info_pub.publish(info)
        episode = {
            "task": self.task, "seed": self.seed, "instruction": obs["instruction"], "target_object": obs["target_object"],
            "step": int(obs["step"]), "success": bool(obs["success"]),
            "first_reached": obs["first_reached"], "first_touched": obs["first_touched"],
            "first_lifted": obs["first_lifted"], "done": self.episode_done(),
        }
        self.episode_pub.publish(String(data=json.dumps(episode)))
        if self.chunk_pub is not None and not self.episode_done() and not self.waiting_for:
            chunk = ActionChunk(header=image_header, horizon=1, action_dim=7, dt=self.period,
                                dimension_names=DIMENSIONS, action_space="ee_delta", model_id="scripted-expert",
                                sequence=self.sequence)
            chunk.header.frame_id = self.base_frame
            chunk.actions = self.expert.act(obs).astype(np.float32).tolist()
            self.chunk_pub.publish(chunk)
            self.sequence += 1
            self.own_chunk_seen = True

    def operator_click(self, image_header: Header) -> None:
        if self.operator == "click":
            point = click_point(self.obs)
            click = PointStamped(header=self.header(self.base_frame))
            click.point.x, click.point.y, click.point.z = map(float, point)
            self.click_pub.publish(click)
        elif self.operator.startswith("prompt") and self.obs["step"] == 0:
            clicks = [(self.prompt_pub, self.obs["target_object"], "operator")]
            if self.operator == "prompt_place":
                clicks.append((self.place_pub, self.obs["destination"], "operator-place"))
            for publisher, object_id, name in clicks:
                x, y = image_xy(click_pixel(self.obs, object_id)).tolist()  # VisualPrompt's corner origin
                publisher.publish(VisualPrompt(header=image_header, type=VisualPrompt.POINT, labels=[1],
                                               points=[Point(x=x, y=y)],
                                               prompt_id=f"{name}-{self.task}-{self.seed}"))

    def publish_camera_pose(self) -> None:
        camera = self.camera
        pose = PoseStamped(header=self.header(self.base_frame))
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(float, camera.position)
        qx, qy, qz, qw = map(float, camera.quaternion_xyzw)
        pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z, pose.pose.orientation.w = qx, qy, qz, qw
        self.pose_pub.publish(pose)

    def destroy_node(self) -> None:
        self.env.close()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(SimNode, args)


if __name__ == "__main__":
    sys.exit(main())
