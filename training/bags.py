"""ROS 2 bags (MCAP) through `rosbags`, no ROS install needed: writing recorded topics, reading them back.

Messages stay CDR-serialized bytes end to end (what rclpy's `raw=True` subscriptions hand over and
what `rclpy.serialization` produces), so a bag holds exactly what was published. The project's own
message types (msg/*.msg) are registered in the typestore from their definitions.

A crash must not cost the recording. `BagWriter` hands what it has to the operating system at least
every `flush_period_s` (rosbags alone keeps up to 1 MiB of messages in memory), so a recorder killed
with -9 loses at most that last moment. `read_bag` reads a bag that was never closed (no metadata.yaml;
an MCAP file without its summary, or cut off in the middle of a record: a crash, a full disk) record by
record up to the damage, and logs a warning with what it read and what is missing.

The episode readers (training's `datasets.bags`, the labeler's `BagSource`; one episode per bag) share
`find_bags` (the bags under a folder, closed or not) and `read_bag_topics` (one bag's wanted topics as
stamped per-topic lists, images decoded by `pixelvla_robots.images`).
"""
from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from pixelvla_robots.images import ImageError, image_to_mono, image_to_rgb

PACKAGE = "pixelvla_ros"
logger = logging.getLogger(__name__)


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
    """One MCAP bag: `add_topic` once per topic, then `write` serialized messages in any order.

    Everything written is in the file (the OS's page cache) within `flush_period_s`: on each `write`, and
    on `flush_if_due`, which a caller with quiet periods calls from a timer.
    """

    def __init__(self, path: str | Path, typestore: Typestore, flush_period_s: float = 0.5) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists: choose a new bag path (bags are never overwritten)")
        self.typestore = typestore
        self.writer = Writer(self.path, version=8, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connections: dict = {}
        self.count = 0
        self.flush_period_s = flush_period_s
        self.flushed_at = time.monotonic()

    def add_topic(self, topic: str, msgtype: str) -> None:
        """`msgtype` in ROS form, e.g. "sensor_msgs/msg/Image"."""
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.typestore)

    def write(self, topic: str, stamp_ns: int, data: bytes) -> None:
        self.writer.write(self.connections[topic], int(stamp_ns), bytes(data))
        self.count += 1
        self.flush_if_due()

    def flush_if_due(self) -> None:
        if time.monotonic() - self.flushed_at >= self.flush_period_s:
            self.flush()

    def flush(self) -> None:
        """Hand everything written so far to the OS: a crash of this process loses none of it from now on.

        rosbags' MCAP writer collects messages in an in-memory chunk until it holds 1 MiB; ending the chunk
        early only makes the file's chunks smaller. (rosbags internals: test_datasets' crash test checks them.)
        """
        storage = self.writer.storage
        if storage.chunk.bio.tell():
            storage.close_chunk()
        storage.bio.flush()
        self.flushed_at = time.monotonic()

    def close(self) -> None:
        self.writer.close()


def is_bag(folder: str | Path) -> bool:
    """A bag folder: it holds a metadata.yaml, or MCAP files without one (a bag never closed, which `read_bag`
    reads up to the damage; a sqlite3 bag needs its metadata.yaml)."""
    folder = Path(folder)
    return (folder / "metadata.yaml").is_file() or any(folder.glob("*.mcap"))


def find_bags(root: str | Path) -> list[Path]:
    """The bag folders at `root`: `root` itself if it is one, else every bag folder below it (at any depth, none
    looked for inside a bag), sorted. The one discovery of bags: training's `bags` sources and the labeler's."""
    root = Path(root)
    if is_bag(root):
        return [root]
    found: list[Path] = []
    seen: set[Path] = set()  # resolved folders: a symlinked folder is followed once (no loops, no duplicates)

    def walk(folder: Path) -> None:
        for p in folder.iterdir():
            if p.is_dir() and p.resolve() not in seen:
                seen.add(p.resolve())
                if is_bag(p):
                    found.append(p)
                else:
                    walk(p)

    if root.is_dir():
        walk(root)
    return sorted(found)


@dataclass
class Stamped:
    """One message of a bag: `stamp` its header stamp in ns (the log time where the message has no header),
    `log_ns` the bag's log time (when the recorder received it), `value` the deserialized message, or for an
    image topic of `read_bag_topics` the decoded pixels."""

    stamp: int
    log_ns: int
    value: object


