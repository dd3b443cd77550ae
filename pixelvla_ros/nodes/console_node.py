"""Console node: the operator's web page (pixelvla_ros.console) wired to the stack's topics.

Serves the page on http://127.0.0.1:8080/ (parameters `host`, `port`). Any address but loopback needs the
access token: `token`, or one generated at start; the address with the token is logged. The page shows the
camera with the target mask and the predicted TCP path drawn in, the prompts in force, the gripper, the policy's
and the executor's status and, in simulation, the episode; the operator in control clicks a target point,
drags a box, draws a line, marks the place, types instructions, resets the e-stop and the episode; anyone
watching may press the e-stop.

Topics (relative: a namespace moves them):
- in: camera/image_raw (SENSOR; with image_transport compressed, camera/image_raw/compressed), camera/camera_info, camera/pose (the projection of the path, as the visualizer),
  joint_states, pixelvla/action_chunk (the path, the planned gripper, inference latency p50/p95),
  pixelvla/prompt, pixelvla/place_prompt, pixelvla/mask, pixelvla/instruction, pixelvla/status (PolicyStatus),
  pixelvla/words/prompt and pixelvla/words/place_prompt (the policy's words' prompts: shown dashed while no
  target prompt is in force, until the operator accepts them, which publishes them as the prompts),
  diagnostics (the executor's "pixelvla: chunk executor" entry), sim/episode (JSON);
- out: pixelvla/prompt, pixelvla/place_prompt (VisualPrompt in image pixels, origin at the top-left pixel's
  corner, stamped with the header of the frame the operator drew on; a POINT without points clears, as the
  prompt node's ~/clear), pixelvla/instruction (String), pixelvla/estop (Bool true; COMMAND QoS: never replayed
  to a late joiner), sim/reset (String, JSON {"task", "seed"});
- service client: executor/reset_estop (std_srvs/Trigger).
The web server runs in a thread of its own; whatever a page asks for is done in this node's executor thread
(a queue and a guard condition), so every rclpy call stays in one thread.

Cost: the camera-rate topics (camera, camera info, joint states, chunks, mask) are read only while a page is
open (a console nobody watches receives none of them), and the process runs at a lower CPU priority (`nice`):
when the CPU is short, the policy and the executor come first and the pages get fewer frames (each gets the
newest frame only, so they never fall behind).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import sys
import time
from typing import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from pixelvla_ros import qos
from pixelvla_ros.camera_subscriptions import CameraSubscriptions
from pixelvla_ros.console.prompts import PromptSpec
from pixelvla_ros.console.security import access_token
from pixelvla_ros.console.server import Actions, ConsoleServer
from pixelvla_ros.console.state import (
    EXECUTOR_DIAGNOSTICS, POLICY_STATES, ConsoleState, executor_summary,
)
from pixelvla_ros.image_conversions import TRANSPORTS, CameraFrame, ImageError, image_to_mono
from pixelvla_ros.msg import ActionChunk, PolicyStatus, VisualPrompt
from pixelvla_ros.node_base import (
    ParameterMixin, joint_positions, run_node, subscribe_camera, subscribe_latched,
)
from pixelvla_ros.prompt_conversions import is_clear, words_to_accept
from pixelvla_sim.tasks import TASKS
from pixelvla_training.visualization import path_in_image, predicted_tcp_path

PROMPT_TYPES = {"point": VisualPrompt.POINT, "line": VisualPrompt.LINE, "box": VisualPrompt.BOX}
PROMPT_KINDS = {v: k for k, v in PROMPT_TYPES.items()} | {VisualPrompt.MASK: "mask"}
PROMPT_TOPICS = {"target": "pixelvla/prompt", "place": "pixelvla/place_prompt"}
WORDS_TOPICS = {"target": "pixelvla/words/prompt", "place": "pixelvla/words/place_prompt"}


class ConsoleNode(ParameterMixin, Node):
    def __init__(self) -> None:
        super().__init__("console")
        host = self.declare("host", "127.0.0.1", "address to serve on; any but loopback needs the token",
                            read_only=True)
        port = self.declare("port", 8080, "TCP port (0: a free one, logged)", minimum=0, maximum=65535, read_only=True)
        token = self.declare("token", "", "access token; empty: none on loopback, else one is generated and logged",
                             read_only=True)
        max_fps = self.declare("max_fps", 10.0, "camera frames per second to each page at most", minimum=0.5,
                               maximum=60.0)
        quality = self.declare("jpeg_quality", 80, "JPEG quality of the frames", minimum=1, maximum=95)
        grace = self.declare("control_grace", 5.0, "s a page whose connection dropped keeps control", minimum=0.0)
        self.robot = self.declare_robot()
        self.joint_names = list(self.declare("joint_names", list(self.robot.joint_names), "arm joints, kinematics order"))
        self.gripper_joint = self.declare("gripper_joint", self.robot.finger_joint, "finger joint that shows the gripper")
        reset_service = self.declare("reset_estop_service", "executor/reset_estop", "the executor's e-stop reset")
        self.transport = self.declare("image_transport", "raw", "raw: sensor_msgs/Image on the camera topic; "
                                      "compressed: JPEG/PNG on <topic>/compressed", read_only=True, choices=TRANSPORTS)
        nice = self.declare("nice", 10, "CPU priority of this process, added to the current one (0: unchanged)",
                            minimum=0, maximum=19, read_only=True)
        if nice:
            os.nice(nice)

        self.state = ConsoleState(tasks=sorted(TASKS))
        self.joints: np.ndarray | None = None
        self.prompt_count = 0
        self.words: dict[str, VisualPrompt | None] = {"target": None, "place": None}  # the policy's proposals
        self.work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()  # from the server's thread
        self.wakeup = self.create_guard_condition(self.do_work)

        self.prompt_pubs = {marks: self.create_publisher(VisualPrompt, topic, qos.LATCHED)
                            for marks, topic in PROMPT_TOPICS.items()}
        self.instruction_pub = self.create_publisher(String, "pixelvla/instruction", qos.LATCHED)
        self.estop_pub = self.create_publisher(Bool, "pixelvla/estop", qos.COMMAND)
        self.reset_pub = self.create_publisher(String, "sim/reset", qos.COMMAND)
        self.reset_client = self.create_client(Trigger, reset_service)
        self.watching: list = []  # the subscriptions of high-rate topics, while a page is open
        self.camera_topics = CameraSubscriptions(self, camera_info=False)  # the info only while watched
        self.create_subscription(DiagnosticArray, "diagnostics", self.on_diagnostics, 10)
        for marks, topic in PROMPT_TOPICS.items():
            subscribe_latched(self, VisualPrompt, topic, lambda m, marks=marks: self.on_prompt(marks, m))
        for marks, topic in WORDS_TOPICS.items():
            subscribe_latched(self, VisualPrompt, topic, lambda m, marks=marks: self.on_words(marks, m))
        subscribe_latched(self, String, "pixelvla/instruction", lambda m: self.state.add_instruction(m.data))
        subscribe_latched(self, PolicyStatus, "pixelvla/status", self.on_status)
        subscribe_latched(self, String, "sim/episode", self.on_episode)

        actions = Actions(publish_prompt=self.publish_prompt, clear_prompts=lambda: self.in_ros(self.clear_prompts),
                          publish_instruction=self.publish_instruction, estop=lambda: self.in_ros(self.estop),
                          reset_estop=self.reset_estop, sim_reset=self.sim_reset,
                          accept_words=lambda: self.in_ros(self.accept_words),
                          pages=lambda count: self.in_ros(lambda: self.watch(count > 0)))
        self.server = ConsoleServer(self.state, actions, host=host, port=port, token=access_token(host, token),
                                    max_fps=max_fps, jpeg_quality=quality, control_grace=grace)
        try:
            url = self.server.start()
        except OSError as exc:
            raise RuntimeError(f"the console cannot listen on {host}:{port} ({exc.strerror or exc}): set the port "
                               "parameter (console_port:=... in the launch sets), or console:=false") from None
        self.get_logger().info(f"operator console: {url}")

    def on_stop(self) -> None:
        """Shutdown (node_base.run_node): close the pages' connections and join the server thread."""
        self.server.stop()

    # ---------------------------------------------------------------- requests from the page (server thread)
    def in_ros(self, work: Callable[[], None]) -> None:
        """Run `work` in the node's executor thread, at once (the guard condition wakes the executor)."""
        self.work.put(work)
        self.wakeup.trigger()

    def watch(self, on: bool) -> None:
        """Read the camera-rate topics only while a page is open (the mask is latched: it comes at once)."""
        if on and not self.watching:
            self.watching = [
                subscribe_camera(self, "camera/image_raw", self.transport, self.on_image),
                self.camera_topics.subscribe_info(),
                self.create_subscription(JointState, "joint_states", self.on_joint_state, qos.SENSOR),
                self.create_subscription(ActionChunk, "pixelvla/action_chunk", self.on_chunk, qos.COMMAND),
                *subscribe_latched(self, Image, "pixelvla/mask", self.on_mask)]
        elif not on and self.watching:
            for subscription in self.watching:
                self.destroy_subscription(subscription)
            self.watching = []
            self.state.update(frame=None, mask=None, bump=False)  # a page opened later never sees an old frame

    def do_work(self) -> None:
        while True:
            try:
                work = self.work.get_nowait()
            except queue.Empty:
                return
            work()

    def publish_prompt(self, spec: PromptSpec, frame: dict) -> None:
        def publish() -> None:
            self.prompt_count += 1
            msg = VisualPrompt(type=PROMPT_TYPES[spec.kind], points=[Point(x=x, y=y) for x, y in spec.points],
                               labels=list(spec.labels), prompt_id=f"console-{self.prompt_count}")
            msg.header.stamp.sec, msg.header.stamp.nanosec = frame["stamp"]
            msg.header.frame_id = frame["frame_id"]
            self.prompt_pubs[spec.marks].publish(msg)
            self.on_prompt(spec.marks, msg)  # on the page at once (the subscription's copy comes a moment later)
            self.get_logger().info(f"{msg.prompt_id}: {spec.kind} on the {spec.marks} at "
                                   f"{[(round(x, 1), round(y, 1)) for x, y in spec.points]}")
        self.in_ros(publish)

    def publish_instruction(self, text: str) -> None:
        self.in_ros(lambda: self.instruction_pub.publish(String(data=text)))

    def sim_reset(self, request: dict) -> None:
        self.in_ros(lambda: self.reset_pub.publish(String(data=json.dumps(request))))

    def clear_prompts(self) -> None:
        self.prompt_count += 1
        clear = VisualPrompt(type=VisualPrompt.POINT, prompt_id=f"console-clear-{self.prompt_count}")
        clear.header.stamp = self.get_clock().now().to_msg()
        for marks, pub in self.prompt_pubs.items():
            pub.publish(clear)
            self.state.set_prompt(marks, None)

    def accept_words(self) -> None:
        """Publish the policy's words' prompts as the prompts, as they are (drawn on the frame they came from); the
        place with them only when it was proposed on the same frame."""
        proposals = words_to_accept(self.words["target"], self.words["place"])
        if not proposals:
            return
        self.prompt_count += 1
        for on_place, msg in proposals:
            marks = "place" if on_place else "target"
            accepted = VisualPrompt(header=msg.header, type=msg.type, points=msg.points, labels=msg.labels,
                                    prompt_id=f"console-words-{self.prompt_count}")
            self.prompt_pubs[marks].publish(accepted)
            self.on_prompt(marks, accepted)
        self.get_logger().info(f"console-words-{self.prompt_count}: the words' prompts accepted")

    def estop(self) -> None:
        self.estop_pub.publish(Bool(data=True))
        self.get_logger().warning("E-STOP pressed on the console")

    def reset_estop(self) -> concurrent.futures.Future:
        """The executor's ~/reset_estop; the future resolves to (success, message)."""
        result: concurrent.futures.Future = concurrent.futures.Future()

        def settle(value: tuple[bool, str]) -> None:
            try:
                result.set_result(value)
            except concurrent.futures.InvalidStateError:  # the page stopped waiting
                pass

        def on_response(future) -> None:
            response = future.result()
            settle((bool(response.success), response.message or "e-stop reset"))

        def call() -> None:
            if not self.reset_client.service_is_ready():
                settle((False, f"no service {self.reset_client.srv_name}: is the executor running?"))
                return
            self.reset_client.call_async(Trigger.Request()).add_done_callback(on_response)

        self.in_ros(call)
        return result

    # ---------------------------------------------------------------- the stack's topics
    def on_image(self, msg: Image | CompressedImage) -> None:
        try:
            frame = CameraFrame.received(msg)  # checked here, decoded when a page shows it
        except ImageError as exc:
            self.report("camera", str(exc))
            return
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self.state.put_frame(frame, stamp, msg.header.frame_id, time.monotonic())
        self.server.notify()

    def on_joint_state(self, msg: JointState) -> None:
        joints = joint_positions(msg, self.joint_names)
        if joints is not None:
            self.joints = joints
        finger = dict(zip(msg.name, msg.position)).get(self.gripper_joint)
        if finger is not None and np.isfinite(finger) and self.robot.has_kinematics:
            opening = round(self.robot.finger_to_gripper(finger), 2)
            if opening != self.state.gripper["measured"]:  # joint states come at 50 Hz or more: changes only
                self.state.update(gripper={**self.state.gripper, "measured": opening})

    def on_chunk(self, msg: ActionChunk) -> None:
        self.state.add_inference_latency(msg.inference_latency)
        if msg.action_dim != 7 or len(msg.actions) != msg.horizon * 7 or msg.horizon == 0:
            return
        actions = np.asarray(msg.actions, dtype=float).reshape(msg.horizon, 7)
        if not np.all(np.isfinite(actions)):
            return
        self.state.update(gripper={**self.state.gripper, "planned": round(float(actions[0, 6]), 2)})
        camera = self.camera_topics.camera()
        if self.joints is not None and camera is not None and self.robot.has_kinematics:
            self.state.update(path_xy=path_in_image(camera, predicted_tcp_path(self.joints, actions, self.robot.fk)), bump=False)

    def on_prompt(self, marks: str, msg: VisualPrompt, proposed: bool = False) -> None:
        prompt = None if is_clear(msg) else {"kind": PROMPT_KINDS.get(msg.type, "?"), "id": msg.prompt_id,
                                             "points": [[p.x, p.y] for p in msg.points]}
        self.state.set_prompt(marks, prompt, proposed)
        self.server.notify()

    def on_words(self, marks: str, msg: VisualPrompt) -> None:
        self.words[marks] = None if is_clear(msg) else msg
        self.on_prompt(marks, msg, proposed=True)

    def on_mask(self, msg: Image) -> None:
        try:
            mask = image_to_mono(msg) > 0
        except ImageError as exc:
            self.report("mask", str(exc))
            return
        self.state.update(mask=mask if mask.any() else None, bump=False)

    def on_status(self, msg: PolicyStatus) -> None:
        fields = ("model_id", "backend", "last_latency", "mean_latency", "p99_latency", "frames_received", "frames_used",
                  "frames_dropped", "last_error", "waiting_for", "camera_rate", "frames_lost", "last_frame_age")
        status = {name: getattr(msg, name) for name in fields if hasattr(msg, name)}  # older messages lack some
        status["state"] = POLICY_STATES[msg.state] if msg.state < len(POLICY_STATES) else str(msg.state)
        self.state.update(policy=status, policy_received=time.monotonic())
        self.server.notify()

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == EXECUTOR_DIAGNOSTICS:
                level = status.level[0] if isinstance(status.level, bytes) else int(status.level)
                summary = executor_summary(level, status.message, {kv.key: kv.value for kv in status.values})
                self.state.update(executor=summary, executor_received=time.monotonic())
                self.server.notify()

    def on_episode(self, msg: String) -> None:
        try:
            episode = json.loads(msg.data)
        except ValueError:
            self.report("sim/episode", f"not JSON: {msg.data[:80]!r}")
            return
        self.state.update(episode=episode if isinstance(episode, dict) else None)
        self.server.notify()

    def report(self, source: str, text: str) -> None:
        self.get_logger().warning(f"{source}: {text}", throttle_duration_sec=5.0)
        self.state.add_error(source, text, time.time())


def main(args=None) -> int:
    return run_node(ConsoleNode, args)


if __name__ == "__main__":
    sys.exit(main())
