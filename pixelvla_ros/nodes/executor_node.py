"""Chunk executor node: ActionChunk in, JointTrajectory commands out, within every safety limit.

Every decision is `pixelvla_robots.executor.ChunkExecutor`'s (its module docstring says exactly what
is enforced, with these parameter names); this node feeds it the chunks, the measured joints and the
e-stop, asks it what to send on every chunk, every joint state and every half control period, and
publishes that:
- move: trajectory_msgs/JointTrajectory with one point (joint targets) on
  `/arm_controller/joint_trajectory` (ros2_control / Interbotix convention), stamped with the move's
  slot (see the executor's rate limit) and reached one period after it is sent; and the gripper's
  on `/gripper_controller/joint_trajectory` (the `left_finger` joint, m, 0.015 closed .. 0.037 open);
- nothing while the arm holds (a used-up plan, the watchdog): the controller keeps the last target;
- stop: the arm's joint names and no points, stamp 0 ("now": a stamped trajectory without points
  would end in the past and be refused). A ros2_control joint trajectory controller of the Foxy /
  early Humble line holds the arm where it is; later releases refuse a trajectory without points
  ("Empty trajectory received.") and finish their current one-period segment, itself a command
  within every limit, then hold. The `sim` node stops where it is;
- `/diagnostics`: OK while executing, WARN while holding (and why), ERROR for the e-stop or a joint
  measured beyond its limit; the last refused chunk and why. Published at once on a refusal or a
  stop, and every second.
The arm is `robot_model`'s (pixelvla_robots.base.get_robot: joints, limits, fk and IK, gripper mapping); a
robot without kinematics here (google_robot) is refused at start-up, and the policy node set leaves the
executor out for it.
The e-stop (`/pixelvla/estop`, std_msgs/Bool true) latches until `~/reset_estop` (std_srvs/Trigger).
On shutdown (`on_stop`, called by node_base.run_node) the node sends a final hold, arm only: one
point at the measured joints (clamped into the limits; a hair beyond counts as at the limit), or a
stop when they are unknown, stale or beyond a limit or the e-stop is latched, and waits up to a
second for the controller to acknowledge it (a point at the measured joints is what every controller
version takes as "stay here"; the gripper keeps its last command).
"""
from __future__ import annotations

import sys

from builtin_interfaces.msg import Duration as DurationMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pixelvla_ros import qos
from pixelvla_ros.msg import ActionChunk
from pixelvla_ros.node_base import ParameterMixin, joint_positions, run_node, stamp_seconds, subscribe_latched
from pixelvla_robots.base import NoKinematics, no_kinematics_reason
from pixelvla_robots.executor import (
    DEFAULT_MAX_JOINT_VELOCITY, MOVE, NO_ACTION_DUE, STOP, TICKS_PER_PERIOD, Chunk, ChunkRejected, Command, JointReading,
    chunk_executor_from_parameters,
)

ACK_TIMEOUT_S = 1.0  # how long the final hold waits for the controller's acknowledgement


