"""Recorder node: topics to ROS 2 bags (MCAP), byte for byte, one bag per simulator episode.

Subscribes to `topics` with raw (serialized) subscriptions, in its namespace (`/camera/image_raw` of a
recorder in /arm1 is /arm1/camera/image_raw), and writes every message unchanged through
`pixelvla_training.bags`, under the topic's name without the namespace, so that bags of every arm read alike.
With `split_episodes` (default) a bag opens when `/sim/episode` reports a new episode and closes at the
status after the one that reports it done (so the final frame, which may arrive after that status, is in the
bag); latched inputs (instruction, prompt, mask,
camera pose) seen before are written again at the start of each bag so every bag stands alone, and
so are the messages received since the previous episode status (the new episode's first image may
be handled before its status: subscriptions are served in creation order, not arrival order).
Bags go to `<output_dir>/<task>_seed<seed>_<n>` (or `<output_dir>/recording_<time>`), never
overwriting an existing one.

A crash (kill -9, power kept) loses at most the last `flush_period` of messages: the bag is in the file
up to then, without its metadata.yaml, and `pixelvla_training.bags.read_bag` reads it and says what is
missing. A failed write (disk full) ends that bag with an error line; the node goes on with the next one.
"""
from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

from rclpy.node import Node
from rclpy.serialization import deserialize_message
from std_msgs.msg import String

from pixelvla_ros import qos
from pixelvla_ros.launching.description import share_dir
from pixelvla_ros.node_base import ParameterMixin, run_node, subscribe_latched
from pixelvla_training.bags import BagWriter, project_typestore

# topic -> (ROS type, QoS). Latched topics are re-written at the start of each bag.
KNOWN_TOPICS = {
    "/camera/image_raw": ("sensor_msgs/msg/Image", qos.SENSOR),
    "/camera/camera_info": ("sensor_msgs/msg/CameraInfo", qos.SENSOR),
    "/camera/pose": ("geometry_msgs/msg/PoseStamped", qos.LATCHED),
    "/joint_states": ("sensor_msgs/msg/JointState", qos.SENSOR),
    "/pixelvla/instruction": ("std_msgs/msg/String", qos.LATCHED),
    "/pixelvla/prompt": ("pixelvla_ros/msg/VisualPrompt", qos.LATCHED),
    "/pixelvla/place_prompt": ("pixelvla_ros/msg/VisualPrompt", qos.LATCHED),
    "/pixelvla/mask": ("sensor_msgs/msg/Image", qos.LATCHED),
    "/pixelvla/action_chunk": ("pixelvla_ros/msg/ActionChunk", qos.COMMAND),
    "/pixelvla/status": ("pixelvla_ros/msg/PolicyStatus", qos.LATCHED),
    "/arm_controller/joint_trajectory": ("trajectory_msgs/msg/JointTrajectory", qos.COMMAND),
    "/gripper_controller/joint_trajectory": ("trajectory_msgs/msg/JointTrajectory", qos.COMMAND),
    "/sim/target_mask": ("sensor_msgs/msg/Image", qos.LATCHED),
    "/sim/episode": ("std_msgs/msg/String", qos.LATCHED),
}


def message_class(ros_type: str):
    package, kind, name = ros_type.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


