"""The recorder writes what was published, unchanged; bags read back with rosbags."""
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import Point
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Image
from std_msgs.msg import String

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import rgb_to_image
from pixelvla_ros.msg import ActionChunk, VisualPrompt
from pixelvla_training.bags import project_typestore, read_bag
from support import start_launch

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[2]


def test_bag_holds_the_published_bytes(ros_node, tmp_path):
    node = subprocess.Popen([sys.executable, "-m", "pixelvla_ros.nodes.recorder_node", "--ros-args",
                             "-p", f"output_dir:={tmp_path}", "-p", "split_episodes:=false",
                             "-p", "topics:=['/camera/image_raw', '/pixelvla/action_chunk']"])
    images = ros_node.publisher(Image, "/camera/image_raw", qos.SENSOR)
    chunks = ros_node.publisher(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND)
    assert ros_node.spin_until(lambda: ros_node.node.count_subscribers("/pixelvla/action_chunk") > 0, timeout=30)
    ros_node.spin_for(0.5)
    sent = []
    rng = np.random.default_rng(0)
    for i in range(5):
        image = rgb_to_image(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
        image.header.stamp.sec = i
        chunk = ActionChunk(horizon=1, action_dim=7, dt=0.2, actions=rng.normal(size=7).astype(np.float32).tolist(), sequence=i)
        images.publish(image)
        chunks.publish(chunk)
        sent += [("/camera/image_raw", image), ("/pixelvla/action_chunk", chunk)]
        ros_node.spin_for(0.1)
    ros_node.spin_for(0.5)
    node.send_signal(signal.SIGINT)
    assert node.wait(timeout=20) == 0
    (bag,) = list(tmp_path.iterdir())
    # CDR alignment padding is not zeroed by every serializer: compare the decoded messages.
    types = {"/camera/image_raw": Image, "/pixelvla/action_chunk": ActionChunk}
    with Reader(bag) as reader:
        recorded = [(c.topic, deserialize_message(bytes(data), types[c.topic])) for c, _, data in reader.messages()]
    for topic in types:
        assert [m for t, m in recorded if t == topic] == [m for t, m in sent if t == topic]
    store = project_typestore(ROOT / "msg")
    decoded = [m for t, _, m in read_bag(bag, store, ["/pixelvla/action_chunk"])]
    assert [m.sequence for m in decoded] == list(range(5))


def test_one_bag_per_simulated_episode(ros_domain, tmp_path):
    node_set = tmp_path / "rec.nodes.yaml"
    node_set.write_text(json.dumps({
        "nodes": {
            "sim": {"executable": "sim_node", "required": True, "parameter_files": ["config/robots/widowx_bridge.yaml"],
                    "parameters": {"expert": True}},
            "executor": {"executable": "executor_node", "parameter_files": ["config/robots/widowx_bridge.yaml"]},
            "recorder": {"executable": "recorder_node", "parameters": {"output_dir": str(tmp_path / "bags")}},
        }
    }))
    runner = start_launch(str(node_set))
    store = project_typestore(ROOT / "msg")

    def closed_bags():  # a bag has its metadata.yaml once it is closed
        return [b for b in (tmp_path / "bags").glob("*") if (b / "metadata.yaml").exists()]

    try:
        deadline = time.monotonic() + 240  # the expert finishes in ~25 steps at 5 Hz (much slower on a loaded machine)
        while time.monotonic() < deadline and not closed_bags():
            time.sleep(0.5)
    finally:
        runner.send_signal(signal.SIGINT)
        out, _ = runner.communicate(timeout=30)
    assert len(closed_bags()) == 1, f"bags {closed_bags()}; launch output:\n{out[-3000:]}"
    (bag,) = closed_bags()
    assert bag.name.startswith("put_red_cube_on_plate_seed0_")
    episodes = [json.loads(m.data) for _, _, m in read_bag(bag, store, ["/sim/episode"])]
    assert episodes[0]["step"] == 0 and episodes[-1]["done"] and episodes[-1]["success"], out
    images = list(read_bag(bag, store, ["/camera/image_raw"]))
    # every step's frame (0 .. done), the frames of the hold at step 0 (until the expert's first move is in, a
    # period or two), and at most one frame of the finished scene after it
    assert episodes[-1]["step"] + 1 <= len(images) <= episodes[-1]["step"] + 2 + 2


def test_killed_recorder_keeps_what_it_had_time_to_flush(ros_node, tmp_path, caplog):
    """kill -9 mid-recording: the bag was never closed, yet it holds every message the recorder had
    `flush_period` (0.5 s) to write, the place prompt (recorded by default) among them."""
    node = subprocess.Popen([sys.executable, "-m", "pixelvla_ros.nodes.recorder_node", "--ros-args",
                             "-p", f"output_dir:={tmp_path}", "-p", "split_episodes:=false"])
    place = ros_node.publisher(VisualPrompt, "/pixelvla/place_prompt", qos.LATCHED)
    chunks = ros_node.publisher(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND)
    place.publish(VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=12.5, y=20.5)], labels=[1], prompt_id="plate"))
    store = project_typestore(ROOT / "msg")

    def recorded() -> list:
        bags = list(tmp_path.iterdir())
        return [(t, m) for t, _, m in read_bag(bags[0], store)] if bags else []

    def sequences() -> list[int]:
        return [m.sequence for t, m in recorded() if t == "/pixelvla/action_chunk"]

    try:
        assert ros_node.spin_until(lambda: ros_node.node.count_subscribers("/pixelvla/action_chunk") > 0, timeout=30)
        for i in range(40):
            chunks.publish(ActionChunk(horizon=1, action_dim=7, dt=0.2, actions=[0.0] * 7, sequence=i))
            ros_node.spin_for(0.02)
        # without a flush these 40 small messages would wait in memory for a 1 MiB chunk: never on disk
        assert ros_node.spin_until(lambda: sequences() == list(range(40)), timeout=30), sequences()
    finally:
        node.kill()
        node.wait(timeout=20)
    caplog.clear()
    messages = recorded()
    assert [m.sequence for t, m in messages if t == "/pixelvla/action_chunk"] == list(range(40))
    (prompt,) = [m for t, m in messages if t == "/pixelvla/place_prompt"]
    assert prompt.prompt_id == "plate" and (prompt.points[0].x, prompt.points[0].y) == (12.5, 20.5)
    assert "no metadata.yaml: the bag was never closed" in caplog.text and f"read {len(messages)} messages" in caplog.text


def test_a_bag_that_cannot_be_written_does_not_stop_the_recorder(ros_node, tmp_path):
    """A failed write (here the output folder cannot be made; a full disk fails the same way) ends that
    bag with an error line; the node stays up for the next episode."""
    (tmp_path / "a_file").write_text("")
    node = subprocess.Popen([sys.executable, "-m", "pixelvla_ros.nodes.recorder_node", "--ros-args",
                             "-p", f"output_dir:={tmp_path / 'a_file' / 'bags'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(node.stdout.readline, "")), daemon=True).start()
    episodes = ros_node.publisher(String, "/sim/episode", qos.LATCHED)
    try:
        for seed in (1, 2):  # two episodes start: two failures, one process
            episodes.publish(String(data=json.dumps({"task": "t", "seed": seed, "step": 0})))
            assert ros_node.spin_until(lambda: sum("stopped: [Errno" in line for line in lines) >= seed, timeout=30), lines
        assert node.poll() is None, "".join(lines)
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=20)
    assert node.returncode == 0, "".join(lines)
    assert f"recording to {tmp_path / 'a_file' / 'bags'} stopped: [Errno 20] Not a directory" in "".join(lines)