@dataclass
class BagTopics:
    """The messages of one bag, per wanted topic in bag order (`read_bag`'s); `bag[topic]` is that list (empty
    for a topic not in the bag). `bad_images[topic]`: (index among the topic's messages, ImageError) of each
    image that did not decode, left out of the list."""

    path: Path
    messages: dict[str, list[Stamped]]
    bad_images: dict[str, list[tuple[int, ImageError]]]

    def __getitem__(self, topic: str) -> list[Stamped]:
        return self.messages.get(topic, [])


IMAGE_DECODERS = {"rgb": image_to_rgb, "mono": image_to_mono}  # pixelvla_robots.images: (H, W, 3) / (H, W) uint8


def read_bag_topics(path: str | Path, typestore: Typestore, topics: list[str],
                    images: dict[str, str] | None = None) -> BagTopics:
    """One bag's messages of `topics` (the one reading loop of the episode readers: training's and the
    labeler's), read through `read_bag` (a bag cut short gives what is intact, and a warning).

    `images` {topic: "rgb" | "mono"}: those topics' messages are decoded by `pixelvla_robots.images`
    (`image_to_rgb`, `image_to_mono`); an image that does not decode goes to `bad_images`. Any other failure to
    read the bag raises, for the caller to report in its own terms.
    """
    decoders = {topic: IMAGE_DECODERS[kind] for topic, kind in (images or {}).items()}
    wanted = list(dict.fromkeys([*topics, *decoders]))
    bag = BagTopics(Path(path), {t: [] for t in wanted}, {t: [] for t in decoders})
    for topic, log_ns, msg in read_bag(path, typestore, wanted):
        header = getattr(msg, "header", None)
        stamp = log_ns if header is None else int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        value = msg
        if topic in decoders:
            try:
                value = decoders[topic](msg)
            except ImageError as exc:
                bag.bad_images[topic].append((len(bag.messages[topic]) + len(bag.bad_images[topic]), exc))
                continue
        bag.messages[topic].append(Stamped(stamp, log_ns, value))
    return bag


def read_bag(path: str | Path, typestore: Typestore, topics: list[str] | None = None) -> Iterator[tuple[str, int, object]]:
    """(topic, log time ns, deserialized message) for every message of `topics` (all if None).

    A closed bag is read through rosbags, in time order. A bag cut short (see the module doc) is read in
    file order (the recorder's arrival order) up to the damage, and a warning says what was lost.
    """
    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        yield from _read_cut_short(path, typestore, topics, "no metadata.yaml: the bag was never closed (its recorder crashed or was killed?)")
        return
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises ReaderError for most damage, TypeError for some
        yield from _read_cut_short(path, typestore, topics, f"cannot be read as a closed bag ({type(exc).__name__}: {exc})")
        return
    try:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        for connection, stamp_ns, data in reader.messages(connections=connections):
            yield connection.topic, stamp_ns, typestore.deserialize_cdr(data, connection.msgtype)
    finally:
        reader.close()


def _read_cut_short(path: Path, typestore: Typestore, topics: list[str] | None, why: str) -> Iterator[tuple[str, int, object]]:
    files = sorted(path.glob("*.mcap"))
    if not files:
        raise ReaderError(f"{path}: {why}, and it holds no MCAP file to read what is intact")
    total = 0
    damage = []
    for file in files:
        scan = McapScan(file)
        for topic, msgtype, stamp_ns, data in scan.messages():
            total += 1
            if topics is None or topic in topics:
                yield topic, stamp_ns, typestore.deserialize_cdr(data, msgtype)
        if not scan.complete:
            damage.append(f"{file.name} ends without its summary" + (
                f", its last {scan.cut_bytes} bytes cut off mid-record" if scan.cut_bytes else ""))
    expected = _listed_message_count(path)
    lost = f" of the {expected} its metadata.yaml lists: {expected - total} lost" if expected is not None else ""
    logger.warning("%s: %s; read %d messages%s%s", path, why, total, lost,
                   f" ({'; '.join(damage)}; what followed is lost)" if damage else " (its MCAP data is whole)")


