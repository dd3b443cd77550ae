"""Policy node (managed): camera image + instruction (+ visual prompt, target mask) -> ActionChunk.

Lifecycle: configure loads the model (a `from_pretrained` directory, an engine bundle, or with no
`model_path` the default model); activate starts inference; deactivate stops it; cleanup unloads.
With `autostart` (default) the node configures and activates itself.

Latest frame only: the image callback keeps one slot; a frame that is replaced before the worker
thread takes it is counted as dropped, so a slow model never works through a backlog. Inference
runs in that worker thread, at most `control_rate_hz` times per second (0: as fast as the model
allows). Each chunk carries its image's stamp. Bad input (an unsupported or malformed image, an
empty or oversized instruction, an invalid prompt or mask) is refused with a log line and a
PolicyStatus; nothing is published from it.

A model that reads the robot state (config.proprio_dim > 0) gets the latest /joint_states: the positions
of `joint_names` then `gripper_joint`, the dataset convention it was trained with. It waits for the first
complete joint state before it runs, and refuses at configure a model whose state width does not match.

Topics: /camera/image_raw, /pixelvla/instruction (String), /pixelvla/prompt (VisualPrompt; a POINT
prompt without points clears it), /pixelvla/place_prompt (VisualPrompt: where the target goes, for models
trained with place prompts; cleared the same way), /pixelvla/mask (mono8, the segmenter's target mask),
/joint_states in;
/pixelvla/action_chunk, /pixelvla/status (PolicyStatus, 1 Hz and on errors), /diagnostics out.
"""
from __future__ import annotations

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

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import Frame, ImageError, image_to_mono, image_to_rgb
from pixelvla_ros.msg import ActionChunk, PolicyStatus, VisualPrompt
from pixelvla_ros.node_base import ParameterMixin, joint_positions, run_node
from pixelvla_ros.prompt_conversions import PromptError, is_clear, prompt_from_msg
from pixelvla_training.robots import wx250s

DIMENSIONS = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
MAX_INSTRUCTION_CHARS = 512
LATENCY_WINDOW = 200


