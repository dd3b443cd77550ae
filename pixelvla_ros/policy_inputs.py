"""The policy node's inputs and its decisions about them, without ROS (unit-tested in test/test_policy_inputs.py).

`PolicyInputs` keeps the instruction, the target and place prompts, the target mask and the robot state in
force, checks each one when it arrives against the loaded model, and says why the model must not run yet
(`blocking`) and what the node is waiting for (`waiting_for`, reported as a WARN). A refused input changes
nothing: the previous one stays in force. A target mask is used only with a camera frame whose stamp is within
`max_mask_lag` s of the mask's (`mask_lag_problem`): a lagging segmenter holds the policy rather than give it a
target drawn where the object was (an unstamped mask, drawn by hand, is not tied to a frame and is used as it is). `CameraRate` estimates the camera's frame rate from the image
stamps and counts the frames that never arrived. A model that reads where the prompts are from the gripper
(config.prompt_offsets) gets from a `PromptPlacing` the map from a click to the TCP: the calibrated camera, the
plane clicked objects rest on and the TCP from the robot state; without a calibration or a usable state it does
not run.

Times are seconds on the node's clock (ROS time): message stamps and `now`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from pixelvla_robots.camera import CameraModel, plane_click_map
from pixelvla_ros.prompt_conversions import PromptSlots

MAX_INSTRUCTION_CHARS = 4096  # a cheap guard before tokenizing; the model's own limit is in tokens
FRAME_TIMEOUT = 2.0  # s without a camera frame before the node says it is waiting for one
MAX_MASK_LAG = 0.5  # s, default: a mask computed from an image further from the frame's stamp is not used


class InputError(ValueError):
    """An input the model cannot take; the message says why."""


@dataclass(frozen=True)
class ModelLimits:
    """What the loaded model takes."""

    check_instruction: Callable[[str], object]  # raises ValueError saying why the model cannot take a text
    max_prompts: int = 0        # config.max_prompts: target and place prompts together (0: any number)
    place_prompts: bool = True  # config.place_prompts: trained with place prompts
    state_width: int = 0        # config.proprio_dim: robot-state values it reads (0: none)
    prompt_offsets: bool = False  # config.prompt_offsets: it reads where the prompts are from the gripper
    chunk_size: int = 0         # config.chunk_size: actions in one chunk (0: any number)

    @classmethod
    def of(cls, policy) -> "ModelLimits":
        """The limits of a pixelvla_model policy (PixelVLAPolicy or a RuntimePolicy)."""
        config = policy.config
        return cls(policy.check_instruction, config.max_prompts, config.place_prompts, config.proprio_dim,
                   config.prompt_offsets, config.chunk_size)


@dataclass(frozen=True)
class PromptPlacing:
    """How a prompt's pixel is placed from the TCP in the base frame, for models with config.prompt_offsets.

    camera: () -> the calibrated CameraModel (intrinsics and the optical frame's pose in the base frame), None
    until known; tcp_position: robot state (the state joints' positions, gripper last) -> (3,) m, the TCP in
    the base frame (forward kinematics); plane_z: m, the height in the base frame the clicked objects' centres
    rest at (the ray through a click is met with that plane)."""

    camera: Callable[[], Optional[CameraModel]]
    tcp_position: Callable[[np.ndarray], np.ndarray]
    plane_z: float

    def click_map(self, state: np.ndarray) -> np.ndarray:
        """(4, 3) the model's click_to_tcp at robot state `state` (pixelvla_robots.camera.plane_click_map; it
        takes clicks as fractions of the image, so the calibration's resolution need not be the frame's)."""
        return plane_click_map(self.camera(), self.plane_z, self.tcp_position(state))


class PolicyInputs:
    """The inputs in force. Not thread-safe: the node calls it with its lock held.

    state_joints: the joints whose positions (rad; the gripper finger in m), in this order, form the robot
    state of a model that reads it; max_state_age: s, an older robot state is not used; max_mask_lag: s, the
    most a target mask's stamp may differ from the stamp of the frame it is used with.
    """

    def __init__(self, state_joints: Sequence[str], max_state_age: float, max_mask_lag: float = MAX_MASK_LAG,
                 placing: PromptPlacing | None = None, steps_per_inference: int = 1) -> None:
        self.state_joints = list(state_joints)
        self.steps_per_inference = steps_per_inference  # control periods per chunk: the arm runs that many actions
        self.placing = placing
        self.max_state_age = max_state_age
        self.max_mask_lag = max_mask_lag
        self.model: ModelLimits | None = None
        self.instruction = ""
        self.prompts = PromptSlots()
        self.mask: np.ndarray | None = None          # (H, W) bool target mask; None: no target mask
        self.mask_stamp = 0.0                        # s, stamp of the image the mask was computed from
        self.image_hw: tuple[int, int] | None = None  # (H, W) of the latest valid frame
        self.last_frame: float | None = None         # s, when the latest valid frame arrived
        self.frame_stamp = 0.0                       # s, its stamp: the frame the model takes next
        self.state: np.ndarray | None = None         # (len(state_joints),) newest complete joint state, NaN allowed
        self.state_stamp = 0.0                       # s, when it was measured
        self.words_wanted = False                    # an instruction arrived since the words last proposed prompts

    # ------------------------------------------------------------------ arrivals
    def set_model(self, model: ModelLimits) -> list[str]:
        """A model is loaded: InputError if it cannot run with these joints; the inputs in force are checked
        again against it, and the reasons of those it refuses are returned (they are dropped)."""
        if model.state_width and model.state_width != len(self.state_joints):
            raise InputError(f"the model reads {model.state_width} robot-state values, but joint_names + gripper_joint "
                             f"name {len(self.state_joints)} joints ({self.state_joints}); set them to the joints it "
                             "was trained on")
        if model.chunk_size and self.steps_per_inference > model.chunk_size:
            raise InputError(f"steps_per_inference {self.steps_per_inference} exceeds the model's chunk of "
                             f"{model.chunk_size} actions: the arm would stop between chunks; set steps_per_inference "
                             f"<= {model.chunk_size}")
        if model.prompt_offsets and self.placing is None:
            raise InputError("the model reads where the prompts are from the gripper (config.prompt_offsets), but "
                             "this node cannot place them: it needs the robot's kinematics and the camera's calibration")
        self.model = model
        errors = []
        if self.instruction:
            try:
                self.model.check_instruction(self.instruction)
            except ValueError as exc:
                errors.append(f"instruction {_short(self.instruction)} refused: {exc}")
                self.instruction = ""
        old, self.prompts = self.prompts, PromptSlots(model.max_prompts, model.place_prompts)
        if self.image_hw is not None:
            self.prompts.set_image_size(self.image_hw)
        for place in (False, True):
            if old.msg[place] is not None:
                try:
                    self.prompts.offer(old.msg[place], place)
                except ValueError as exc:
                    errors.append(f"{'place prompt' if place else 'prompt'} refused: {exc}")
        return errors

    def set_instruction(self, text: str) -> str:
        """Put `text` (stripped) in force, or raise InputError and keep the previous instruction."""
        text = text.strip()
        if not text:
            raise InputError("it is empty")
        if len(text) > MAX_INSTRUCTION_CHARS:
            raise InputError(f"{len(text)} characters, at most {MAX_INSTRUCTION_CHARS}")
        if self.model is not None:
            try:
                self.model.check_instruction(text)  # the limit that matters: tokens, with the prompt template
            except ValueError as exc:
                raise InputError(str(exc)) from None
        self.instruction = text
        self.words_wanted = True  # every message, the same text again too: a new episode, a new scene
        return text

    def set_prompt(self, msg, place: bool = False) -> None:
        """Put a VisualPrompt (target, or with `place` where it goes) in force, or raise PromptError."""
        self.prompts.offer(msg, place)

    def set_mask(self, mask: np.ndarray, stamp: float = 0.0) -> None:
        """The segmenter's target mask (H, W) bool; all false = none. stamp: s, its header stamp, the stamp of
        the image it was computed from (0: unstamped). InputError for a mask of another size than the camera's
        (the previous mask stays)."""
        if not mask.any():
            self.mask = None
            return
        if self.image_hw is not None and mask.shape != self.image_hw:
            raise InputError(_size_mismatch(mask.shape, self.image_hw))
        self.mask, self.mask_stamp = mask, stamp

    def set_state(self, positions: np.ndarray, stamp: float) -> None:
        """The newest complete joint state: positions in state_joints order (NaN/inf are kept, and block the
        model); stamp: s, when it was measured (its header stamp, or its arrival when unstamped)."""
        self.state, self.state_stamp = np.asarray(positions, np.float64), stamp

    def frame_arrived(self, image_hw: tuple[int, int], now: float, stamp: float = 0.0) -> list[str]:
        """A valid frame of (H, W) px, stamped `stamp` (0: unstamped), arrived at `now`: the one the model takes
        next. A new size (the first frame, a camera reconfigured) checks the prompts and the mask in force again;
        returns the reasons of those refused (each once)."""
        self.last_frame, self.frame_stamp = now, stamp
        image_hw = tuple(image_hw)
        if image_hw == self.image_hw:
            return []
        self.image_hw = image_hw
        errors = [f"prompt refused: {e}" for e in self.prompts.set_image_size(image_hw)]
        if self.mask is not None and self.mask.shape != image_hw:
            errors.append(f"mask refused: {_size_mismatch(self.mask.shape, image_hw)}")
            self.mask = None
        return errors

    # ------------------------------------------------------------------ decisions
    def blocking(self, now: float) -> str:
        """Why the model must not run now on the newest frame ("" = it may): no model, no instruction, a target
        mask not aligned with the frame, or (models that read it) no usable robot state."""
        if self.model is None:
            return "a model (the node is not configured)"
        reasons = []
        if not self.instruction:
            reasons.append("an instruction on /pixelvla/instruction")
        if self.mask is not None and self.last_frame is not None:
            reasons.append(mask_lag_problem(self.frame_stamp, self.mask_stamp, self.max_mask_lag))
        reasons.append(self._state_problem(now))
        if self.model.prompt_offsets and self.placing.camera() is None:
            reasons.append("the camera's calibration on camera/camera_info and camera/pose (the model places the "
                           "prompts from the gripper)")
        return "; ".join(r for r in reasons if r)

    def waiting_for(self, now: float) -> str:
        """What the node is waiting for ("" = nothing: chunks are computed as frames come)."""
        blocking = self.blocking(now)
        reasons = [blocking] if blocking else []
        if self.last_frame is None:
            reasons.append("a camera frame on /camera/image_raw (none yet)")
        elif now - self.last_frame > FRAME_TIMEOUT:
            reasons.append(f"a camera frame on /camera/image_raw (none for {now - self.last_frame:.1f} s)")
        return "; ".join(reasons)

    def snapshot(self) -> tuple[str, list, np.ndarray | None, np.ndarray | None, np.ndarray | None, bool]:
        """(instruction, model prompts for the current frame size, mask, robot state, click_to_tcp, propose
        words) for one inference; the state and the click map only for a model that reads them (None otherwise).
        propose words: whether this inference also proposes where the instruction's words point, as prompts an
        operator may accept: once after each instruction message, when neither a target prompt nor a target
        mask is in force (they name the target; the words then propose nothing)."""
        state = self.state if self.model is not None and self.model.state_width else None
        click_map = None
        if self.model is not None and self.model.prompt_offsets:
            click_map = self.placing.click_map(self.state)
        propose_words = self.words_wanted and self.prompts.msg[False] is None and self.mask is None
        self.words_wanted = False
        return self.instruction, self.prompts.prompts(), self.mask, state, click_map, propose_words

    def _state_problem(self, now: float) -> str:
        if self.model is None or not (self.model.state_width or self.model.prompt_offsets):
            return ""
        joints = f"/joint_states with {', '.join(self.state_joints)}"
        if self.state is None:
            return f"{joints} (none complete yet; the model reads the robot state)"
        if not np.all(np.isfinite(self.state)):
            return f"{joints} (the newest holds NaN/inf)"
        age = now - self.state_stamp
        if age > self.max_state_age:
            return f"{joints} (the newest is {age:.1f} s old, more than max_joint_state_age {self.max_state_age:g} s)"
        return ""


def mask_lag_problem(image_stamp: float, mask_stamp: float, max_lag: float) -> str:
    """Why a target mask must not be used with a frame ("" = it may): the stamp of the image it was computed
    from (its header stamp) is more than `max_lag` s from the frame's: the mask shows the target where it was,
    not where the frame shows it. An unstamped mask is not tied to any frame (an operator's hand-made mask,
    `ros2 topic pub`): it is used as it is, as a prompt is."""
    if mask_stamp == image_stamp or mask_stamp <= 0:
        return ""
    what = "a target mask on /pixelvla/mask aligned with the camera frame"
    lag = image_stamp - mask_stamp
    if abs(lag) <= max_lag:
        return ""
    when = f"{lag:.1f} s before" if lag > 0 else f"{-lag:.1f} s after"
    return f"{what} (the newest mask is from an image {when} the frame, more than max_mask_lag {max_lag:g} s)"


def _size_mismatch(mask_hw, image_hw) -> str:
    return f"mask {mask_hw[1]}x{mask_hw[0]} does not match the camera image {image_hw[1]}x{image_hw[0]}"


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ---------------------------------------------------------------------------------------------------
# camera rate and lost frames
# ---------------------------------------------------------------------------------------------------
MIN_INTERVALS = 20     # stamp intervals before the rate is estimated (and losses counted)
MAX_GAP_PERIODS = 100  # a longer gap is the camera pausing (a simulator reset, a driver restart), not losses


def estimate_period(intervals: Sequence[float]) -> float:
    """The camera period (s) from intervals between received stamps: single periods or, where frames were
    lost, multiples. The shortest cluster of intervals (from one to 1.5x it) that holds at least 5 % of them
    (and 3) is single periods, even with 80 % of the frames lost, and not a stray short interval; with its
    median as a first guess, the total time over the total periods is the estimate."""
    d = np.sort(np.asarray(intervals, np.float64))
    in_cluster = np.searchsorted(d, 1.5 * d, side="right") - np.arange(len(d))  # d[i] .. 1.5 d[i]
    first = int(np.argmax(in_cluster >= max(3, len(d) // 20)))
    base = float(np.median(d[first:first + in_cluster[first]]))
    d = d[d <= MAX_GAP_PERIODS * base]
    return float(d.sum() / np.maximum(np.round(d / base), 1).sum())


class CameraRate:
    """Camera frame rate from the image stamps, and the frames that never arrived.

    sensor_msgs/Image has no sequence number in ROS 2: between consecutive stamps n periods apart, n - 1
    frames were sent and lost (in transport, or replaced in a full queue before the node took them). The
    period is estimated over the last `window` intervals (estimate_period), and the intervals still in the
    window are counted with the latest estimate, so a poor first estimate is corrected; an interval's count
    is final when it leaves the window. Unstamped images (stamp 0) and a repeated stamp are ignored; a
    stamp going back (a restarted clock, a bag looping) starts the estimate over.
    """

    def __init__(self, window: int = 200) -> None:
        self.intervals: deque[float] = deque(maxlen=window)  # s, between consecutive stamps
        self.last: float | None = None  # s, the latest stamp
        self.period = 0.0               # s, 0 until estimated
        self.final = 0                  # frames lost in intervals that left the window

    @property
    def rate(self) -> float:
        """Frames per second; 0 until estimated."""
        return 1.0 / self.period if self.period > 0 else 0.0

    @property
    def lost(self) -> int:
        """Frames lost so far."""
        return self.final + self._lost_in(self.intervals)

    def add(self, stamp: float) -> None:
        """A frame stamped `stamp` (s) arrived."""
        if stamp <= 0 or stamp == self.last:
            return
        if self.last is None or stamp < self.last:
            self.final = self.lost
            self.intervals.clear()
            self.period, self.last = 0.0, stamp
            return
        if len(self.intervals) == self.intervals.maxlen:
            self.final += self._lost_in([self.intervals[0]])
        self.intervals.append(stamp - self.last)
        self.last = stamp
        if len(self.intervals) >= MIN_INTERVALS:
            self.period = estimate_period(self.intervals)

    def _lost_in(self, intervals) -> int:
        if not self.period or not len(intervals):
            return 0
        periods = np.round(np.asarray(intervals, np.float64) / self.period)
        return int(np.where(periods <= MAX_GAP_PERIODS, np.maximum(periods - 1, 0), 0).sum())