def _listed_message_count(path: Path) -> int | None:
    try:
        return int(yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["message_count"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


MCAP_MAGIC = b"\x89MCAP0\r\n"
OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_DATA_END = 0x03, 0x04, 0x05, 0x06, 0x0F


@dataclass
class McapScan:
    """An MCAP file read front to back, record by record (MCAP is a sequence of [opcode u8, length u64,
    body] records; messages sit in chunk records), up to the first record that is cut off.

    After `messages()`: `complete` is True if the data section ended properly (the file was closed), and
    `cut_bytes` counts the bytes at the end that belong to a record cut off (0: it ends between records).
    The whole records of an uncompressed chunk (the recorder's) that is cut off are read too.
    """

    path: Path
    complete: bool = False
    cut_bytes: int = 0

    def messages(self) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, ROS message type, log time ns, CDR data) in file order."""
        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}
        for op, body in self._records():
            if op == OP_SCHEMA:  # id u16, name string, ...
                schemas[struct.unpack_from("<H", body)[0]] = _string(body, 2)
            elif op == OP_CHANNEL:  # id u16, schema id u16, topic string, ...
                channel_id, schema_id = struct.unpack_from("<HH", body)
                channels[channel_id] = (_string(body, 4), schemas.get(schema_id, ""))
            elif op == OP_MESSAGE:  # channel id u16, sequence u32, log time u64, publish time u64, data
                channel_id, _, log_time = struct.unpack_from("<HIQ", body)
                if channel_id in channels:
                    topic, msgtype = channels[channel_id]
                    yield topic, msgtype, log_time, body[22:]
            elif op == OP_DATA_END:
                self.complete = True
                return

    def _records(self) -> Iterator[tuple[int, bytes]]:
        """(opcode, body) of every whole record, those inside chunks in place of their chunk."""
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            magic = f.read(8)
            if magic != MCAP_MAGIC:
                if not MCAP_MAGIC.startswith(magic):
                    raise ReaderError(f"{self.path} is not an MCAP file")
                self.cut_bytes = size  # cut off before anything was written
                return
            while True:
                start = f.tell()
                head = f.read(9)
                if len(head) < 9 or start + 9 > size:  # `size` bounds the read: the file may still grow
                    self.cut_bytes = max(0, size - start)
                    return
                op, length = head[0], int.from_bytes(head[1:], "little")
                body = f.read(min(length, size - start - 9))  # a corrupt length must not allocate gigabytes
                whole = len(body) == length
                if op == OP_CHUNK:
                    read = yield from self._chunk_records(body, whole)
                    if not whole:
                        self.cut_bytes = size - start - (9 + read if read else 0)
                        return
                elif not whole:
                    self.cut_bytes = size - start
                    return
                else:
                    yield op, body

    @staticmethod
    def _chunk_records(body: bytes, whole: bool):
        """Yield the whole records of a chunk; return how many bytes of `body` they and the header span
        (0 if nothing in it could be read)."""
        if len(body) < 32:
            return 0
        # start u64, end u64, uncompressed size u64, crc u32, compression string, records length u64, records
        name_length = struct.unpack_from("<I", body, 28)[0]
        compression = body[32:32 + name_length].decode()
        first = 32 + name_length + 8
        if compression and not whole:
            return 0  # a compressed chunk cut off: nothing in it can be read
        records = _decompress(compression, body[first:]) if compression else body[first:]
        pos = 0
        while pos + 9 <= len(records):
            op, length = records[pos], int.from_bytes(records[pos + 1:pos + 9], "little")
            if pos + 9 + length > len(records):
                break
            yield op, records[pos + 9:pos + 9 + length]
            pos += 9 + length
        return first + pos


def _string(body: bytes, offset: int) -> str:
    """An MCAP string (u32 length, UTF-8) at `offset`."""
    (length,) = struct.unpack_from("<I", body, offset)
    return body[offset + 4:offset + 4 + length].decode()


def _decompress(compression: str, data: bytes) -> bytes:
    if compression == "zstd":
        try:
            from compression import zstd  # Python >= 3.14
        except ImportError:
            from backports import zstd  # a dependency of rosbags
        return zstd.decompress(data)
    if compression == "lz4":
        from lz4.frame import decompress  # a dependency of rosbags

        return decompress(data)
    raise ReaderError(f"unknown MCAP chunk compression {compression!r}")
