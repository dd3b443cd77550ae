"""What every node of the package shares: declared parameters and a shutdown that never hangs.

`rclpy.spin()` with rclpy's own signal handlers sometimes hangs on SIGINT/SIGTERM. `run_node`
installs its own handlers that only set a flag, spins with a short timeout until the flag is
set, then destroys the node. A second SIGINT (a terminal Ctrl-C reaches the whole process group,
and a launcher forwards one too) is ignored once cleanup has begun, up to the process's exit; a SIGTERM
then ends the process at once, so a launcher's escalation stops a node whose cleanup hangs. A node whose
launcher died (kill -9; PR_SET_PDEATHSIG sends it one SIGTERM) has no one to escalate: from the stop signal on
the process has `CLEANUP_DEADLINE_S` to exit, then the kernel ends it (SIGALRM), hung teardown or not. Before the
node is destroyed, its `on_stop()` (if any) joins the threads it owns: a thread still inside torch or
rclpy when the interpreter exits aborts the process (SIGABRT).

Operator-facing topics (instruction, prompts, mask, e-stop) are read with `subscribe_latched`, so that
both a latched publisher (transient local: a late joiner gets its last value) and the `ros2 topic pub`
an operator types (reliable + volatile) reach the node.

A node is a small class:

    class Talker(ParameterMixin, Node):
        def __init__(self):
            super().__init__("talker")
            self.rate = self.declare("rate_hz", 5.0, "publish rate (Hz)", minimum=0.1)

    def main(args=None):
        return run_node(Talker, args)
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Sequence

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from pixelvla_ros import qos

if TYPE_CHECKING:
    from pixelvla_robots.base import Robot


class ParameterMixin:
    """`declare()`: a parameter with its description, range and read-only flag, in one line."""

    def declare(
        self,
        name: str,
        default: Any,
        description: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        read_only: bool = False,
        choices: Sequence[str] | None = None,
    ) -> Any:
        """Declare `name` with `default` (its type fixes the parameter's type) and return its value. With
        `choices` (for read-only parameters), a value not among them fails at start-up with the choices."""
        if choices is not None:
            description = f"{description} (one of: {', '.join(choices)})"
        descriptor = ParameterDescriptor(description=description, read_only=read_only)
        if minimum is not None or maximum is not None:
            lo = minimum if minimum is not None else -sys.float_info.max
            hi = maximum if maximum is not None else sys.float_info.max
            if isinstance(default, bool) or not isinstance(default, (int, float)):
                raise TypeError(f"parameter {name!r}: a range needs a numeric default")
            if isinstance(default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
        value = self.declare_parameter(name, default, descriptor).value
        if choices is not None and value not in choices:
            raise ValueError(f"parameter {name}: {value!r} is not one of {', '.join(choices)}")
        return value

    def declare_robot(self) -> "Robot":
        """The arm this node works with: read-only parameter `robot_model` (config/robots/<robot>.yaml sets
        it), resolved by pixelvla_robots.base.get_robot; an unknown model fails at start-up with the known ones."""
        from pixelvla_robots.base import get_robot, known_robots

        model = self.declare("robot_model", "wx250s", "the robot arm: joints, limits, kinematics",
                             read_only=True, choices=list(known_robots()))
        return get_robot(model)


def joint_positions(msg, names, finite: bool = True) -> "np.ndarray | None":
    """The positions of `names`, in that order, from a sensor_msgs/JointState; None unless every one is
    there and (with `finite`) finite: a partial or corrupt message must not move a robot. With
    finite=False a complete message holding NaN/inf comes back as it is, for a caller that reports it."""
    import numpy as np

    positions = dict(zip(msg.name, msg.position))
    if not all(name in positions for name in names):
        return None
    values = np.array([positions[name] for name in names], np.float64)
    return values if not finite or np.all(np.isfinite(values)) else None


def stamp_seconds(stamp) -> float:
    """A builtin_interfaces/Time (a message header's stamp) in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


class DuplicateFilter:
    """Drops the second copy of a message that both subscriptions of `subscribe_latched` delivered.

    A transient-local publisher reaches both the transient-local and the volatile subscription, so each
    of its messages arrives twice, once per subscription, moments apart; a volatile publisher (the CLI)
    reaches only the volatile one. A message is a duplicate when it equals one delivered through the other
    subscription within the last `window` s whose twin has not come yet (serialized messages compare as
    bytes, so a NaN field is equal to itself). An operator who publishes the same message again reaches
    one subscription only: every repeat passes.
    """

    def __init__(self, window: float = 2.0) -> None:
        self.window = window  # s: both copies are taken by the same executor, normally ms apart
        self.waiting: deque[tuple[Any, str, float]] = deque(maxlen=8)  # (message, subscription, arrival s)

    def is_duplicate(self, msg: Any, via: str, now: float | None = None) -> bool:
        """`msg` arrived through subscription `via` at `now` (s, monotonic): is it a twin already delivered?"""
        now = time.monotonic() if now is None else now
        while self.waiting and now - self.waiting[0][2] > self.window:
            self.waiting.popleft()
        for entry in self.waiting:
            if entry[1] != via and entry[0] == msg:
                self.waiting.remove(entry)  # the twin has come: a third copy is a new message
                return True
        self.waiting.append((msg, via, now))
        return False


def subscribe_latched(node: Node, msg_type: Any, topic: str, callback: Callable[[Any], None], **kwargs) -> list:
    """Subscribe `callback` to an operator-facing topic that latched publishers and `ros2 topic pub` both use.

    A transient-local subscription (qos.LATCHED) receives a latched publisher's last value when it joins
    late, but matches no volatile publisher (the CLI's default: its messages never arrive); a volatile one
    (qos.LATCHED_LIVE) matches both but replays nothing. Humble has no BEST_AVAILABLE durability, so both
    are created and the copy that both deliver is dropped (DuplicateFilter). kwargs go to
    create_subscription; with raw=True the callback gets the serialized message. Returns the two
    subscriptions.
    """
    raw = kwargs.pop("raw", False)
    duplicates = DuplicateFilter()

    def deliver(via: str) -> Callable[[bytes], None]:
        def on_message(data: bytes) -> None:
            if not duplicates.is_duplicate(data, via):
                callback(data if raw else deserialize_message(data, msg_type))
        return on_message

    # A volatile publisher is expected not to match the transient-local subscription (its twin takes its
    # messages): no "offering incompatible QoS" warning from that one; the volatile one still warns.
    quiet = SubscriptionEventCallbacks(incompatible_qos=lambda _event: None)
    return [node.create_subscription(msg_type, topic, deliver("latched"), qos.LATCHED, raw=True, event_callbacks=quiet,
                                     **kwargs),
            node.create_subscription(msg_type, topic, deliver("live"), qos.LATCHED_LIVE, raw=True, **kwargs)]


def subscribe_camera(node: Node, topic: str, transport: str, callback: Callable[[Any], None]) -> Any:
    """Subscribe `callback` to a camera the way image_transport names it: `topic` (sensor_msgs/Image) for
    transport "raw", `topic`/compressed (sensor_msgs/CompressedImage, JPEG or PNG) for "compressed".
    Sensor QoS (best effort, depth 1): the newest frame only. The callback gets the message undecoded
    (image_conversions.CameraFrame.received checks it; its `rgb` decodes it where the frame is used)."""
    from sensor_msgs.msg import CompressedImage, Image

    from pixelvla_ros.image_conversions import TRANSPORTS

    if transport == "raw":
        return node.create_subscription(Image, topic, callback, qos.SENSOR)
    if transport == "compressed":
        return node.create_subscription(CompressedImage, f"{topic.rstrip('/')}/compressed", callback, qos.SENSOR)
    raise ValueError(f"image_transport {transport!r}: one of {', '.join(TRANSPORTS)}")


# s from the stop signal to the process's exit; then SIGALRM ends it. Longer than a launcher's grace before it
# escalates (pixelvla-launch --grace, 5 s), so a launcher still alive always stops its nodes first.
CLEANUP_DEADLINE_S = 10.0


class _StopFlag:
    """Set by SIGINT/SIGTERM; the spin loop polls it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.cleaning_up = False

    def handle(self, signum: int, _frame: Any) -> None:
        if self.cleaning_up and signum == signal.SIGINT:
            return  # the second Ctrl-C of a process group; cleanup is already under way
        self.event.set()


def stop_node(node: Node) -> None:
    """Call the node's `on_stop()` if it has one: the place to join worker threads and send a last
    command (a hold) before the node is destroyed. Runs once, in the main thread, after spinning ends;
    an exception is logged and never stops the teardown."""
    on_stop = getattr(node, "on_stop", None)
    if on_stop is None:
        return
    try:
        on_stop()
    except Exception as exc:  # noqa: BLE001 - teardown goes on whatever a node's cleanup does
        node.get_logger().error(f"on_stop failed: {type(exc).__name__}: {exc}")


def run_node(
    factory: Callable[[], Node],
    args: Sequence[str] | None = None,
    *,
    executor: Executor | None = None,
    on_start: Callable[[Node], None] | None = None,
    cleanup_deadline_s: float = CLEANUP_DEADLINE_S,
) -> int:
    """Create the node with `factory`, spin it until SIGINT/SIGTERM, destroy it; return an exit code.

    `executor` defaults to a single-threaded one: every callback runs in this (the main) thread, one
    at a time, so nodes need no locks and thread-bound resources (an EGL context) work; long work
    (inference) belongs in a worker thread of the node's own. `on_start` runs once after the
    node exists (e.g. lifecycle autostart). Exceptions raised while constructing or spinning are
    logged and give exit code 1. Meant to be the last thing a process does: SIGINT stays ignored after
    it returns, and the process ends by SIGALRM if it has not exited `cleanup_deadline_s` after spinning
    stopped.
    """
    stop = _StopFlag()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop.handle)
    rclpy.init(args=list(args) if args is not None else None, signal_handler_options=SignalHandlerOptions.NO)
    executor = executor or SingleThreadedExecutor()
    node: Node | None = None
    code = 0
    try:
        node = factory()
        executor.add_node(node)
        if on_start is not None:
            on_start(node)
        while rclpy.ok() and not stop.event.is_set():
            executor.spin_once(timeout_sec=0.1)
    except Exception as exc:  # noqa: BLE001 - any failure ends the node with a clear log line
        logger = node.get_logger() if node is not None else rclpy.logging.get_logger("pixelvla_ros")
        logger.fatal(f"{type(exc).__name__}: {exc}")
        code = 1
    finally:
        # From here to the process's exit a further SIGINT (the second of a Ctrl-C) is ignored; Python's
        # default handler never comes back: a KeyboardInterrupt while threads are joined or the interpreter
        # exits can abort the process. A DDS teardown that hangs must not outlive the launcher's SIGTERM
        # escalation: SIGTERM ends the process at once.
        stop.cleaning_up = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # The kernel's timer, not a thread: it fires even inside a C++ destructor at interpreter exit.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_REAL, cleanup_deadline_s)
        if node is not None:
            stop_node(node)
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
    return code


class BackgroundNode:
    """A node in a context of its own, spun in a background thread: for tools and tests whose main thread blocks
    (a browser, an evaluation loop) while messages must still arrive on time. `close()` stops and destroys it."""

    def __init__(self, name: str, domain_id: int | None = None) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._running:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
