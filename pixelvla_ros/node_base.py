"""What every node of the package shares: declared parameters and a shutdown that never hangs.

`rclpy.spin()` with rclpy's own signal handlers sometimes hangs on SIGINT/SIGTERM. `run_node`
installs its own handlers that only set a flag, spins with a short timeout until the flag is
set, then destroys the node. A second SIGINT (a terminal Ctrl-C reaches the whole process group,
and a launcher forwards one too) is ignored once cleanup has begun; a SIGTERM then ends the
process at once, so a launcher's escalation stops a node whose cleanup hangs.

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
from typing import Any, Callable, Sequence

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


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
    ) -> Any:
        """Declare `name` with `default` (its type fixes the parameter's type) and return its value."""
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
        return self.declare_parameter(name, default, descriptor).value


def joint_positions(msg, names) -> "np.ndarray | None":
    """The positions of `names`, in that order, from a sensor_msgs/JointState; None unless every one is
    there and finite (a partial or corrupt message must not move a robot)."""
    import numpy as np

    positions = dict(zip(msg.name, msg.position))
    if not all(name in positions for name in names):
        return None
    values = np.array([positions[name] for name in names], np.float64)
    return values if np.all(np.isfinite(values)) else None


def stamp_seconds(stamp) -> float:
    """A builtin_interfaces/Time (a message header's stamp) in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


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
) -> int:
    """Create the node with `factory`, spin it until SIGINT/SIGTERM, destroy it; return an exit code.

    `executor` defaults to a single-threaded one: every callback runs in this (the main) thread, one
    at a time, so nodes need no locks and thread-bound resources (an EGL context) work; long work
    (inference) belongs in a worker thread of the node's own. `on_start` runs once after the
    node exists (e.g. lifecycle autostart). Exceptions raised while constructing or spinning are
    logged and give exit code 1.
    """
    stop = _StopFlag()
    previous = {s: signal.signal(s, stop.handle) for s in (signal.SIGINT, signal.SIGTERM)}
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
        stop.cleaning_up = True
        # A DDS teardown that hangs must not outlive the launcher's SIGTERM escalation.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if node is not None:
            stop_node(node)
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code
