"""The training stream (bounded memory, exact resume, disjoint ranks), Bridge relabelled as OpenVLA's
bridge_orig, and LeRobot v3 written from simulator episodes and read back."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest_helpers import write_sim_dataset  # noqa: F401  (see conftest)

from pixelvla_training.datasets import DataStream, PromptSampler, SkipLog, dataset_statistics
from pixelvla_training.datasets.tfrecord import serialize_example, write_tfrecord


def _png(rgb: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _bridge_record(states: np.ndarray, gripper: np.ndarray, size: int = 8, seed: int = 0) -> bytes:
    T = len(states)
    actions = np.zeros((T, 7), np.float32)
    actions[:, 6] = gripper
    base = np.full((size, size, 3), seed % 200, np.uint8)
    base[: size // 2] += np.arange(size, dtype=np.uint8)[:, None] % 50  # a little structure, cheap to compress
    return serialize_example({
        "steps/observation/image_0": [_png(base + np.uint8(t)) for t in range(T)],
        "steps/observation/state": np.asarray(states, np.float32).reshape(-1),
        "steps/action": actions.reshape(-1),
        "steps/language_instruction": [b"put the spoon in the pot"] * T,
    })


# ------------------------------------------------------------------------------------------------ Bridge
def test_bridge_actions_are_reached_state_differences_as_openvla_relabels_them(tmp_path):
    from pixelvla_training.datasets.rlds import binarize_gripper_open, read_rlds

    states = np.array([[0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 1],    # step 0: dropped (Bridge's zero action)
                       [0.10, 0.20, 0.30, 0.01, 0.02, 0.03, 1],
                       [0.15, 0.18, 0.30, 0.04, 0.02, -0.01, 1],
                       [0.15, 0.10, 0.25, 0.04, 0.00, -0.05, 0],
                       [0.20, 0.10, 0.20, 0.10, 0.00, -0.05, 0]])  # step 4: dropped (no next state)
    gripper = np.array([0.0, 1.0, 0.5, 0.02, 0.3])  # commanded, 1 = open
    write_tfrecord(tmp_path / "bridge.tfrecord", [_bridge_record(states, gripper)])
    (ep,) = read_rlds([tmp_path / "bridge.tfrecord"], "bridge")
    expected = np.array([[0.05, -0.02, 0.00, 0.03, 0.00, -0.04, 1],   # state 2 - state 1, gripper of step 1
                         [0.00, -0.08, -0.05, 0.00, -0.02, -0.04, 0],  # 0.5 takes the next definite state (0.02)
                         [0.05, 0.00, -0.05, 0.06, 0.00, 0.00, 0]])
    np.testing.assert_allclose(ep.actions, expected, atol=1e-6)
    assert ep.images.shape == (3, 8, 8, 3)
    np.testing.assert_allclose(ep.proprio, states[1:4], atol=1e-7)
    # OpenVLA's scan starts from the last raw value: a trajectory ending in-between keeps it there
    np.testing.assert_array_equal(binarize_gripper_open(np.array([1.0, 0.5, 0.02, 0.3])), np.float32([1, 0, 0, 0.3]))


# ------------------------------------------------------------------------------------------------ helpers
def _rlds_dataset(root, shards: int, episodes: int, steps: int, size: int) -> list[dict]:
    """Bridge-like shards; every episode gives `steps` training steps (two more raw ones)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for s in range(shards):
        records = []
        for e in range(episodes):
            states = np.cumsum(rng.normal(0, 0.01, (steps + 2, 7)), axis=0)
            records.append(_bridge_record(states, (np.arange(steps + 2) < steps // 2).astype(float), size, s * 100 + e))
        write_tfrecord(root / f"bridge-train.tfrecord-{s:05d}", records)
    return [{"type": "rlds", "path": str(root / "*.tfrecord*"), "dataset": "bridge", "verify_crc": False}]


def _stream(sources, chunk: int = 4, batch: int = 3, **kw) -> DataStream:
    return DataStream(sources, dataset_statistics(sources), chunk, batch, **kw)


def _key(sample: dict) -> tuple:
    return (sample["episode"], sample["actions"].tobytes(), sample["image"].tobytes(), repr(sample["prompts"]))


def _take(stream: DataStream, n: int) -> list[list[tuple]]:
    it = iter(stream)
    return [[_key(s) for s in next(it)] for _ in range(n)]


# ------------------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_stream_gives_the_batches_of_an_uninterrupted_one(tmp_path, num_workers):
    data = write_sim_dataset(tmp_path / "demos", episodes=6, steps=12, size=16)
    sources = [{"type": "sim", "path": str(data), "shuffle_buffer": 20}]  # several buffers per epoch
    kw = dict(sampler=PromptSampler(text_only=0.3), grad_accum=2, num_workers=num_workers, seed=5)
    straight = _take(_stream(sources, **kw), 40)  # past the first epoch of every lane
    first = _stream(sources, **kw)
    head = _take(first, 13)
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint holds
    resumed = _stream(sources, **kw)
    resumed.load_state_dict(state)
    assert head + _take(resumed, 27) == straight
    assert len({s[0] for batch in straight for s in batch}) == 6
    with pytest.raises(ValueError, match="same world size"):
        _stream(sources, **{**kw, "grad_accum": 1}).load_state_dict(state)


# ------------------------------------------------------------------------------------------------ ranks
@pytest.mark.parametrize("kind", ["sim", "rlds_one_shard"])
def test_two_ranks_read_disjoint_episodes_that_cover_the_data(tmp_path, kind):
    if kind == "sim":  # one shard per episode
        sources = [{"type": "sim", "path": str(write_sim_dataset(tmp_path / "d", episodes=6, steps=12, size=16))}]
    else:  # fewer shards than lanes: split by episodes
        sources = _rlds_dataset(tmp_path / "rlds", shards=1, episodes=6, steps=12, size=8)
    seen = []
    for rank in (0, 1):
        stream = _stream(sources, batch=1, rank=rank, world=2)  # the buffer holds the rank's whole epoch
        episodes = [s[0] for batch in _take(stream, 3 * 12) for s in batch]
        assert all(episodes.count(e) == 12 for e in set(episodes))  # every step of its episodes, once
        seen.append(set(episodes))
    assert len(seen[0]) == len(seen[1]) == 3 and not seen[0] & seen[1]


# ------------------------------------------------------------------------------------------------ memory
def _rss_growth_through_the_collator(sources, image_size: int, batches: int) -> float:
    """MB the process grew by while streaming `batches` micro-batches of 8 through the model's collator, after
    a warm-up (RSS sampled every 8 batches)."""
    import psutil

    from pixelvla_model import PixelVLAConfig, PixelVLAProcessor, build_byte_tokenizer
    from pixelvla_training.datasets import Collator

    stats = dataset_statistics(sources)
    config = PixelVLAConfig.from_preset("tiny", image_size=image_size)
    collate = Collator(PixelVLAProcessor(config, build_byte_tokenizer(), stats.norm_stats))
    stream = DataStream(sources, stats, config.chunk_size, 8, collate, PromptSampler(text_only=0.5))
    proc, rss = psutil.Process(), []
    for i, batch in zip(range(batches), stream):
        assert batch["actions"].shape == (8, config.chunk_size, 7)
        if i >= 24 and i % 8 == 0:
            rss.append(proc.memory_info().rss)
    return (max(rss) - rss[0]) / 2**20


def test_rlds_stream_memory_stays_flat_on_data_larger_than_it(tmp_path):
    sources = _rlds_dataset(tmp_path / "rlds", shards=6, episodes=8, steps=30, size=128)
    sources[0]["shuffle_buffer"] = 64
    decoded_mb = 6 * 8 * 30 * 128 * 128 * 3 / 2**20  # 70 MB of frames
    growth = _rss_growth_through_the_collator(sources, 28, 6 * 8 * 30 // 8 + 10)  # a whole epoch and more
    assert growth < decoded_mb / 5, (growth, decoded_mb)


def test_lerobot_stream_memory_stays_flat_on_data_larger_than_it(tmp_path):
    from pixelvla_training.datasets.lerobot import write_sim_as_lerobot

    sim = write_sim_dataset(tmp_path / "demos", episodes=24, steps=40, size=128)
    write_sim_as_lerobot(sim, tmp_path / "lerobot", episodes_per_file=10)
    decoded_mb = 24 * 40 * 128 * 128 * 4 / 2**20  # 60 MB of frames and masks
    sources = [{"type": "lerobot", "path": str(tmp_path / "lerobot"), "shuffle_buffer": 80}]
    growth = _rss_growth_through_the_collator(sources, 28, 24 * 40 // 8 + 10)  # a whole epoch and more
    assert growth < decoded_mb / 5, (growth, decoded_mb)


# ------------------------------------------------------------------------------------------------ LeRobot v3
def test_sim_episodes_written_as_lerobot_v3_read_back(tmp_path):
    import pyarrow.parquet as pq

    from pixelvla_training.datasets.lerobot import IMAGE_KEY, LeRobotDataset, write_sim_as_lerobot
    from pixelvla_training.datasets.sim import read_sim_episodes

    sim = write_sim_dataset(tmp_path / "demos", episodes=5, steps=12, size=32)
    info = write_sim_as_lerobot(sim, tmp_path / "lerobot", episodes_per_file=2)  # 3 data files, 3 videos
    root = tmp_path / "lerobot"
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 5 and info["total_frames"] == 60
    assert len(list(root.glob(f"videos/{IMAGE_KEY}/chunk-000/file-*.mp4"))) == 3
    assert len(list(root.glob("data/chunk-000/file-*.parquet"))) == 3
    stats = json.loads((root / "meta" / "stats.json").read_text())
    assert np.array(stats[IMAGE_KEY]["mean"]).shape == (3, 1, 1) and len(stats["action"]["q99"]) == 7
    rows = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [r[f"videos/{IMAGE_KEY}/from_timestamp"] for r in rows] == [0.0, 12 / 5, 0.0, 12 / 5, 0.0]
    assert rows[3]["dataset_from_index"] == 36 and rows[3]["data/file_index"] == 1

    originals = list(read_sim_episodes(sim))
    read = list(LeRobotDataset(root).episode(i, "k", SkipLog("lerobot")) for i in range(5))
    via_source = dataset_statistics([{"type": "lerobot", "path": str(root)}])
    assert via_source.steps == [60]
    for ep, orig in zip(read, originals):
        np.testing.assert_array_equal(ep.actions, orig.actions)  # exact
        np.testing.assert_array_equal(ep.proprio, orig.proprio)
        np.testing.assert_array_equal(ep.target_masks, orig.target_masks)  # lossless PNG
        assert ep.instruction == orig.instruction
        error = np.abs(ep.images.astype(int) - orig.images.astype(int))
        # H.264 yuv420p: small everywhere but at sharp colour edges (chroma at half resolution)
        assert error.mean() < 3 and np.mean(error > 40) < 0.03, (error.mean(), np.mean(error > 40))
