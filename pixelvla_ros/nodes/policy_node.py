"""Policy node (managed): camera image + instruction (+ visual prompt, target mask) -> ActionChunk.

Lifecycle: configure loads the model (a `from_pretrained` directory, an engine bundle, or with no
`model_path` the default model); activate starts inference; deactivate stops it; cleanup unloads.
With `autostart` (default) the node configures and activates itself.

Latest frame only (pixelvla_ros.latest_frame): the image callback keeps one slot; a frame that is replaced
before the worker thread takes it is counted as dropped, so a slow model never works through a backlog.
Inference runs in that worker thread, at most once every `steps_per_inference` / `control_rate_hz` s (rate 0:
as fast as the model allows); the executor runs that many actions of each chunk, one per control period. Each
chunk carries its image's stamp. Inputs are checked when they arrive, against the loaded model
(pixelvla_ros.policy_inputs): an unsupported or malformed image, an empty instruction or one longer than the
model's token limit, a prompt the model cannot take (NaN, outside the image, more points than
config.max_prompts with the place prompt, a place prompt for a model without them), a mask of another size
than the camera's. Each is refused once with a log line and an ERROR PolicyStatus; the previous instruction,
prompt or mask stays in force, and nothing is published from a refused image.

A target mask is used only with a frame whose stamp is within `max_mask_lag` s of the mask's (the stamp of the
image the segmenter computed it from): behind a lagging segmenter, the node holds (no chunk from a misaligned
target) and PolicyStatus.waiting_for says so, until a mask for a recent frame arrives or the mask is cleared.
The simulator's ground-truth mask (/sim/target_mask) carries each frame's stamp, so it always passes.

Device and dtype: `device` ("cpu", "cuda", "cuda:N"; empty: cuda for tensorrt, cpu otherwise) is selected for
every backend before the model loads; `dtype` (bfloat16, float16, float32; empty: float32 for torch) is what the
torch backend runs in; a bundle runs in the precision it was made in, and another dtype is refused. A model whose
weights do not fit the GPU's free memory is refused at start-up (pixelvla_model.runtime.devices).

A model that reads the robot state (config.proprio_dim > 0) gets the latest /joint_states: the positions
of `joint_names` then `gripper_joint`, the dataset convention it was trained with. It does not run while
the newest complete joint state is missing, holds NaN/inf or is older than `max_joint_state_age`, and
refuses at configure a model whose state width does not match. While it waits for an input (a frame, an
instruction, a usable joint state) PolicyStatus.waiting_for says which, and diagnostics report a WARN.

A model that reads where the prompts are from the gripper (config.prompt_offsets) places them in the base frame
itself (the target mask's centroid, else the prompt's pixel, and the place prompt's pixel, or the clicks its
words make), given the map from a click to the TCP: a pixel's ray met with the plane at `prompt_plane_z`,
through the calibration on /camera/camera_info and /camera/pose, minus the TCP from /joint_states (forward
kinematics of `robot_model`). It does not run until both are known.

Camera: raw (sensor_msgs/Image) or, with `image_transport` compressed, JPEG/PNG on `<topic>/compressed`
as image_transport publishes it. The image callback only checks a frame's header; the worker converts or
decodes the frame it takes (and the model resizes it), so a 30 Hz camera costs 5 conversions a second at
5 Hz. The frame rate is estimated from the image stamps and the frames that never arrived are counted
(PolicyStatus camera_rate, frames_lost), with the age of the frame each chunk was computed from.

The words' prompts (`propose_words`, models with text grounding on the torch backend): after each instruction
message, while no target prompt and no target mask are in force, the next inference first publishes where the
instruction's words point in its frame: a BOX one patch wide on the target (for a segmenter: the object inside
it) on /pixelvla/words/prompt and, for models with place prompts, a place POINT on
/pixelvla/words/place_prompt (published first), stamped with that frame. They are proposals: nothing uses them
until an operator accepts them by publishing them as the prompts (the console, or the sim node's "words"
operator stand-in). Meanwhile the chunks are computed from the instruction alone.

Instruction, prompts and mask are received from latched publishers (a late-joining node gets their last
value) and from volatile ones (`ros2 topic pub`) alike: node_base.subscribe_latched. On shutdown the
inference thread is joined before the node is destroyed (on_stop).

Topics: /camera/image_raw (or /camera/image_raw/compressed), /pixelvla/instruction (String), /pixelvla/prompt (VisualPrompt; a POINT
prompt without points clears it), /pixelvla/place_prompt (VisualPrompt: where the target goes, for models
trained with place prompts; cleared the same way), /pixelvla/mask (mono8, the segmenter's target mask),
/joint_states, /camera/camera_info and /camera/pose (models with prompt offsets) in;
/pixelvla/action_chunk, /pixelvla/status (PolicyStatus, 1 Hz and on errors), /diagnostics, /pixelvla/words/prompt
and /pixelvla/words/place_prompt (latched) out.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header, String

from pixelvla_model import DEFAULT_CHECKPOINT, DEFAULT_CHECKPOINT_NOTE, PixelVLAConfig
from pixelvla_ros import qos
from pixelvla_ros.camera_subscriptions import CameraSubscriptions
from pixelvla_ros.image_conversions import TRANSPORTS, CameraFrame, ImageError, image_to_mono
from pixelvla_ros.latest_frame import LatestFrameWorker
from pixelvla_ros.msg import ActionChunk, PolicyStatus, VisualPrompt
from pixelvla_ros.node_base import ParameterMixin, joint_positions, run_node, stamp_seconds, subscribe_camera, subscribe_latched
from pixelvla_ros.policy_inputs import CameraRate, InputError, ModelLimits, PolicyInputs, PromptPlacing
from pixelvla_ros.prompt_conversions import is_clear, msg_from_prompt

DIMENSIONS = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
LATENCY_WINDOW = 200


class PolicyNode(ParameterMixin, LifecycleNode):
    def __init__(self) -> None:
        super().__init__("policy")
        self.model_path = self.declare(
            "model_path", "", "model directory or engine bundle; empty = the shipped checkpoint; 'untrained' = random weights")
        self.backend = self.declare("backend", "torch", "torch (checkpoint dir), onnxruntime or tensorrt (engine bundle)")
        self.expected_chunk_size = self.declare("expected_chunk_size", 0, "refuse a model with another chunk size (0: any)", minimum=0)
        self.expected_weights = self.declare("expected_weights_sha256", "", "refuse a bundle exported from other weights (empty: any)")
        self.device = self.declare("device", "", "cpu, cuda or cuda:N, every backend (empty: cuda for tensorrt, "
                                   "cpu otherwise)")
        self.dtype = self.declare("dtype", "", "bfloat16, float16 or float32: what the torch backend runs in (empty: "
                                  "float32); a bundle runs in its own precision and refuses another",
                                  choices=["", "bfloat16", "float16", "float32"])
        self.verify_hashes = self.declare("verify_hashes", False, "sha256 of every bundle file at load, not only of "
                                          "the engine or graph that runs (sizes are always checked)")
        self.threads = self.declare("threads", 0, "CPU threads of the runtime (0: its default); pin on shared computers", minimum=0)
        self.default_preset = self.declare("default_preset", "tiny", "config preset of the untrained default model")
        unnorm = self.declare("unnorm_key", "", "dataset statistics to un-normalise actions with (empty: the only one)")
        self.unnorm_key = unnorm or None
        rate = self.declare("control_rate_hz", 5.0, "actions per second; 0 = chunks as fast as the model allows", minimum=0.0)
        self.steps_per_inference = self.declare(
            "steps_per_inference", 1, "control periods per chunk: the policy runs once every this many periods and "
            "the executor runs as many of each chunk's actions (at most the model's chunk size)", minimum=1)
        self.action_period = 1.0 / rate if rate > 0 else 0.0  # s between a chunk's actions (its dt)
        self.min_period = self.action_period * self.steps_per_inference
        self.base_frame = self.declare("base_frame", "wx250s/base_link", "frame the actions are expressed in")
        instruction = self.declare("instruction", "", "initial instruction (the topic overrides it)")
        robot = self.declare_robot()
        self.state_joints = list(self.declare(
            "joint_names", list(robot.joint_names),
            "arm joints whose positions (then the gripper's) form the robot state of models that read it"))
        self.state_joints.append(self.declare("gripper_joint", robot.finger_joint, "gripper joint, last value of the robot state"))
        max_state_age = self.declare("max_joint_state_age", 1.0, "s: a model that reads the robot state does not run "
                                     "on a joint state older than this (header stamp, or arrival if unstamped)",
                                     minimum=0.0)
        max_mask_lag = self.declare("max_mask_lag", 0.5, "s: a target mask is used only with a frame stamped within "
                                    "this of the image it was computed from (its header stamp)", minimum=0.0)
        transport = self.declare("image_transport", "raw", "raw: sensor_msgs/Image on the camera topic; compressed: "
                                 "CompressedImage (JPEG/PNG) on <camera topic>/compressed", read_only=True, choices=TRANSPORTS)
        plane_z = self.declare("prompt_plane_z", 0.018, "m, base frame: the height the centres of the objects an "
                               "operator clicks rest at; models with prompt offsets place clicks on this plane")
        self.propose_words = self.declare(
            "propose_words", True, "models with text grounding, torch backend: after each instruction, while no target "
            "prompt or mask is in force, publish where its words point (pixelvla/words/prompt, a box on the target; "
            "pixelvla/words/place_prompt) for an operator to accept")
        autostart = self.declare("autostart", True, "configure and activate at start-up")

        self.policy = None
        self.model_id = ""
        self.running_backend = ""  # the loaded runtime's backend
        self.active = False
        self.lock = threading.Lock()  # guards the frame slot, inputs, camera and active between callbacks and the worker
        # the newest frame (checked, decoded only if the model takes it) and the inference thread
        self.worker = LatestFrameWorker(self.lock, min_period=self.min_period, name="inference",
                                        ready=lambda: not self.inputs.blocking(self.now()),
                                        take=lambda: self.inputs.snapshot(),
                                        run=lambda frame, inputs: self.run_once(frame, *inputs))
        # the calibration; its camera-rate info only for a model that places prompts (on_configure)
        self.camera_topics = CameraSubscriptions(self, camera_info=False, base_frame=self.base_frame)
        self.camera_info_subscription = None
        placing = None
        if robot.has_kinematics:
            arm = len(self.state_joints) - 1  # the state's arm joints; the gripper is last
            placing = PromptPlacing(self.camera_topics.camera, lambda state: robot.fk(state[:arm])[0], plane_z)
        self.inputs = PolicyInputs(self.state_joints, max_state_age, max_mask_lag, placing, self.steps_per_inference)
        if instruction:
            self.inputs.set_instruction(instruction)  # checked against the model at configure
        self.camera = CameraRate()
        self.sequence = 0
        self.words_sequence = 0  # words' proposals published
        self.words_reason = "no model loaded"  # why no words' prompts are proposed ("": they are)
        self.counters = {"received": 0, "used": 0, "dropped": 0}
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.last_frame_age = math.nan  # s, of the image the last chunk was computed from, when it went out
        self.last_error = ""
        self.told_waiting = ""  # the waiting reason last logged

        self.chunk_pub = self.create_publisher(ActionChunk, "pixelvla/action_chunk", qos.COMMAND)
        self.words_pubs = {place: self.create_publisher(VisualPrompt, f"pixelvla/words/{'place_' if place else ''}prompt",
                                                        qos.LATCHED) for place in (False, True)}
        self.status_pub = self.create_publisher(PolicyStatus, "pixelvla/status", qos.LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        subscribe_camera(self, "camera/image_raw", transport, self.on_image)
        subscribe_latched(self, String, "pixelvla/instruction", self.on_instruction)
        subscribe_latched(self, VisualPrompt, "pixelvla/prompt", lambda msg: self.on_prompt(msg, place=False))
        subscribe_latched(self, VisualPrompt, "pixelvla/place_prompt", lambda msg: self.on_prompt(msg, place=True))
        subscribe_latched(self, Image, "pixelvla/mask", self.on_mask)
        self.create_subscription(JointState, "joint_states", self.on_joint_state, qos.SENSOR)
        self.create_timer(1.0, self.publish_status)
        if autostart:
            self.trigger_configure()
            if self.policy is None:
                raise RuntimeError(f"could not load the model: {self.last_error}")
            self.trigger_activate()

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.policy, self.model_id = self.load_policy()
        except Exception as exc:  # noqa: BLE001 - BundleError, OSError, ValueError...: all mean "cannot run this model"
            self.report_error(f"loading {self.model_path or 'the default model'} failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        try:
            with self.lock:
                refused = self.inputs.set_model(ModelLimits.of(self.policy))
        except InputError as exc:
            self.report_error(str(exc))
            self.policy = None
            return TransitionCallbackReturn.FAILURE
        if self.policy.config.prompt_offsets and self.camera_info_subscription is None:
            self.camera_info_subscription = self.camera_topics.subscribe_info()
        self.running_backend = self.policy.runtime.describe()["backend"]  # reported: what runs, not what was asked
        self.words_reason = self.policy.words_unavailable()
        if self.words_reason and self.propose_words:
            self.get_logger().info(f"no words' prompts: {self.words_reason}")
        self.get_logger().info(f"loaded {self.model_id} ({self.running_backend})")
        for reason in refused:
            self.report_error(reason)
        return TransitionCallbackReturn.SUCCESS

    def load_policy(self):
        """(policy with predict(image, instruction, prompts, mask, unnorm_key), model id) per the parameters."""
        model_path = self.model_path
        if not model_path and self.backend != "torch":
            raise ValueError(f"backend {self.backend!r} needs model_path:=<engine bundle> (made by pixelvla-export)")
        if model_path == "untrained" and self.backend != "torch":
            raise ValueError(f"model_path:=untrained builds random torch weights in this process: it runs on backend "
                             f"torch, not {self.backend!r} (for {self.backend}, pass an engine bundle made by pixelvla-export)")
        # torch and transformers load here, with the model, not when the node starts
        from pixelvla_model import PixelVLAPolicy
        from pixelvla_model.runtime import Expectation, load_policy

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        if not model_path and DEFAULT_CHECKPOINT.is_dir():
            self.get_logger().warning(f"no model_path: running the shipped {DEFAULT_CHECKPOINT.name} checkpoint, "
                                      f"{DEFAULT_CHECKPOINT_NOTE}")
            model_path = str(DEFAULT_CHECKPOINT)
        if model_path in ("", "untrained"):
            self.get_logger().warning(
                f"running an UNTRAINED {self.default_preset!r} model with random weights; "
                "its actions are meaningless - pass model_path:=<dir> for a real policy"
            )
            # Statistics of Bridge's scale (a few cm, a few degrees per step) under the configured key,
            # so the untrained model moves the arm gently and unnorm_key works as for a real model.
            key = self.unnorm_key or "untrained"
            stats = {key: {"action": {"q01": [-0.03] * 3 + [-0.1] * 3 + [0.0], "q99": [0.03] * 3 + [0.1] * 3 + [1.0],
                                      "mask": [True] * 6 + [False]}}}
            policy = PixelVLAPolicy.from_config(PixelVLAConfig.from_preset(self.default_preset), seed=0, norm_stats=stats)
            return policy, f"untrained-{self.default_preset}"
        expect = Expectation(chunk_size=self.expected_chunk_size or None, action_dim=7,
                             weights_sha256=self.expected_weights or None)
        policy = load_policy(model_path, backend=self.backend, device=self.device or None, dtype=self.dtype or None,
                             expect=expect, threads=self.threads or None, verify_hashes=self.verify_hashes)
        return policy, policy.runtime.describe().get("model_id") or Path(model_path).resolve().name

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self.lock:
            self.active = True
            self.camera = CameraRate()
        self.worker.start()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop_worker()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop_worker()
        self.policy = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop_worker()
        return TransitionCallbackReturn.SUCCESS

    def on_stop(self) -> None:
        """run_node: the process is stopping; the inference thread must end before the node is destroyed."""
        self.stop_worker()

    def stop_worker(self) -> None:
        """Stop the inference thread and wait for it: it finishes the chunk it is computing. Never given up
        on: a thread left inside torch makes the interpreter abort at exit, and a second worker must not start."""
        with self.lock:
            self.active = False
        self.worker.stop(on_slow=lambda: self.get_logger().warning("waiting for the running inference to finish"))

    # ---------------------------------------------------------------- inputs
    def now(self) -> float:
        """s, node clock (the clock image and joint-state stamps are on)."""
        return self.get_clock().now().nanoseconds * 1e-9

    def on_image(self, msg) -> None:
        """Image or CompressedImage: checked here (header only), decoded by the worker if it uses it."""
        self.counters["received"] += 1
        with self.lock:
            self.camera.add(stamp_seconds(msg.header.stamp))  # a refused image arrived all the same
        try:
            frame = CameraFrame.received(msg)
        except ImageError as exc:
            self.counters["dropped"] += 1
            self.report_error(f"image refused: {exc}")
            return
        with self.lock:
            refused = self.inputs.frame_arrived((frame.height, frame.width), self.now(), stamp_seconds(msg.header.stamp))
            if self.worker.put(frame):
                self.counters["dropped"] += 1  # replaced before the model got to it
        for reason in refused:
            self.report_error(reason)

    def on_instruction(self, msg: String) -> None:
        try:
            with self.lock:
                previous = self.inputs.instruction
                text = self.inputs.set_instruction(msg.data)
        except InputError as exc:
            kept = f"; keeping {previous!r}" if previous else ""
            self.report_error(f"instruction refused: {exc}{kept}")
            return
        if text != previous:  # `ros2 topic pub` repeats its message every second
            self.get_logger().info(f"instruction: {text!r}")

    def on_prompt(self, msg: VisualPrompt, place: bool) -> None:
        name = "place prompt" if place else "prompt"
        try:
            with self.lock:
                previous = self.inputs.prompts.msg[place]
                self.inputs.set_prompt(msg, place)
        except ValueError as exc:  # PromptError
            self.report_error(f"{name} refused: {exc}; the previous {name} (if any) stays in force")
            return
        if msg != previous:
            self.get_logger().info(f"{name} cleared" if is_clear(msg) else f"{name} {msg.prompt_id!r} received")

    def on_mask(self, msg: Image) -> None:
        try:
            mask = image_to_mono(msg) > 0
            with self.lock:
                self.inputs.set_mask(mask, stamp_seconds(msg.header.stamp))
        except ValueError as exc:  # ImageError, InputError
            self.report_error(f"mask refused: {exc}")

    def on_joint_state(self, msg: JointState) -> None:
        positions = joint_positions(msg, self.state_joints, finite=False)  # NaN/inf kept: they block the model
        if positions is None:
            return  # not all of our joints: another publisher's (e.g. a gripper driver's own)
        stamp = stamp_seconds(msg.header.stamp) or self.now()  # unstamped: measured on arrival
        with self.lock:
            self.inputs.set_state(positions, stamp)

    # ---------------------------------------------------------------- inference
    def run_once(self, frame: CameraFrame, instruction: str, prompts: list, mask: np.ndarray | None,
                 state: np.ndarray | None, click_map: np.ndarray | None, propose_words: bool) -> None:
        """One chunk from `frame` with the inputs in force (PolicyInputs.snapshot: already checked), and the words'
        prompts first when they are due."""
        try:
            rgb = frame.rgb  # the one conversion (or JPEG/PNG decode) of this frame, off the image callback
        except ImageError as exc:
            self.report_error(f"image refused: {exc}")
            return
        if propose_words and self.propose_words and not self.words_reason:
            self.publish_words_prompts(rgb, instruction, frame.header)
        started = time.perf_counter()
        try:
            actions = self.policy.predict(rgb, instruction, prompts=prompts or None, mask=mask,
                                          unnorm_key=self.unnorm_key, proprio=state, click_to_tcp=click_map)
        except (ValueError, RuntimeError) as exc:
            self.report_error(f"inference failed: {exc}")
            return
        latency = time.perf_counter() - started
        if not np.all(np.isfinite(actions)):
            self.report_error("the model produced NaN/inf actions: chunk not published")
            return
        chunk = ActionChunk(
            header=Header(stamp=frame.header.stamp, frame_id=self.base_frame),
            horizon=actions.shape[0], action_dim=actions.shape[1], dt=self.action_period or 0.2,
            actions=actions.astype(np.float32).ravel().tolist(), dimension_names=DIMENSIONS,
            action_space="ee_delta", model_id=self.model_id, inference_latency=latency, sequence=self.sequence,
        )
        self.chunk_pub.publish(chunk)
        stamp = stamp_seconds(frame.header.stamp)
        self.last_frame_age = self.now() - stamp if stamp > 0 else math.nan
        self.sequence += 1
        self.counters["used"] += 1
        self.latencies.append(latency)

    def publish_words_prompts(self, rgb: np.ndarray, instruction: str, header: Header) -> None:
        """Where the words of `instruction` point in this frame, as prompts drawn on it: the place prompt first,
        so that an operator who accepts on the target's has both."""
        try:
            target, *place = self.policy.words_prompts(rgb, instruction)
        except (ValueError, RuntimeError) as exc:
            self.report_error(f"words' prompts failed: {exc}")
            return
        self.words_sequence += 1
        for is_place, prompt in [*((True, p) for p in place), (False, target)]:
            name = "words-place" if is_place else "words"
            self.words_pubs[is_place].publish(msg_from_prompt(prompt, header, f"{name}-{self.words_sequence}"))

    # ---------------------------------------------------------------- status
    def report_error(self, text: str) -> None:
        self.last_error = text
        self.get_logger().error(text)
        self.publish_status(PolicyStatus.ERROR)

    def publish_status(self, state: int | None = None) -> None:
        if state is None:
            state = PolicyStatus.ACTIVE if self.active else PolicyStatus.INACTIVE if self.policy else PolicyStatus.UNCONFIGURED
        with self.lock:  # report_error calls this from the worker thread too
            waiting = self.inputs.waiting_for(self.now()) if self.active else ""
            camera_rate, frames_lost = self.camera.rate, self.camera.lost
        if waiting and waiting != self.told_waiting:
            self.get_logger().warning(f"waiting for {waiting}")
        self.told_waiting = waiting
        latencies = np.array(self.latencies) if self.latencies else np.zeros(1)
        status = PolicyStatus(
            state=state, backend=self.running_backend if self.policy else "", model_id=self.model_id,
            last_latency=float(latencies[-1]), mean_latency=float(latencies.mean()),
            p99_latency=float(np.percentile(latencies, 99)), frames_received=self.counters["received"],
            frames_used=self.counters["used"], frames_dropped=self.counters["dropped"], last_error=self.last_error,
            waiting_for=waiting, camera_rate=camera_rate, frames_lost=frames_lost, last_frame_age=self.last_frame_age,
        )
        status.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(status)
        if state == PolicyStatus.ERROR:
            level, message = DiagnosticStatus.ERROR, self.last_error
        elif waiting:
            level, message = DiagnosticStatus.WARN, f"waiting for {waiting}"
        elif state == PolicyStatus.ACTIVE:
            level, message = DiagnosticStatus.OK, "ok"
        else:
            level, message = DiagnosticStatus.WARN, "inactive" if self.policy else "no model loaded"
        diag = DiagnosticStatus(level=level, name="pixelvla: policy", hardware_id=self.get_name(), message=message)
        values = {**self.counters, "frames_lost": frames_lost, "camera_rate_hz": f"{camera_rate:.2f}",
                  "last_frame_age_s": f"{self.last_frame_age:.3f}", "model_id": self.model_id,
                  "mean_latency_s": status.mean_latency, "waiting_for": waiting}
        diag.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[diag])
        array.header.stamp = status.header.stamp
        self.diag_pub.publish(array)


def main(args=None) -> int:
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    sys.exit(main())
