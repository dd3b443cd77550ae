"""The labeler's BagSource on small recorder-like bags: closed ones and ones cut short (a recorder that crashed),
found and read by the same code as training's bag reader (`pixelvla_training.bags`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pixelvla_robots import wx250s
from pixelvla_training.bags import BagWriter, find_bags, project_typestore
from pixelvla_training.labeling.sources import BagSource, EpisodeError, open_source

MSG_DIR = Path(__file__).resolve().parents[2] / "msg"
STEPS = 6


def write_bag(path: Path, bad_image: int | None = None) -> None:
    """STEPS frames (8x6 px, frame k filled with 10k), joint states per frame (each written before its frame), the latched
    instruction, camera info and camera pose first, as the recorder writes them. One MCAP chunk (the cut below falls in it)."""
    store = project_typestore(MSG_DIR)
    T = store.types
    Time, Header = T["builtin_interfaces/msg/Time"], T["std_msgs/msg/Header"]

    def header(k: int):
        return Header(stamp=Time(sec=100 + k, nanosec=0), frame_id="cam")

    topics = {"/camera/image_raw": "sensor_msgs/msg/Image", "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
              "/camera/pose": "geometry_msgs/msg/PoseStamped", "/joint_states": "sensor_msgs/msg/JointState",
              "/pixelvla/instruction": "std_msgs/msg/String"}
    path.parent.mkdir(parents=True, exist_ok=True)
    w = BagWriter(path, store, flush_period_s=3600)
    for topic, kind in topics.items():
        w.add_topic(topic, kind)

    def write(topic, ns, msg):
        w.write(topic, ns, store.serialize_cdr(msg, topics[topic]))

    write("/pixelvla/instruction", 1, T["std_msgs/msg/String"](data="pick up the red cube"))
    k = np.array([200.0, 0, 4, 0, 200, 3, 0, 0, 1])
    write("/camera/camera_info", 2, T["sensor_msgs/msg/CameraInfo"](
        header=header(0), height=6, width=8, distortion_model="plumb_bob", d=np.zeros(5), k=k, r=np.eye(3).ravel(),
        p=np.hstack([k.reshape(3, 3), np.zeros((3, 1))]).ravel(), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)))
    Pose, Point, Quaternion = T["geometry_msgs/msg/Pose"], T["geometry_msgs/msg/Point"], T["geometry_msgs/msg/Quaternion"]
    write("/camera/pose", 3, T["geometry_msgs/msg/PoseStamped"](
        header=header(0), pose=Pose(position=Point(x=0.5, y=0.0, z=0.6), orientation=Quaternion(x=0.0, y=1.0, z=0.0, w=0.0))))
    for step in range(STEPS):
        ns = (100 + step) * 10**9
        data = np.full((6, 8, 3), 10 * step, np.uint8).reshape(-1)
        image = T["sensor_msgs/msg/Image"](header=header(step), height=6, width=8, encoding="rgb8", is_bigendian=0,
                                           step=24, data=data[:-1] if step == bad_image else data)
        write("/joint_states", ns, T["sensor_msgs/msg/JointState"](
            header=header(step), name=[*wx250s.JOINT_NAMES, *wx250s.FINGER_NAMES],
            position=np.array([0.05 * step, 0, 0, 0, 0, 0, 0.036 - 0.004 * step, -0.036 + 0.004 * step]),
            velocity=np.zeros(0), effort=np.zeros(0)))
        write("/camera/image_raw", ns, image)
    w.close()


def cut_short(bag: Path) -> None:
    """What a recorder killed mid-write leaves: the MCAP file cut inside its chunk, no metadata.yaml."""
    (mcap,) = bag.glob("*.mcap")
    data = mcap.read_bytes()  # magic, header record, the chunk record (opcode 6, u64 length), ...
    chunk_at = 8 + 9 + int.from_bytes(data[9:17], "little")
    assert data[chunk_at] == 0x06
    mcap.write_bytes(data[: chunk_at + 9 + int.from_bytes(data[chunk_at + 1:chunk_at + 9], "little") * 2 // 3])
    (bag / "metadata.yaml").unlink()


def test_a_bag_cut_short_is_found_and_read_like_a_closed_one(tmp_path, caplog):
    root = tmp_path / "bags"
    write_bag(root / "day1" / "closed")
    write_bag(root / "day1" / "crashed")
    cut_short(root / "day1" / "crashed")

    source = BagSource(root)
    assert source.keys() == ["day1/closed", "day1/crashed"]
    whole = source.load("day1/closed")
    assert whole.instruction == "pick up the red cube" and whole.images.shape == (STEPS, 6, 8, 3)
    assert whole.camera is not None and whole.camera.fx == 200 and whole.tcp_poses.shape == (STEPS, 7)
    np.testing.assert_allclose(whole.finger_positions, 0.036 - 0.004 * np.arange(STEPS))

    caplog.clear()
    cut = source.load("day1/crashed")
    assert 0 < cut.num_frames < STEPS  # the frames before the damage
    np.testing.assert_array_equal(cut.images, whole.images[: cut.num_frames])
    np.testing.assert_allclose(cut.tcp_poses, whole.tcp_poses[: cut.num_frames])
    assert cut.instruction == whole.instruction and cut.camera.fx == 200
    assert any("no metadata.yaml: the bag was never closed" in r.getMessage() for r in caplog.records), caplog.text

    # one bag, cut short, on its own: `auto` recognises it, and training's bag sources list the same bags
    assert isinstance(open_source(root / "day1" / "crashed"), BagSource)
    assert BagSource(root / "day1" / "crashed").keys() == ["."]
    from pixelvla_training.datasets.sources import Source

    assert Source.from_config({"type": "bags", "path": str(root)}).shards() == [str(b) for b in source.bags]
    assert find_bags(root) == source.bags


def test_bag_source_errors(tmp_path):
    write_bag(tmp_path / "bad" / "ep0", bad_image=2)
    with pytest.raises(EpisodeError, match="image 2: data has 143 bytes") as err:
        BagSource(tmp_path / "bad").load("ep0")
    assert err.value.reason == "corrupt_frame"

    junk = tmp_path / "junk" / "ep0"
    junk.mkdir(parents=True)
    (junk / "ep0.mcap").write_bytes(b"not an MCAP file")
    with pytest.raises(EpisodeError) as err:
        BagSource(tmp_path / "junk").load("ep0")
    assert err.value.reason == "unreadable"

    (tmp_path / "empty").mkdir()
    assert BagSource(tmp_path / "empty").keys() == []
    with pytest.raises(ValueError, match="neither a simulator episode directory"):
        open_source(tmp_path / "empty")
