"""Chunk executor node: ActionChunk in, JointTrajectory commands out, within every safety limit.

All decisions live in `pixelvla_training.control.ChunkExecutor`; this node feeds it the chunks,
the measured joints and the e-stop, and publishes what it decides once per control tick (a new
chunk starts a tick as soon as a joint state as new as its image is in, unless chunks come faster
than the control rate):
- arm: trajectory_msgs/JointTrajectory with one point (joint targets, time_from_start = one tick)
  on `/arm_controller/joint_trajectory` (ros2_control / Interbotix convention);
- gripper: a JointTrajectory for the `left_finger` joint (metres, 0.015 closed .. 0.037 open) on
  `/gripper_controller/joint_trajectory`;
- `/diagnostics`: holding or executing, and the last rejected chunk with its reason.
The e-stop (`/pixelvla/estop`, std_msgs/Bool true) latches until `~/reset_estop` (std_srvs/Trigger).
"""
from __future__ import annotations

import math
import sys

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pixelvla_ros import qos
from pixelvla_ros.msg import ActionChunk
from pixelvla_ros.node_base import ParameterMixin, joint_positions, run_node, stamp_seconds
from pixelvla_training.control import NO_ACTION_DUE, Chunk, ChunkExecutor, ChunkRejected, ChunkSchedule, SafetyGate
from pixelvla_training.robots import wx250s