class PolicyNode(ParameterMixin, LifecycleNode):
    def __init__(self) -> None:
        super().__init__("policy")
        self.model_path = self.declare(
            "model_path", "", "model directory or engine bundle; empty = the shipped checkpoint; 'untrained' = random weights")
        self.backend = self.declare("backend", "torch", "torch (checkpoint dir), onnxruntime or tensorrt (engine bundle)")
        self.expected_chunk_size = self.declare("expected_chunk_size", 0, "refuse a model with another chunk size (0: any)", minimum=0)
        self.expected_weights = self.declare("expected_weights_sha256", "", "refuse a bundle exported from other weights (empty: any)")
        self.device = self.declare("device", "cpu", "torch device for the torch backend (cpu, cuda, cuda:1)")
        self.threads = self.declare("threads", 0, "CPU threads of the runtime (0: its default); pin on shared computers", minimum=0)
        self.default_preset = self.declare("default_preset", "tiny", "config preset of the untrained default model")
        unnorm = self.declare("unnorm_key", "", "dataset statistics to un-normalise actions with (empty: the only one)")
        self.unnorm_key = unnorm or None
        rate = self.declare("control_rate_hz", 5.0, "max chunks per second; 0 = as fast as the model allows", minimum=0.0)
        self.min_period = 1.0 / rate if rate > 0 else 0.0
        self.base_frame = self.declare("base_frame", "wx250s/base_link", "frame the actions are expressed in")
        self.instruction = self.declare("instruction", "", "initial instruction (the topic overrides it)")
        self.state_joints = list(self.declare(
            "joint_names", list(wx250s.JOINT_NAMES),
            "arm joints whose positions (then the gripper's) form the robot state of models that read it"))
        self.state_joints.append(self.declare("gripper_joint", "left_finger", "gripper joint, last value of the robot state"))
        autostart = self.declare("autostart", True, "configure and activate at start-up")

        self.policy = None
        self.model_id = ""
        self.active = False
        self.lock = threading.Lock()
        self.new_frame = threading.Condition(self.lock)
        self.latest: Frame | None = None
        self.prompt_msg: VisualPrompt | None = None
        self.place_msg: VisualPrompt | None = None
        self.mask: np.ndarray | None = None
        self.robot_state: np.ndarray | None = None  # (len(joint_names) + 1,) latest complete joint positions
        self.sequence = 0
        self.counters = {"received": 0, "used": 0, "dropped": 0}
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.last_error = ""
        self.worker: threading.Thread | None = None

        self.chunk_pub = self.create_publisher(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND)
        self.status_pub = self.create_publisher(PolicyStatus, "/pixelvla/status", qos.LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(Image, "/camera/image_raw", self.on_image, qos.SENSOR)
        self.create_subscription(String, "/pixelvla/instruction", self.on_instruction, qos.LATCHED)
        self.create_subscription(VisualPrompt, "/pixelvla/prompt", self.on_prompt, qos.LATCHED)
        self.create_subscription(VisualPrompt, "/pixelvla/place_prompt", self.on_place_prompt, qos.LATCHED)
        self.create_subscription(Image, "/pixelvla/mask", self.on_mask, qos.LATCHED)
        self.create_subscription(JointState, "/joint_states", self.on_joint_state, qos.SENSOR)
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
        width = self.policy.config.proprio_dim
        if width and width != len(self.state_joints):
            self.report_error(f"the model reads {width} robot-state values, but joint_names + gripper_joint name "
                              f"{len(self.state_joints)} joints ({self.state_joints}); set them to the joints it was trained on")
            self.policy = None
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"loaded {self.model_id} ({self.backend})")
        return TransitionCallbackReturn.SUCCESS

    def load_policy(self):
        """(policy with predict(image, instruction, prompts, mask, unnorm_key), model id) per the parameters."""
        from pixelvla_model import DEFAULT_CHECKPOINT, DEFAULT_CHECKPOINT_NOTE, PixelVLAConfig, PixelVLAPolicy
        from pixelvla_model.runtime import Expectation, load_policy

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        model_path = self.model_path
        if not model_path and self.backend != "torch":
            raise ValueError(f"backend {self.backend!r} needs model_path:=<engine bundle> (made by pixelvla-export)")
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
        policy = load_policy(model_path, backend=self.backend, device=self.device, expect=expect,
                             threads=self.threads or None)
        return policy, policy.runtime.describe().get("model_id") or Path(model_path).resolve().name

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        self.worker = threading.Thread(target=self.inference_loop, name="inference", daemon=True)
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

    def stop_worker(self) -> None:
        with self.lock:
            self.active = False
            self.new_frame.notify_all()
        if self.worker is not None:
            self.worker.join(timeout=5.0)
            self.worker = None

    # ---------------------------------------------------------------- inputs
    def on_image(self, msg: Image) -> None:
        self.counters["received"] += 1
        try:
            rgb = image_to_rgb(msg)
        except ImageError as exc:
            self.counters["dropped"] += 1
            self.report_error(f"image refused: {exc}")
            return
        with self.lock:
            if self.latest is not None:
                self.counters["dropped"] += 1  # replaced before the model got to it
            self.latest = Frame(rgb, msg.header)
            self.new_frame.notify()

    def on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if not text:
            self.report_error("instruction refused: it is empty")
            return
        if len(text) > MAX_INSTRUCTION_CHARS:
            self.report_error(f"instruction refused: {len(text)} characters, at most {MAX_INSTRUCTION_CHARS}")
            return
        with self.lock:
            self.instruction = text
        self.get_logger().info(f"instruction: {text!r}")

    def on_prompt(self, msg: VisualPrompt) -> None:
        with self.lock:
            self.prompt_msg = None if is_clear(msg) else msg
        self.get_logger().info("prompt cleared" if is_clear(msg) else f"prompt {msg.prompt_id!r} received")

    def on_place_prompt(self, msg: VisualPrompt) -> None:
        with self.lock:
            self.place_msg = None if is_clear(msg) else msg
        self.get_logger().info("place prompt cleared" if is_clear(msg) else f"place prompt {msg.prompt_id!r} received")

    def on_mask(self, msg: Image) -> None:
        try:
            mask = image_to_mono(msg) > 0
        except ImageError as exc:
            self.report_error(f"mask refused: {exc}")
            return
        with self.lock:
            self.mask = mask if mask.any() else None

    def on_joint_state(self, msg: JointState) -> None:
        state = joint_positions(msg, self.state_joints)
        if state is not None:
            with self.lock:
                self.robot_state = state

    # ---------------------------------------------------------------- inference
    def ready(self) -> bool:
        """A frame and an instruction are there, and the robot state when the model reads it (lock held)."""
        needs_state = self.policy is not None and self.policy.config.proprio_dim > 0
        return self.latest is not None and bool(self.instruction) and not (needs_state and self.robot_state is None)

    def inference_loop(self) -> None:
        next_time = 0.0
        told = 0.0
        while True:
            with self.lock:
                while self.active and not self.ready():
                    if self.latest is not None and self.instruction and time.monotonic() - told > 5.0:
                        told = time.monotonic()  # frames and an instruction are there: only the state is missing
                        self.get_logger().warning(f"waiting for /joint_states with {self.state_joints}: "
                                                  "the model reads the robot state")
                    self.new_frame.wait(timeout=0.5)
                if not self.active:
                    return
            wait = next_time - time.monotonic()
            if wait > 0:  # rate limit; newer frames keep replacing the slot meanwhile
                time.sleep(wait)
            with self.lock:
                if not self.active:
                    return
                frame, self.latest = self.latest, None
                instruction, prompt_msg, mask, state = self.instruction, self.prompt_msg, self.mask, self.robot_state
                place_msg = self.place_msg
            next_time = time.monotonic() + self.min_period
            self.run_once(frame, instruction, prompt_msg, mask, state, place_msg)

    def run_once(self, frame: Frame, instruction: str, prompt_msg: VisualPrompt | None, mask: np.ndarray | None,
                 state: np.ndarray | None = None, place_msg: VisualPrompt | None = None) -> None:
        hw = frame.rgb.shape[:2]
        prompts = []
        for msg, place in ((prompt_msg, False), (place_msg, True)):
            if msg is None:
                continue
            try:
                if place and not self.policy.config.place_prompts:
                    raise PromptError(f"place prompt {msg.prompt_id or '(no id)'}: this model was not trained with "
                                      "place prompts (config.place_prompts is false)")
                prompts += prompt_from_msg(msg, hw, place=place)
            except PromptError as exc:
                slot = "place_msg" if place else "prompt_msg"
                with self.lock:
                    if getattr(self, slot) is msg:
                        setattr(self, slot, None)  # refuse it once, not on every frame
                self.report_error(f"{'place prompt' if place else 'prompt'} refused: {exc}")
                return
        if mask is not None and mask.shape != hw:
            self.report_error(f"mask {mask.shape[1]}x{mask.shape[0]} does not match the image {hw[1]}x{hw[0]}: ignored")
            mask = None
        started = time.perf_counter()
        try:
            actions = self.policy.predict(frame.rgb, instruction, prompts=prompts or None, mask=mask, unnorm_key=self.unnorm_key,
                                          proprio=state if self.policy.config.proprio_dim else None)
        except (ValueError, RuntimeError) as exc:
            self.report_error(f"inference failed: {exc}")
            return
        latency = time.perf_counter() - started
        if not np.all(np.isfinite(actions)):
            self.report_error("the model produced NaN/inf actions: chunk not published")
            return
        chunk = ActionChunk(
            header=Header(stamp=frame.header.stamp, frame_id=self.base_frame),
            horizon=actions.shape[0], action_dim=actions.shape[1], dt=self.min_period or 0.2,
            actions=actions.astype(np.float32).ravel().tolist(), dimension_names=DIMENSIONS,
            action_space="ee_delta", model_id=self.model_id, inference_latency=latency, sequence=self.sequence,
        )
        self.chunk_pub.publish(chunk)
        self.sequence += 1
        self.counters["used"] += 1
        self.latencies.append(latency)

    # ---------------------------------------------------------------- status
    def report_error(self, text: str) -> None:
        self.last_error = text
        self.get_logger().error(text)
        self.publish_status(PolicyStatus.ERROR)

    def publish_status(self, state: int | None = None) -> None:
        if state is None:
            state = PolicyStatus.ACTIVE if self.active else PolicyStatus.INACTIVE if self.policy else PolicyStatus.UNCONFIGURED
        latencies = np.array(self.latencies) if self.latencies else np.zeros(1)
        status = PolicyStatus(
            state=state, backend=self.backend if self.policy else "", model_id=self.model_id,
            last_latency=float(latencies[-1]), mean_latency=float(latencies.mean()),
            p99_latency=float(np.percentile(latencies, 99)), frames_received=self.counters["received"],
            frames_used=self.counters["used"], frames_dropped=self.counters["dropped"], last_error=self.last_error,
        )
        status.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(status)
        level = {PolicyStatus.ACTIVE: DiagnosticStatus.OK, PolicyStatus.ERROR: DiagnosticStatus.ERROR}.get(state, DiagnosticStatus.WARN)
        diag = DiagnosticStatus(level=level, name="pixelvla: policy", hardware_id=self.get_name(),
                                message=self.last_error if state == PolicyStatus.ERROR else "ok")
        diag.values = [KeyValue(key=k, value=str(v)) for k, v in {**self.counters, "model_id": self.model_id,
                                                                     "mean_latency_s": status.mean_latency}.items()]
        array = DiagnosticArray(status=[diag])
        array.header.stamp = status.header.stamp
        self.diag_pub.publish(array)


def main(args=None) -> int:
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    sys.exit(main())
