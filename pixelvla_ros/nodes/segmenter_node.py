"""Segmenter node: the operator's visual prompt -> the target mask, tracked with SAM 2 as the arm moves.

On a new prompt (`/pixelvla/prompt`) the node segments the next camera frame with it and starts a SAM 2
track; every later frame is tracked (`pixelvla_model.segmentation.Sam2Segmenter`), so the mask follows
the object rather than the pixels the operator clicked. With `track:=false` every frame is segmented
from the prompt alone instead. A clearing prompt (POINT without points) stops the track and publishes
an all-zero mask (the size and header of the latest frame). A prompt that cannot be used on the frame
(outside the image, NaN, a malformed message, a mask of the wrong size, more points than the policy's
model takes: `max_prompts`) is refused with a log line and a diagnostics error, when it arrives (the
same check as the policy's, prompt_conversions.check_prompt) or, before the first frame, on that frame;
the running track, if any, goes on, and nothing is published from that prompt.

Latest frame only (pixelvla_ros.latest_frame): the image callback keeps one slot, and a frame replaced
before the worker thread
takes it is counted as dropped, so a slow model never works through a backlog. SAM 2 runs in that
worker thread, at most `rate_hz` times per second (0: as fast as the model allows); it is joined
before the node is destroyed (on_stop).

Topics: /pixelvla/prompt (VisualPrompt, from latched and volatile publishers: node_base.subscribe_latched),
/camera/image_raw (sensor QoS; with image_transport compressed, /camera/image_raw/compressed) in;
/pixelvla/mask (mono8, 255 = target, the size of the camera image, header = that image's header,
latched), /diagnostics (1 Hz and on errors) out.
Parameters: sam2_path (a local SAM 2 checkpoint directory in transformers layout: config.json with model_type
sam2_video + *.safetensors, e.g. facebook/sam2.1-hiera-small saved locally; empty = a tiny UNTRAINED model, for
tests only), device and dtype (the model preset's, config/models/<preset>.yaml, which the launch passes to the
policy and the segmenter alike: a GPU robot runs SAM 2 on cuda in bfloat16), track, rate_hz, max_prompts.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from pixelvla_model import PixelVLAConfig
from pixelvla_ros import qos
from pixelvla_ros.image_conversions import TRANSPORTS, CameraFrame, ImageError, mono_to_image
from pixelvla_ros.latest_frame import LatestFrameWorker
from pixelvla_ros.msg import VisualPrompt
from pixelvla_ros.node_base import ParameterMixin, run_node, subscribe_camera, subscribe_latched
from pixelvla_ros.prompt_conversions import PromptError, check_prompt, is_clear, prompt_from_msg

LATENCY_WINDOW = 200


class SegmenterNode(ParameterMixin, Node):
    def __init__(self) -> None:
        super().__init__("segmenter")
        self.sam2_path = self.declare("sam2_path", "", "SAM 2 checkpoint directory; empty = tiny UNTRAINED model")
        self.device = self.declare("device", "cpu", "torch device (cpu, cuda, cuda:1)") or "cpu"
        self.dtype = self.declare("dtype", "float32", "what SAM 2 runs in: float32, or bfloat16 / float16 on a GPU",
                                  choices=["", "float32", "bfloat16", "float16"]) or "float32"
        self.threads = self.declare("threads", 0, "CPU threads of SAM 2 on the CPU (0: torch's default, every core); "
                                    "pin on shared computers", minimum=0)
        self.track = self.declare("track", True, "follow the target with SAM 2 video tracking (false: per frame)")
        transport = self.declare("image_transport", "raw", "raw: sensor_msgs/Image on the camera topic; compressed: "
                                 "CompressedImage (JPEG/PNG) on <camera topic>/compressed", read_only=True, choices=TRANSPORTS)
        rate = self.declare("rate_hz", 10.0, "max masks per second; 0 = as fast as the model allows", minimum=0.0)
        self.min_period = 1.0 / rate if rate > 0 else 0.0
        self.max_prompts = self.declare(
            "max_prompts", PixelVLAConfig.max_prompts, "refuse a prompt with more points than the policy's model takes "
            "(its config.max_prompts), as the policy does, so both keep the same target; 0: any", minimum=0)

        self.segmenter, self.model_id = self.load_segmenter()
        self.get_logger().info(f"loaded {self.segmenter!r}")

        self.lock = threading.Lock()
        # the newest frame not yet taken (decoded by the worker) and the SAM 2 thread
        self.worker = LatestFrameWorker(self.lock, min_period=self.min_period, name="segmenter",
                                        ready=lambda: self.prompt_msg is not None, take=self.take_prompt,
                                        run=lambda frame, taken: self.run_once(frame, *taken), idle=self.free_track)
        self.last_header: Header | None = None   # newest frame seen (for a clear)
        self.last_hw: tuple[int, int] | None = None
        self.prompt_msg: VisualPrompt | None = None  # the prompt in force (pending or accepted)
        self.prompt_new = False                  # prompt_msg still has to be applied to a frame
        self.accepted_msg: VisualPrompt | None = None  # the last prompt that produced a mask
        self.pending_clear = False               # a clear arrived before any frame
        self.generation = 0                      # bumped by every clear: older results are dropped
        self.counters = {"received": 0, "dropped": 0, "masks": 0, "refused": 0}
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.last_error = ""
        self.error_since_mask = False

        self.mask_pub = self.create_publisher(Image, "pixelvla/mask", qos.LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        subscribe_latched(self, VisualPrompt, "pixelvla/prompt", self.on_prompt)
        subscribe_camera(self, "camera/image_raw", transport, self.on_image)
        self.create_timer(1.0, self.publish_diagnostics)
        self.worker.start()

    def load_segmenter(self):
        from pixelvla_model.segmentation import Sam2Segmenter

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        if not self.sam2_path:
            self.get_logger().warning(
                "no sam2_path: running an UNTRAINED tiny SAM 2 with random weights; its masks are meaningless - "
                "pass sam2_path:=<SAM 2 checkpoint directory> for real segmentation"
            )
            segmenter = Sam2Segmenter.from_config(tiny=True, seed=0, device=self.device, dtype=self.dtype)
            return segmenter, segmenter.name
        segmenter = Sam2Segmenter.from_pretrained(self.sam2_path, device=self.device, dtype=self.dtype)
        return segmenter, Path(self.sam2_path).resolve().name

    def on_stop(self) -> None:
        """run_node: stop the SAM 2 thread and wait for it (it finishes the mask it is computing): a thread
        left inside torch makes the interpreter abort at exit."""
        self.worker.stop()

    # ---------------------------------------------------------------- inputs
    def on_image(self, msg) -> None:  # Image or CompressedImage
        self.counters["received"] += 1
        try:
            frame = CameraFrame.received(msg)
        except ImageError as exc:
            self.counters["dropped"] += 1
            self.report_error(f"image refused: {exc}")
            return
        with self.lock:
            if self.worker.put(frame) and self.prompt_msg is not None:
                self.counters["dropped"] += 1  # replaced before the model got to it (idle frames don't count)
            self.last_header, self.last_hw = msg.header, (frame.height, frame.width)
            if self.pending_clear:
                self.pending_clear = False
                self.publish_empty_locked()

    def on_prompt(self, msg: VisualPrompt) -> None:
        if is_clear(msg):
            with self.lock:
                self.prompt_msg, self.accepted_msg, self.prompt_new = None, None, False
                self.generation += 1
                if self.last_header is None:
                    self.pending_clear = True
                else:
                    self.publish_empty_locked()
                self.worker.notify()
            self.get_logger().info("prompt cleared: empty mask published, tracking stopped")
            return
        try:
            with self.lock:  # refused here, the prompt changes nothing: the running track goes on
                if msg == self.prompt_msg:
                    return  # the same prompt again (`ros2 topic pub` repeats it every second): keep tracking
                check_prompt(msg, self.last_hw, max_prompts=self.max_prompts)
                self.prompt_msg, self.prompt_new = msg, True
                self.worker.drop()  # segment the next frame, not one that waited in the slot while idle
                self.pending_clear = False
                self.worker.notify()
        except PromptError as exc:
            self.counters["refused"] += 1
            self.report_error(f"prompt refused: {exc}")
            return
        self.get_logger().info(f"prompt {msg.prompt_id!r} received: segmenting the next frame")

    def publish_empty_locked(self) -> None:
        """All-zero mask of the latest frame's size and header (call with the lock held)."""
        self.mask_pub.publish(mono_to_image(np.zeros(self.last_hw, np.uint8), header=self.last_header))

    # ---------------------------------------------------------------- worker
    def take_prompt(self) -> tuple[VisualPrompt, bool, int]:
        """(the prompt in force, whether it is new, its generation), as the worker takes a frame (lock held)."""
        taken = (self.prompt_msg, self.prompt_new, self.generation)
        self.prompt_new = False
        return taken

    def free_track(self) -> None:
        """The worker is idle: after a clear, free the finished track's memory."""
        with self.lock:
            cleared = self.prompt_msg is None
        if cleared and self.segmenter.tracking:
            self.segmenter.stop_tracking()

    def run_once(self, frame: CameraFrame, msg: VisualPrompt, new: bool, generation: int) -> None:
        try:
            rgb = frame.rgb  # the one conversion (or JPEG/PNG decode) of this frame
        except ImageError as exc:
            self.report_error(f"image refused: {exc}")
            return
        started = time.perf_counter()
        try:
            if new or not self.track:
                prompts = prompt_from_msg(msg, rgb.shape[:2])
                if self.track:
                    mask = self.segmenter.start_tracking(rgb, prompts)
                else:
                    mask = self.segmenter.segment(rgb, prompts)
            else:
                mask = self.segmenter.track(rgb)
        except PromptError as exc:
            self.counters["refused"] += 1
            with self.lock:
                if self.prompt_msg is msg:  # refuse it once; the previous target (if any) stays in force
                    self.prompt_msg = self.accepted_msg
            self.report_error(f"prompt refused: {exc}")
            return
        except (ValueError, RuntimeError) as exc:  # e.g. a frame SAM 2 cannot take: restart from the prompt
            self.segmenter.stop_tracking()
            with self.lock:
                if self.prompt_msg is msg:
                    self.prompt_msg = self.accepted_msg
                    self.prompt_new = self.accepted_msg is not None
            self.report_error(f"segmentation failed: {exc}")
            return
        latency = time.perf_counter() - started
        with self.lock:
            if generation != self.generation:
                return  # cleared while SAM 2 was running: this mask is stale
            if new and self.prompt_msg is msg:
                self.accepted_msg = msg
            self.mask_pub.publish(mono_to_image(mask, header=frame.header))
        self.counters["masks"] += 1
        self.error_since_mask = False
        self.latencies.append(latency)
        if new:
            self.get_logger().info(f"prompt {msg.prompt_id!r}: mask of {int(mask.sum())} px, "
                                   f"{'tracking' if self.track else 'segmenting every frame'}")

    # ---------------------------------------------------------------- status
    def report_error(self, text: str) -> None:
        self.last_error = text
        self.error_since_mask = True
        self.get_logger().error(text)
        self.publish_diagnostics()

    def publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name="pixelvla: segmenter", hardware_id=self.get_name())
        with self.lock:
            prompt = self.accepted_msg.prompt_id if self.accepted_msg is not None else ""
            active = self.prompt_msg is not None
        if self.error_since_mask:
            status.level, status.message = DiagnosticStatus.ERROR, self.last_error
        elif not self.segmenter.trained:
            status.level, status.message = DiagnosticStatus.WARN, "UNTRAINED SAM 2 model: masks are meaningless"
        else:
            status.level, status.message = DiagnosticStatus.OK, "tracking" if active else "waiting for a prompt"
        latencies = np.array(self.latencies) if self.latencies else np.zeros(1)
        values = {**self.counters, "model_id": self.model_id, "prompt_id": prompt, "tracking": self.segmenter.tracking,
                  "mean_latency_s": f"{latencies.mean():.4f}", "last_error": self.last_error}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)


def main(args=None) -> int:
    return run_node(SegmenterNode, args)


if __name__ == "__main__":
    sys.exit(main())
