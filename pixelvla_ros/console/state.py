"""What the console shows, and its decisions: who operates, how often, and what the robot's reports mean.

The node writes (from ROS callbacks), the server reads (from its own thread): every access goes through one
lock. Times are seconds: `now` is time.monotonic() unless said otherwise. Image coordinates are pixels with
the origin at the top-left pixel's corner (VisualPrompt's convention).
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

POLICY_STATES = ("unconfigured", "inactive", "active", "error")  # PolicyStatus.state 0..3
EXECUTOR_DIAGNOSTICS = "pixelvla: chunk executor"  # the executor node's /diagnostics entry
DIAGNOSTIC_OK, DIAGNOSTIC_WARN, DIAGNOSTIC_ERROR = 0, 1, 2


class ControlArbiter:
    """One operator at a time sends prompts, instructions, e-stop resets and episode resets; anyone may press the
    e-stop.

    A page is known by a session id it keeps across reconnects (the browser tab's sessionStorage). The first page
    to connect holds control until it leaves or another page takes it explicitly (`take`). A holder whose last
    connection closes keeps control for `grace` s, so that a reload or a dropped connection does not hand it
    away; after that the longest-connected remaining page holds it (nobody while no page is connected).
    """

    def __init__(self, grace: float = 5.0) -> None:
        self.grace = grace
        self.connections: dict[str, int] = {}  # session -> open connections, in the order the sessions came
        self.holder: str | None = None
        self.holder_left: float | None = None  # when the holder's last connection closed

    def connect(self, session: str, now: float) -> None:
        self._expire(now)
        self.connections[session] = self.connections.get(session, 0) + 1
        if self.holder == session:
            self.holder_left = None
        elif self.holder is None:
            self.holder, self.holder_left = session, None

    def disconnect(self, session: str, now: float) -> None:
        left = self.connections.get(session, 0) - 1
        if left > 0:
            self.connections[session] = left
        else:
            self.connections.pop(session, None)
            if self.holder == session:
                self.holder_left = now
        self._expire(now)

    def take(self, session: str, now: float) -> bool:
        """`session` takes control (it must be connected)."""
        self._expire(now)
        if session not in self.connections:
            return False
        self.holder, self.holder_left = session, None
        return True

    def current(self, now: float) -> str | None:
        self._expire(now)
        return self.holder

    def may_operate(self, session: str, now: float) -> bool:
        return self.current(now) == session

    def _expire(self, now: float) -> None:
        if self.holder_left is not None and now - self.holder_left >= self.grace:
            self.holder, self.holder_left = next(iter(self.connections), None), None


class RateLimiter:
    """A token bucket: `rate` events per second on average, at most `burst` at once."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self.tokens, self.last = float(burst), None

    def _refill(self, now: float) -> None:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def allow(self, now: float) -> bool:
        """Take a token if there is one."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until `allow` can succeed (0 if now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


class LatencyWindow:
    """The last `size` samples (s) of a latency, summarised as p50 / p95 in milliseconds."""

    def __init__(self, size: int = 100) -> None:
        self.samples: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        if np.isfinite(seconds):
            self.samples.append(float(seconds))

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        p50, p95 = np.percentile(np.asarray(self.samples), [50, 95])
        return {"p50_ms": round(float(p50) * 1e3, 2), "p95_ms": round(float(p95) * 1e3, 2), "n": len(self.samples)}


def executor_summary(level: int, message: str, values: dict[str, str]) -> dict:
    """The chunk executor's diagnostics entry -> what the operator needs: moving, holding (and why), e-stop, fault."""
    if level == DIAGNOSTIC_ERROR:
        state = "e-stop" if "e-stop" in message else "fault"
    elif level == DIAGNOSTIC_WARN:
        state = "holding"
    elif level == DIAGNOSTIC_OK:
        state = "moving"
    else:
        state = "stale"
    detail = message[len("holding: "):] if message.startswith("holding: ") else message
    return {"state": state, "detail": detail, "last_rejection": values.get("last_rejection", ""),
            "commands_sent": values.get("commands_sent", "")}


def next_episode(episode: dict | None) -> dict:
    """The /sim/reset request for the episode after `episode` (the simulator's /sim/episode): same task, next seed."""
    if not episode or "task" not in episode:
        raise ValueError("no simulated episode reported yet (/sim/episode)")
    return {"task": str(episode["task"]), "seed": int(episode.get("seed", 0)) + 1}


def sim_reset_request(task: Any, seed: Any, tasks: list[str]) -> dict:
    """A checked /sim/reset request {"task", "seed"}; ValueError saying what is wrong."""
    task = str(task)
    if tasks and task not in tasks:
        raise ValueError(f"unknown task {task!r}; one of: {', '.join(tasks)}")
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise ValueError(f"seed must be a whole number, got {seed!r}") from None
    if seed < 0:
        raise ValueError("seed must not be negative")
    return {"task": task, "seed": seed}


@dataclass(frozen=True)
class Frame:
    """A camera frame as received. A compressed frame is decoded only when a page first shows it (in the
    server's worker thread): frames that come faster than pages take them cost no decoding."""

    pixels: Any                     # (H, W, 3) uint8 RGB, or an object with `.height`, `.width` (px) and `.rgb`,
                                    # that array decoded on first use (image_conversions.CameraFrame)
    stamp: tuple[int, int]          # the image's header stamp (sec, nanosec)
    frame_id: str                   # the image's optical frame
    seq: int                        # the console's own count, from 1
    received: float                 # monotonic s

    @property
    def rgb(self) -> np.ndarray:
        """(H, W, 3) uint8; a frame that cannot be decoded raises ValueError."""
        return self.pixels if isinstance(self.pixels, np.ndarray) else self.pixels.rgb

    @property
    def info(self) -> dict:
        height, width = (self.pixels.shape[:2] if isinstance(self.pixels, np.ndarray)
                         else (self.pixels.height, self.pixels.width))
        return {"seq": self.seq, "stamp": list(self.stamp), "frame_id": self.frame_id,
                "width": int(width), "height": int(height)}


@dataclass
class ConsoleState:
    """Everything the page shows, written by the node and read by the server (hold `lock`, or use the methods)."""

    tasks: list[str] = field(default_factory=list)  # the simulator's tasks, for the reset control
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    version: int = 0  # bumped on every change the page shows (not on frames)
    frame: Frame | None = None
    frames: int = 0
    policy: dict | None = None
    policy_received: float | None = None
    inference: LatencyWindow = field(default_factory=LatencyWindow)
    display: LatencyWindow = field(default_factory=LatencyWindow)  # camera stamp -> page painted (same clock)
    executor: dict | None = None
    executor_received: float | None = None
    episode: dict | None = None
    prompts: dict = field(default_factory=lambda: {"target": None, "place": None})
    words: dict = field(default_factory=lambda: {"target": None, "place": None})  # the policy's proposals
    instructions: deque = field(default_factory=lambda: deque(maxlen=5))
    mask: np.ndarray | None = None  # (H, W) bool, the target mask
    path_xy: np.ndarray | None = None  # (N + 1, 2) px, corner origin: the predicted TCP path of the latest chunk
    gripper: dict = field(default_factory=lambda: {"measured": None, "planned": None})  # 1 = open, 0 = closed
    errors: deque = field(default_factory=lambda: deque(maxlen=5))  # (wall-clock s, source, text)

    def put_frame(self, pixels: Any, stamp: tuple[int, int], frame_id: str, now: float) -> Frame:
        """The newest frame (`pixels`: as Frame.pixels)."""
        with self.lock:
            self.frames += 1
            self.frame = Frame(pixels, stamp, frame_id, self.frames, now)
            return self.frame

    def update(self, *, bump: bool = True, **fields: Any) -> None:
        """Set fields; `bump`: the page's state changed (False for what only the frames show: mask, path)."""
        with self.lock:
            for name, value in fields.items():
                if not hasattr(self, name):
                    raise AttributeError(name)
                setattr(self, name, value)
            self.version += bump

    def set_prompt(self, marks: str, prompt: dict | None, proposed: bool = False) -> None:
        """The prompt in force on `marks` ("target" / "place"): {kind, points, id}, or None; `proposed`: the
        words' prompt the policy proposes there instead."""
        with self.lock:
            (self.words if proposed else self.prompts)[marks] = prompt
            self.version += 1

    def add_instruction(self, text: str) -> None:
        with self.lock:
            if text in self.instructions:
                self.instructions.remove(text)
            self.instructions.appendleft(text)
            self.version += 1

    def add_error(self, source: str, text: str, wall_time: float) -> None:
        with self.lock:
            if self.errors and self.errors[0][1:] == (source, text):  # the same again (a bad camera, each frame)
                self.errors[0] = (wall_time, source, text)
                return
            self.errors.appendleft((wall_time, source, text))
            self.version += 1

    def add_inference_latency(self, seconds: float) -> None:
        with self.lock:
            self.inference.add(seconds)
            self.version += 1

    def add_display_latency(self, seconds: float) -> None:
        with self.lock:
            self.display.add(seconds)

    def overlay(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(mask, path_xy) to draw into the frames."""
        with self.lock:
            return self.mask, self.path_xy

    def snapshot(self, now: float) -> dict:
        """What the page shows, as JSON-able data (ages in s)."""
        with self.lock:
            def aged(entry: dict | None, received: float | None) -> dict | None:
                return None if entry is None else {**entry, "age": round(now - received, 2)}

            return json_safe({
                "policy": aged(self.policy, self.policy_received),
                "inference": self.inference.summary(),
                "display_latency": self.display.summary(),
                "executor": aged(self.executor, self.executor_received),
                "episode": self.episode,
                "tasks": self.tasks,
                "prompts": dict(self.prompts),
                "words": dict(self.words),
                "instructions": list(self.instructions),
                "gripper": dict(self.gripper),
                "errors": [{"time": t, "source": s, "text": x} for t, s, x in self.errors],
                "camera": None if self.frame is None else {**self.frame.info,
                                                           "age": round(now - self.frame.received, 2)},
            })


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as None: JSON has no such numbers (a browser's JSON.parse refuses them)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