class ExecutorNode(ParameterMixin, Node):
    def __init__(self) -> None:
        super().__init__("executor")
        self.robot = self.declare_robot()
        if not self.robot.has_kinematics:  # the policy node set leaves the executor out for such a robot
            raise NoKinematics(no_kinematics_reason(self.robot.model))
        self.joint_names = list(self.declare("joint_names", list(self.robot.joint_names), "arm joints, IK order"))
        if len(self.joint_names) != len(self.robot.joint_names):
            raise ValueError(f"joint_names must name the {len(self.robot.joint_names)} arm joints of "
                             f"{self.robot.model}, got {self.joint_names}")
        self.gripper_joint = self.declare("gripper_joint", self.robot.finger_joint, "finger joint of the gripper command")
        # Declared here (described, validated); turned into the executor by chunk_executor_from_parameters,
        # as the in-process ChunkControl does from the robot's YAML.
        parameters = {
            "robot_model": self.robot.model,
            "control_rate_hz": self.declare("control_rate_hz", 5.0, "arm targets per second at most", minimum=0.5, maximum=100.0),
            "strategy": self.declare("strategy", "receding_horizon", "receding_horizon or temporal_ensemble"),
            "execute_steps": self.declare("execute_steps", 5, "receding horizon: actions executed per chunk", minimum=1),
            "steps_per_inference": self.declare("steps_per_inference", 1, "a chunk comes every this many control "
                                                "periods (the policy node's): the actions before it run on time", minimum=1),
            "ensemble_decay": self.declare("ensemble_decay", 0.1, "temporal ensembling: k of exp(-k i)", minimum=0.0),
            "max_chunk_age": self.declare("max_chunk_age", 1.0, "older chunks (s since their image) are refused", minimum=0.0),
            "max_future_stamp": self.declare("max_future_stamp", 0.1, "chunks stamped later than now + this (s) are refused", minimum=0.0),
            "min_chunk_dt": self.declare("min_chunk_dt", 0.01, "chunks with a shorter dt (s) are refused", minimum=1e-4),
            "max_chunk_dt": self.declare("max_chunk_dt", 1.0, "chunks with a longer dt (s) are refused", minimum=1e-4),
            "workspace_min": self.declare("workspace_min", [0.10, -0.35, 0.02], "workspace box min corner (m, base frame)"),
            "workspace_max": self.declare("workspace_max", [0.50, 0.35, 0.45], "workspace box max corner (m, base frame)"),
            "max_step_translation": self.declare("max_step_translation", 0.05, "TCP step per command from the measured TCP (m)", minimum=0.002),
            "max_step_rotation": self.declare("max_step_rotation", 0.35, "TCP rotation per command from the measured TCP (rad)", minimum=0.01),
            "max_joint_velocity": self.declare("max_joint_velocity", list(DEFAULT_MAX_JOINT_VELOCITY),
                                               "per joint (rad/s, joint_names order): a command moves a joint at most this x period"),
            "watchdog_timeout": self.declare("watchdog_timeout", 1.0, "hold after this long without a chunk (s)", minimum=0.0),
            "max_tracking_error": self.declare("max_tracking_error", 0.03, "commanded-to-measured TCP distance that restarts a plan (m)", minimum=0.001),
            "max_joint_state_age": self.declare("max_joint_state_age", 0.5, "stop when the newest joint state arrived longer ago (s)", minimum=0.0),
        }
        self.chunk_executor = chunk_executor_from_parameters(parameters)
        self.period = self.chunk_executor.period  # s, 1 / control_rate_hz
        self.reading: JointReading | None = None  # the newest valid joint state
        self.last_rejection = ""
        self.reported_state = self.chunk_executor.state
        self.commands_sent = 0

        self.arm_pub = self.create_publisher(JointTrajectory, "arm_controller/joint_trajectory", qos.COMMAND)
        self.gripper_pub = self.create_publisher(JointTrajectory, "gripper_controller/joint_trajectory", qos.COMMAND)
        self.diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.create_subscription(ActionChunk, "pixelvla/action_chunk", self.on_chunk, qos.COMMAND)
        self.create_subscription(JointState, "joint_states", self.on_joint_state, qos.SENSOR)
        # `ros2 topic pub` and latched publishers alike; a restarted executor gets a latched e-stop too.
        subscribe_latched(self, Bool, "pixelvla/estop", self.on_estop)
        self.create_service(Trigger, "~/reset_estop", self.on_reset_estop)
        # Polls the executor TICKS_PER_PERIOD times a period (the executor allows a move a quarter
        # period after its slot).
        self.tick_timer = self.create_timer(self.period / TICKS_PER_PERIOD, self.on_timer)
        self.create_timer(1.0, self.publish_diagnostics)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ---------------------------------------------------------------- inputs
    def on_chunk(self, msg: ActionChunk) -> None:
        try:
            if msg.action_space not in ("", "ee_delta"):
                raise ChunkRejected(f"action space {msg.action_space!r}: this executor runs ee_delta")
            chunk = Chunk.checked(stamp_seconds(msg.header.stamp), msg.dt, msg.actions, msg.horizon, msg.action_dim)
            self.chunk_executor.offer(chunk, self.now())
        except ChunkRejected as exc:
            self.last_rejection = f"chunk {msg.sequence}: {exc}"
            self.get_logger().warning(f"refused {self.last_rejection}", throttle_duration_sec=1.0)
            self.publish_diagnostics()
            return
        self.step()

    def on_joint_state(self, msg: JointState) -> None:
        joints = joint_positions(msg, self.joint_names)  # None unless all six are there and finite
        if joints is not None:
            received = self.now()
            stamp = stamp_seconds(msg.header.stamp)
            self.reading = JointReading(joints, stamp if stamp > 0 else received, received)  # unstamped: measured on arrival
        self.step()

    def on_estop(self, msg: Bool) -> None:
        if msg.data and not self.chunk_executor.estopped:
            self.chunk_executor.estop()
            self.get_logger().error("E-STOP: stopping the arm until ~/reset_estop is called")
            self.step()

    def on_reset_estop(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.chunk_executor.reset_estop()
        self.get_logger().warning("e-stop reset: chunks are executed again")
        response.success, response.message = True, "e-stop reset"
        return response

    def on_timer(self) -> None:
        self.step()

    # ---------------------------------------------------------------- outputs
    def step(self) -> None:
        command = self.chunk_executor.tick(self.now(), self.reading)
        if command is not None:
            self.send(command)
        state = self.chunk_executor.state
        if state != self.reported_state:  # report a hold once, when it begins (a stop reports itself)
            self.reported_state = state
            if command is None and state not in ("executing", NO_ACTION_DUE):
                (self.get_logger().error if self.chunk_executor.fault else self.get_logger().warning)(f"holding: {state}")
                self.publish_diagnostics()

    def send(self, command: Command) -> None:
        if command.kind == MOVE:
            if command.reason:
                self.get_logger().info(f"safety gate: {command.reason}")
        else:
            log = self.get_logger().error if command.fault else self.get_logger().warning
            log(f"{command.kind}: {command.reason}")
        arm = JointTrajectory(joint_names=self.joint_names)
        if command.kind != STOP:
            # Stamped with its slot (at most a quarter period ago), reached a full period after now.
            seconds, nanoseconds = divmod(int(round(command.time * 1e9)), 10**9)
            arm.header.stamp.sec, arm.header.stamp.nanosec = seconds, nanoseconds
            reach_s, reach_ns = divmod(int(round((self.period + max(0.0, self.now() - command.time)) * 1e9)), 10**9)
            reach = DurationMsg(sec=reach_s, nanosec=reach_ns)
            arm.points = [JointTrajectoryPoint(positions=command.joints.tolist(), time_from_start=reach)]
        self.arm_pub.publish(arm)
        if command.kind == MOVE:
            gripper = JointTrajectory(joint_names=[self.gripper_joint])
            gripper.header.stamp = arm.header.stamp
            gripper.points = [JointTrajectoryPoint(positions=[self.robot.gripper_to_finger(command.gripper)], time_from_start=reach)]
            self.gripper_pub.publish(gripper)
        else:
            self.publish_diagnostics()
        self.commands_sent += 1

    def on_stop(self) -> None:
        """Shutdown (node_base.run_node): send the final hold and wait for the controller to have it."""
        self.tick_timer.cancel()
        self.send(self.chunk_executor.final_hold(self.now(), self.reading))
        if not self.arm_pub.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)):
            self.get_logger().warning(f"final hold not acknowledged within {ACK_TIMEOUT_S} s")

    def publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name="pixelvla: chunk executor", hardware_id=self.get_name())
        state = self.chunk_executor.state
        if self.chunk_executor.fault or self.chunk_executor.estopped:
            status.level, status.message = DiagnosticStatus.ERROR, state
        elif state in ("executing", NO_ACTION_DUE):
            status.level, status.message = DiagnosticStatus.OK, f"executing chunks ({state})"
        else:
            status.level, status.message = DiagnosticStatus.WARN, f"holding: {state}"
        age = self.now() - self.reading.received if self.reading is not None else float("inf")
        status.values = [
            KeyValue(key="commands_sent", value=str(self.commands_sent)),
            KeyValue(key="last_rejection", value=self.last_rejection),
            KeyValue(key="joint_state_age_s", value=f"{age:.3f}"),
        ]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)


def main(args=None) -> int:
    return run_node(ExecutorNode, args)


if __name__ == "__main__":
    sys.exit(main())