class RecorderNode(ParameterMixin, Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        topics = self.declare("topics", list(KNOWN_TOPICS), "topics to record (a subset of the known ones)")
        unknown = sorted(set(topics) - set(KNOWN_TOPICS))
        if unknown:
            raise ValueError(f"cannot record {unknown}: known topics are {sorted(KNOWN_TOPICS)}")
        self.output_dir = Path(self.declare("output_dir", "results/bags", "folder the bags are written to"))
        self.split = self.declare("split_episodes", True, "one bag per simulator episode (/sim/episode)")
        if self.split and "/sim/episode" not in topics:
            raise ValueError("split_episodes needs /sim/episode among the recorded topics")
        self.flush_period = self.declare("flush_period", 0.5, "a crash loses at most about this much of the recording (s)",
                                         minimum=0.01)
        self.typestore = project_typestore(share_dir() / "msg")
        self.bag: BagWriter | None = None
        self.done_seen = False  # the open bag's episode has reported done
        self.bag_episode = None  # (task, seed, step) of the open bag's newest /sim/episode message
        self.latched: dict[str, tuple[int, bytes]] = {}
        self.since_status: list[tuple[str, int, bytes]] = []  # split mode: arrived since the last /sim/episode
        self.bags_written: list[str] = []
        for topic in topics:
            ros_type, profile = KNOWN_TOPICS[topic]
            callback = lambda data, t=topic: self.on_message(t, data)  # noqa: E731
            relative = topic.lstrip("/")  # in the node's namespace; the bag keeps the name without it
            if profile is qos.LATCHED:  # operator topics: latched and `ros2 topic pub` publishers alike
                subscribe_latched(self, message_class(ros_type), relative, callback, raw=True)
            else:
                self.create_subscription(message_class(ros_type), relative, callback, profile, raw=True)
        self.create_timer(self.flush_period / 2, self.on_flush_timer)
        if not self.split:
            self.open_bag(f"recording_{time.strftime('%Y%m%d-%H%M%S')}")

    def open_bag(self, name: str) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        n = 0
        while (self.output_dir / f"{name}_{n}").exists():
            n += 1
        self.bag = BagWriter(self.output_dir / f"{name}_{n}", self.typestore, flush_period_s=self.flush_period)
        for topic, (ros_type, _) in KNOWN_TOPICS.items():
            self.bag.add_topic(topic, ros_type)
        for topic, (stamp_ns, data) in self.latched.items():
            self.bag.write(topic, stamp_ns, data)
        for topic, stamp_ns, data in self.since_status:
            self.bag.write(topic, stamp_ns, data)
        self.get_logger().info(f"recording to {self.bag.path}")

    def close_bag(self) -> None:
        self.done_seen = False
        self.bag_episode = None
        if self.bag is not None:
            self.bag.close()
            self.bags_written.append(str(self.bag.path))
            self.get_logger().info(f"wrote {self.bag.count} messages to {self.bag.path}")
            self.bag = None

    def guarded(self, write) -> None:
        """Run `write()`; if the disk fails it (full, the folder gone), give up the open bag, not the node."""
        try:
            write()
        except OSError as exc:
            path, self.bag = (self.bag.path if self.bag else self.output_dir), None
            self.get_logger().error(f"recording to {path} stopped: {exc}. What reached the file before is kept "
                                    "(pixelvla_training.bags.read_bag reads it)")

    def on_flush_timer(self) -> None:
        """BagWriter flushes when a write finds it due; this covers quiet periods."""
        if self.bag is not None:
            self.guarded(self.bag.flush_if_due)

    def on_message(self, topic: str, data: bytes) -> None:
        self.guarded(lambda: self.record(topic, data))

    def record(self, topic: str, data: bytes) -> None:
        stamp_ns = self.get_clock().now().nanoseconds
        episode = self.parse_episode(data) if self.split and topic == "/sim/episode" else None
        if episode is not None and self.done_seen:  # one status period after "done": the episode is over
            self.close_bag()
        if episode is not None and episode.get("step") == 0 and self.bag_episode != (episode["task"], episode["seed"], 0):
            self.close_bag()  # a new episode: a new bag (one that holds at step 0 after its reset stays in it)
            self.open_bag(f"{episode['task']}_seed{episode['seed']}")
        if episode is not None:
            self.bag_episode = (episode["task"], episode["seed"], episode.get("step"))
        if topic == "/sim/episode":
            self.since_status.clear()
        elif KNOWN_TOPICS[topic][1] is qos.LATCHED:
            self.latched[topic] = (stamp_ns, data)
        elif self.split and self.bag is None:
            self.since_status.append((topic, stamp_ns, data))
        if self.bag is None:
            return
        self.bag.write(topic, stamp_ns, data)
        if episode is not None and episode.get("done"):
            self.done_seen = True

    def parse_episode(self, data: bytes) -> dict | None:
        try:
            episode = json.loads(deserialize_message(data, String).data)
            str(episode["task"]), int(episode["seed"])
            return episode
        except (ValueError, KeyError, TypeError):
            self.get_logger().error(f"unreadable /sim/episode message ({len(data)} bytes): not recorded as an episode")
            return None

    def destroy_node(self) -> None:
        self.guarded(self.close_bag)
        super().destroy_node()


def main(args=None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    sys.exit(main())