class ExecutorNode(ParameterMixin, Node):
    def __init__(self) -> None:
        super().__init__("executor")
        self.joint_names = list(self.declare("joint_names", list(wx250s.JOINT_NAMES), "arm joints, IK order"))
        if len(self.joint_names) != 6:
            raise ValueError(f"joint_names must name the 6 arm joints, got {self.joint_names}")
        self.gripper_joint = self.declare("gripper_joint", "left_finger", "finger joint of the gripper command (m)")
        rate = self.declare("control_rate_hz", 5.0, "control ticks per second", minimum=0.5, maximum=100.0)
        self.period = 1.0 / rate
        schedule = ChunkSchedule(
            strategy=self.declare("strategy", "receding_horizon", "receding_horizon or temporal_ensemble"),
            execute_steps=self.declare("execute_steps", 5, "receding horizon: actions executed per chunk", minimum=1),
            ensemble_decay=self.declare("ensemble_decay", 0.1, "temporal ensembling: k of exp(-k i)", minimum=0.0),
            max_chunk_age=self.declare("max_chunk_age", 1.0, "older chunks (s since their image) are refused", minimum=0.0),
        )
        gate = SafetyGate(
            workspace_min=self.declare("workspace_min", [0.10, -0.35, 0.02], "workspace box min corner (m, base frame)"),
            workspace_max=self.declare("workspace_max", [0.50, 0.35, 0.45], "workspace box max corner (m, base frame)"),
            max_step_translation=self.declare("max_step_translation", 0.05, "per action (m)", minimum=1e-4),
            max_step_rotation=self.declare("max_step_rotation", 0.35, "per action (rad)", minimum=1e-4),
        )
        self.chunk_executor = ChunkExecutor(
            schedule, gate,
            watchdog_timeout=self.declare("watchdog_timeout", 1.0, "hold after this long without a chunk (s)"),
            max_tracking_error=self.declare("max_tracking_error", 0.03, "commanded-to-measured TCP distance that restarts a plan (m)", minimum=0.001),
        )
        self.joints: np.ndarray | None = None
        self.joints_stamp = -math.inf  # s, when self.joints were measured
        self.pending: tuple[int, Chunk, float] | None = None  # (sequence, chunk, arrival s): waiting to start
        self.gripper_state = 1.0
        self.last_rejection = ""
        self.last_reason = "waiting for joint states"
        self.holding: str | None = "waiting for the first chunk"  # why the arm holds; None while executing
        self.last_chunk_start = -1.0e9  # s, node clock: when a chunk last started at once
        self.commands_sent = 0

        self.arm_pub = self.create_publisher(JointTrajectory, "/arm_controller/joint_trajectory", qos.COMMAND)
        self.gripper_pub = self.create_publisher(JointTrajectory, "/gripper_controller/joint_trajectory", qos.COMMAND)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(ActionChunk, "/pixelvla/action_chunk", self.on_chunk, qos.COMMAND)
        self.create_subscription(JointState, "/joint_states", self.on_joint_state, qos.SENSOR)
        self.create_subscription(Bool, "/pixelvla/estop", self.on_estop, qos.COMMAND)
        self.create_service(Trigger, "~/reset_estop", self.on_reset_estop)
        self.tick_timer = self.create_timer(self.period, self.on_timer)
        self.create_timer(1.0, self.publish_diagnostics)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def on_chunk(self, msg: ActionChunk) -> None:
        try:
            if msg.action_space not in ("", "ee_delta"):
                raise ChunkRejected(f"action space {msg.action_space!r}: this executor runs ee_delta")
            chunk = Chunk.checked(stamp_seconds(msg.header.stamp), msg.dt, msg.actions, msg.horizon, msg.action_dim)
        except ChunkRejected as exc:
            self.refuse(msg.sequence, exc)
            return
        self.pending = (msg.sequence, chunk, self.now())
        self.start_pending_chunk()

    def refuse(self, sequence: int, exc: ChunkRejected) -> None:
        self.last_rejection = f"chunk {sequence}: {exc}"
        self.get_logger().warning(f"refused {self.last_rejection}")

    def start_pending_chunk(self) -> bool:
        """Hand the newest chunk to the executor once a joint state as new as its image is in, and
        run its first action at once; True when that action ran.

        The command then follows the image by the model's latency alone, whatever the phase between
        camera and control timer, and the chunk's actions count from then. A plan anchored on
        joints older than the image would add the action to a pose the arm has left (a joint state
        published with the image may arrive after the chunk); after one control period without a
        fresh one (clocks apart) the chunk starts anyway. Chunks that come faster than the control
        rate wait for the tick: a stream of chunks must not speed the arm up (counted from the last
        chunk that started at once, not from the last tick, which must not lock chunks into its phase).
        """
        if self.pending is None:
            return False
        sequence, chunk, arrival = self.pending
        now = self.now()
        if self.joints_stamp < chunk.stamp and now - arrival < self.period:
            return False
        self.pending = None
        try:
            self.chunk_executor.add_chunk(chunk, now)
        except ChunkRejected as exc:
            self.refuse(sequence, exc)
            return False
        if now - self.last_chunk_start < 0.9 * self.period:
            return False
        self.last_chunk_start = now
        self.tick_timer.reset()
        self.on_tick()
        return True

    def on_joint_state(self, msg: JointState) -> None:
        joints = joint_positions(msg, self.joint_names)
        if joints is not None:
            self.joints = joints
            stamp = stamp_seconds(msg.header.stamp)
            self.joints_stamp = stamp if stamp > 0 else self.now()  # unstamped: measured on arrival
        finger = joint_positions(msg, [self.gripper_joint])
        if finger is not None:
            self.gripper_state = wx250s.finger_to_gripper(float(finger[0]))
        self.start_pending_chunk()

    def on_estop(self, msg: Bool) -> None:
        if msg.data and not self.chunk_executor.estopped:
            self.chunk_executor.estop()
            self.pending = None
            self.get_logger().error("E-STOP: holding position until ~/reset_estop is called")
            self.on_tick()

    def on_reset_estop(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.chunk_executor.reset_estop()
        self.get_logger().warning("e-stop reset: chunks are executed again")
        response.success, response.message = True, "e-stop reset"
        return response

    def on_timer(self) -> None:
        if not self.start_pending_chunk():
            self.on_tick()

    def on_tick(self) -> None:
        if self.joints is None:
            return
        now = self.now()
        command = self.chunk_executor.tick(now, self.joints, self.gripper_state)
        self.last_reason = command.reason or "executing"
        if command.hold and (command.reason == self.holding or self.commands_sent == 0):
            return  # one command per hold (the controller keeps its target), none before the first action
        if command.reason and not command.hold:
            self.get_logger().info(f"safety gate: {command.reason}")
        elif command.hold and command.reason != NO_ACTION_DUE:
            self.get_logger().warning(f"holding: {command.reason}")
        self.holding = command.reason if command.hold else None
        stamp = self.get_clock().now().to_msg()
        reach = Duration(sec=int(self.period), nanosec=int((self.period % 1.0) * 1e9))
        arm = JointTrajectory(joint_names=self.joint_names)
        arm.header.stamp = stamp
        arm.points = [JointTrajectoryPoint(positions=command.joints.tolist(), time_from_start=reach)]
        gripper = JointTrajectory(joint_names=[self.gripper_joint])
        gripper.header.stamp = stamp
        gripper.points = [JointTrajectoryPoint(positions=[wx250s.gripper_to_finger(command.gripper)], time_from_start=reach)]
        self.arm_pub.publish(arm)
        self.gripper_pub.publish(gripper)
        self.commands_sent += 1

    def publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name="pixelvla: chunk executor", hardware_id=self.get_name())
        if self.chunk_executor.estopped:
            status.level, status.message = DiagnosticStatus.ERROR, "e-stop latched"
        elif self.holding is not None:
            status.level, status.message = DiagnosticStatus.WARN, f"holding: {self.last_reason}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "executing chunks"
        status.values = [
            KeyValue(key="commands_sent", value=str(self.commands_sent)),
            KeyValue(key="last_rejection", value=self.last_rejection),
        ]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)


def main(args=None) -> int:
    return run_node(ExecutorNode, args)


if __name__ == "__main__":
    sys.exit(main())
