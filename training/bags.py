"""ROS 2 bags (MCAP) through `rosbags`, no ROS install needed: writing recorded topics, reading them back.

Messages stay CDR-serialized bytes end to end (what rclpy's `raw=True` subscriptions hand over and
what `rclpy.serialization` produces), so a bag holds exactly what was published. The project's own
message types (msg/*.msg) are registered in the typestore from their definitions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

PACKAGE = "pixelvla_ros"


def project_typestore(msg_dir: str | Path) -> Typestore:
    """The ROS 2 Kilted typestore plus the `pixelvla_ros/msg/*` types defined in `msg_dir`."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(Path(msg_dir).glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    if not types:
        raise FileNotFoundError(f"no .msg files in {msg_dir}")
    store.register(types)
    return store


class BagWriter:
    """One MCAP bag: `add_topic` once per topic, then `write` serialized messages in any order."""

    def __init__(self, path: str | Path, typestore: Typestore) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists: choose a new bag path (bags are never overwritten)")
        self.typestore = typestore
        self.writer = Writer(self.path, version=8, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connections: dict = {}
        self.count = 0

    def add_topic(self, topic: str, msgtype: str) -> None:
        """`msgtype` in ROS form, e.g. "sensor_msgs/msg/Image"."""
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.typestore)

    def write(self, topic: str, stamp_ns: int, data: bytes) -> None:
        self.writer.write(self.connections[topic], int(stamp_ns), bytes(data))
        self.count += 1

    def close(self) -> None:
        self.writer.close()


def read_bag(path: str | Path, typestore: Typestore, topics: list[str] | None = None) -> Iterator[tuple[str, int, object]]:
    """(topic, log time ns, deserialized message) for every message of `topics` (all if None), in time order."""
    with Reader(path) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        for connection, stamp_ns, data in reader.messages(connections=connections):
            yield connection.topic, stamp_ns, typestore.deserialize_cdr(data, connection.msgtype)
