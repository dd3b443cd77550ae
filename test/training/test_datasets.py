"""Dataset readers on small files the tests write: simulator npz, RLDS TFRecord shards, ROS 2 bags; prompt
sampling; chunking, statistics, and bad data skipped with counted reasons."""
from __future__ import annotations

import io
import json
import re
import struct

import numpy as np
import pytest

from pixelvla_training.datasets import (ChunkDataset, PromptSampler, SkipLog, chunk_targets,
                                        compute_norm_stats, load_episodes, norm_stats_for, normalize_actions)
from pixelvla_training.datasets import base
from pixelvla_training.datasets.tfrecord import (CorruptRecord, crc32c, parse_example, read_tfrecord,
                                                 serialize_example, write_tfrecord)


# ------------------------------------------------------------------------------------------------ core
def test_chunk_targets_pad_at_episode_end():
    a = np.arange(6 * 7, dtype=np.float32).reshape(6, 7)
    chunk, valid = chunk_targets(a, 4, 5)
    assert chunk.shape == (5, 7)
    np.testing.assert_array_equal(valid, [True, True, False, False, False])
    np.testing.assert_array_equal(chunk[:2], a[4:6])
    np.testing.assert_array_equal(chunk[2:], np.repeat(a[5:6], 3, 0))  # the last action repeated


def test_norm_stats_and_normalisation_match_the_model_unnormalisation():
    from pixelvla_model import unnormalize_actions

    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.02, (500, 7))
    a[:, 6] = rng.integers(0, 2, 500)
    stats = compute_norm_stats(a)
    s = stats["action"]
    assert s["mask"] == [True] * 6 + [False] and len(s["q01"]) == 7
    np.testing.assert_allclose(s["q01"], np.quantile(a, 0.01, axis=0))
    n = normalize_actions(a, stats)
    assert n[:, :6].min() >= -1 and n[:, :6].max() <= 1
    np.testing.assert_array_equal(n[:, 6], a[:, 6].astype(np.float32))  # gripper untouched
    inside = np.all((a >= s["q01"]) & (a <= s["q99"]), axis=1)
    np.testing.assert_allclose(unnormalize_actions(n, stats)[inside], a[inside], atol=1e-6)


def test_sim_reader_and_samples(sim_dataset):
    from pixelvla_training.datasets.sim import read_sim_episodes

    eps = list(read_sim_episodes(sim_dataset, image_size=28))
    assert len(eps) == 4 and eps[0].images.shape == (12, 28, 28, 3) and eps[0].target_masks.shape == (12, 28, 28)
    stats = norm_stats_for(eps)
    ds = ChunkDataset(eps, 5, stats, sampler=PromptSampler(text_only=0.0), seed=3)
    assert len(ds) == 4 * 12
    s = ds[11]
    assert s["actions"].shape == (5, 7) and s["action_valid"].tolist() == [True] + [False] * 4
    assert s["image"].dtype == np.uint8 and s["instruction"]
    assert s["target_mask"] is not None and len(s["prompts"]) == 1
    again = ds[11]
    assert repr(again["prompts"]) == repr(s["prompts"])  # same (seed, epoch, index) -> same sample


def test_sim_episodes_carry_the_robot_state_normalised_per_dataset(sim_dataset):
    from pixelvla_model import PixelVLAConfig, PixelVLAProcessor, build_byte_tokenizer
    from pixelvla_training.datasets import Collator
    from pixelvla_training.datasets.sim import read_sim_episodes

    eps = list(read_sim_episodes(sim_dataset, image_size=28))
    assert eps[0].proprio.shape == (12, 7)  # 6 arm joints, then the gripper finger (the /joint_states order)
    eps[1].proprio = eps[1].proprio + np.linspace(0.0, 0.2, 7)  # make every dimension vary
    stats = norm_stats_for(eps)
    p = stats["pixelvla_sim"]["proprio"]
    np.testing.assert_allclose(p["q99"], np.quantile(np.concatenate([e.proprio for e in eps]), 0.99, axis=0), rtol=1e-6)
    ds = ChunkDataset(eps, 5, stats)
    state = ds[12 + 3]["proprio"]  # episode 1, step 3
    assert state.dtype == np.float32 and state.min() >= -2 and state.max() <= 2
    config = PixelVLAConfig.from_preset("tiny", image_size=28, proprio_dim=7)
    processor = PixelVLAProcessor(config, build_byte_tokenizer(), stats)
    np.testing.assert_allclose(state, processor.normalize_proprio(eps[1].proprio[3]), atol=1e-6)
    batch = Collator(processor)([ds[i] for i in range(3)])
    assert batch["proprio"].shape == (3, 7)
    nan = eps[2]
    nan.proprio = nan.proprio.copy()
    nan.proprio[4, 0] = np.nan
    skips = SkipLog("test")
    assert len(ChunkDataset(eps, 5, stats, skips=skips)) == 3 * 12
    assert skips.counts == {base.BAD_STATE: 1}


def test_collated_batch_runs_through_the_model(sim_dataset):
    import torch

    from pixelvla_model import PixelVLA, PixelVLAConfig, PixelVLAProcessor, build_byte_tokenizer
    from pixelvla_training.datasets import Collator
    from pixelvla_training.datasets.sim import read_sim_episodes

    config = PixelVLAConfig.from_preset("tiny", image_size=28)
    eps = list(read_sim_episodes(sim_dataset, image_size=28))
    ds = ChunkDataset(eps, config.chunk_size, norm_stats_for(eps), sampler=PromptSampler(text_only=0.5))
    batch = Collator(PixelVLAProcessor(config, build_byte_tokenizer(), norm_stats_for(eps)))([ds[i] for i in range(6)])
    assert batch["actions"].shape == (6, config.chunk_size, 7) and batch["action_valid"].dtype == torch.bool
    labels = ("actions", "action_valid", "target_xy", "place_xy")
    out = PixelVLA(config)(**{k: v for k, v in batch.items() if k not in labels})
    assert out.actions.shape == (6, config.chunk_size, 7)
    # where the target is, for every sample with a mask, whether or not it shows its prompts
    expected = np.stack([base.mask_centroid(eps[0].target_masks[t]) for t in range(6)])
    assert batch["target_xy"].shape == (6, 2) and np.allclose(batch["target_xy"].numpy(), expected, equal_nan=True)
    place = base.mask_centroid(eps[0].place_mask)  # where the target goes, NaN when the episode has no place
    assert np.allclose(batch["place_xy"].numpy(), np.tile(place, (6, 1)), equal_nan=True)


def test_mask_centroid_in_image_fractions():
    mask = np.zeros((4, 8), bool)
    mask[1, 2] = mask[1, 3] = True  # pixel centres x = 2.5, 3.5 of 8, y = 1.5 of 4
    assert np.allclose(base.mask_centroid(mask), [3.0 / 8, 1.5 / 4])
    assert np.isnan(base.mask_centroid(np.zeros((4, 8), bool))).all() and np.isnan(base.mask_centroid(None)).all()


def test_prompt_sampler_types_and_text_only():
    from pixelvla_model import Box, Line, Mask, Point, batch_prompts, PixelVLAConfig

    mask = np.zeros((40, 50), bool)
    mask[10:20, 5:30] = True
    rng = np.random.default_rng(0)
    seen, text_only = set(), 0
    sampler = PromptSampler(text_only=0.25, max_prompts=2)
    for _ in range(400):
        prompts, shown = sampler(rng, mask, first_mask=mask)
        if not prompts:
            text_only += 1
            assert shown is None
            continue
        assert shown is mask
        for p in prompts:
            seen.add(type(p))
            if isinstance(p, Point):
                assert mask[int(p.y), int(p.x)]
        batch_prompts([prompts], (40, 50), PixelVLAConfig.from_preset("tiny"))  # all valid
    assert seen == {Point, Line, Box, Mask}
    assert 60 < text_only < 150
    # a hidden target (empty mask) gives a text-only sample, never an exception
    assert PromptSampler(text_only=0.0)(rng, np.zeros((8, 8), bool)) == ([], None)


def test_place_prompts_come_from_the_destination_and_carry_the_place_label(sim_dataset):
    from pixelvla_model import FOREGROUND, PLACE, PixelVLAConfig, batch_prompts
    from pixelvla_training.datasets.sim import read_sim_episodes

    eps = list(read_sim_episodes(sim_dataset))
    plate = eps[0].place_mask
    assert plate.shape == (32, 32) and plate[-2, -2] and not plate[0, 0]
    assert list(read_sim_episodes(sim_dataset, image_size=16))[0].place_mask.shape == (16, 16)
    config = PixelVLAConfig.from_preset("tiny", place_prompts=True)
    rng = np.random.default_rng(1)
    sampler = PromptSampler(text_only=0.0, place=0.5)
    with_place = 0
    for _ in range(200):
        prompts, _ = sampler(rng, eps[0].target_masks[3], place_mask=plate)
        places = [p for p in prompts if p.label == PLACE]
        assert len(places) <= 1 and prompts[0].label == FOREGROUND
        with_place += len(places)
        if places and hasattr(places[0], "x"):
            assert plate[int(places[0].y), int(places[0].x)]
        batch_prompts([prompts], (32, 32), config)  # valid for a model with place prompts
    assert 70 < with_place < 130
    # place = 0 (or no place mask) draws exactly what the sampler drew before place prompts existed
    old, new = PromptSampler(text_only=0.3), PromptSampler(text_only=0.3, place=0.5)
    for i in range(20):
        a = old(np.random.default_rng(i), eps[0].target_masks[3], place_mask=plate)
        b = new(np.random.default_rng(i), eps[0].target_masks[3], place_mask=None)
        assert repr(a) == repr(b)
    with pytest.raises(ValueError, match="probabilities"):
        PromptSampler(place=1.5)


# ------------------------------------------------------------------------------------------------ bad data
def _raw_npz(path, **arrays):
    np.savez_compressed(path, **arrays)


def test_bad_sim_episodes_are_skipped_with_counted_reasons(tmp_path, sim_dataset, caplog):
    from pixelvla_training.datasets.sim import read_sim_episodes
    from pixelvla_training.episodes.dataset import read_episode

    index = json.loads((sim_dataset / "index.json").read_text())
    files = [sim_dataset / e["file"] for e in index["episodes"]]
    ep = read_episode(files[0])
    nan = dict(ep.arrays)
    nan["actions"] = nan["actions"].copy()
    nan["actions"][3, 1] = np.nan
    _raw_npz(files[0], **nan, meta=np.array(json.dumps(ep.meta)))  # NaN actions
    no_image = {k: v for k, v in ep.arrays.items() if k != "images"}
    _raw_npz(files[1], **no_image, meta=np.array(json.dumps(ep.meta)))  # missing image
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) // 2])  # truncated file
    short = {k: (v[:3] if getattr(v, "ndim", 0) and v.shape[0] == 12 else v) for k, v in ep.arrays.items()}
    _raw_npz(files[3], **short, meta=np.array(json.dumps({**ep.meta, "num_steps": 3})))  # 3 steps < chunk 5
    skips = SkipLog("test")
    eps = list(read_sim_episodes(sim_dataset, skips=skips))
    with caplog.at_level("WARNING"):
        ds = ChunkDataset(eps, 5, norm_stats_for(eps) or {"pixelvla_sim": compute_norm_stats(np.zeros((2, 7)))},
                          skips=skips)
    assert len(ds) == 0
    assert skips.counts == {base.NAN_ACTIONS: 1, base.MISSING_IMAGE: 1, base.TRUNCATED: 1, base.SHORT_EPISODE: 1}
    assert "episode shorter than the chunk" in caplog.text


# ------------------------------------------------------------------------------------------------ TFRecord
def test_crc32c_known_value_and_record_framing(tmp_path):
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    path = tmp_path / "x.tfrecord"
    write_tfrecord(path, [b"abc", b"", b"z" * 1000])
    assert list(read_tfrecord(path)) == [b"abc", b"", b"z" * 1000]
    raw = bytearray(path.read_bytes())
    raw[12] ^= 0xFF  # flip a data byte of record 0
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptRecord, match="CRC"):
        list(read_tfrecord(path))


def test_example_proto_roundtrip_and_wire_details():
    ex = serialize_example({"a": [b"x", b"yz"], "f": np.array([1.5, -2.0], np.float32), "i": np.array([3, -4, 1 << 40])})
    out = parse_example(ex)
    assert out["a"] == [b"x", b"yz"]
    np.testing.assert_array_equal(out["f"], [1.5, -2.0])
    np.testing.assert_array_equal(out["i"], [3, -4, 1 << 40])
    # an unpacked FloatList (one fixed32 per value) decodes the same as a packed one
    unpacked = b"".join(b"\x0d" + struct.pack("<f", v) for v in (1.5, -2.0))
    float_list = b"\x12" + bytes([len(unpacked)]) + unpacked
    entry = b"\x0a\x01f" + b"\x12" + bytes([len(float_list)]) + float_list
    features = b"\x0a" + bytes([len(entry)]) + entry
    np.testing.assert_array_equal(parse_example(b"\x0a" + bytes([len(features)]) + features)["f"], [1.5, -2.0])


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _bridge_example(T: int, seed: int, nan: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    actions = rng.normal(0, 0.01, (T, 7)).astype(np.float32)
    actions[0] = 0.0  # Bridge's zero first step
    actions[:, 6] = [1.0, 0.99, 0.5, 0.02, 0.5, 0.97, 1.0, 1.0][:T]
    states = np.cumsum(rng.normal(0, 0.01, (T, 7)), axis=0).astype(np.float32)
    if nan:
        states[2, 0] = np.nan
    return serialize_example({
        "steps/observation/image_0": [_png(np.full((16, 20, 3), 10 * t, np.uint8)) for t in range(T)],
        "steps/observation/state": states.reshape(-1),
        "steps/action": actions.reshape(-1),
        "steps/language_instruction": [b"put the spoon in the pot"] * T,
        "steps/is_first": np.array([1] + [0] * (T - 1)),
    })


def test_rlds_bridge_shard(tmp_path):
    from pixelvla_training.datasets.rlds import read_rlds

    shard = tmp_path / "bridge_dataset-train.tfrecord-00000-of-00001"
    write_tfrecord(shard, [_bridge_example(8, 0), _bridge_example(8, 1, nan=True), _bridge_example(5, 2)])
    skips = SkipLog("rlds")
    eps = list(read_rlds(str(tmp_path / "*.tfrecord*"), "bridge", skips=skips))
    assert len(eps) == 3 and skips.total == 0  # NaN and short episodes are dropped by ChunkDataset
    ep = eps[0]
    assert ep.dataset == "bridge_orig" and ep.instruction == "put the spoon in the pot"
    # zero first step dropped, and the last one (no next state): steps 1..6 of 8
    assert ep.images.shape == (6, 16, 20, 3) and ep.images[0, 0, 0, 0] == 10 and ep.images[-1, 0, 0, 0] == 60
    assert ep.proprio.shape == (6, 7)
    # binarised, 1 = open; 0.5 takes the next definite state
    np.testing.assert_array_equal(ep.actions[:, 6], [1, 0, 0, 1, 1, 1])
    ds = ChunkDataset(eps, 5, norm_stats_for(eps), skips=skips)  # NaN episode and the 3-step one dropped
    assert len(ds.episodes) == 1
    assert skips.counts == {base.NAN_ACTIONS: 1, base.SHORT_EPISODE: 1}


def test_rlds_fractal_gripper_and_truncated_shard(tmp_path):
    from pixelvla_training.datasets.rlds import read_rlds, relative_to_absolute_gripper

    # RT-1: +1 close, -1 open, 0 keep -> absolute, 1 = open (open before the first close)
    np.testing.assert_array_equal(relative_to_absolute_gripper(np.array([0, 0, 1, 0, 0, -1, 0])),
                                  [1, 1, 0, 0, 0, 1, 1])
    T = 6

    def example(seed):
        rng = np.random.default_rng(seed)
        return serialize_example({
            "steps/observation/image": [_png(np.full((8, 8, 3), t, np.uint8)) for t in range(T)],
            "steps/observation/natural_language_instruction": [b"pick coke can"] * T,
            "steps/action/world_vector": rng.normal(0, 0.1, T * 3).astype(np.float32),
            "steps/action/rotation_delta": rng.normal(0, 0.1, T * 3).astype(np.float32),
            "steps/action/gripper_closedness_action": np.array([0, 1, 0, 0, -1, 0], np.float32),
        })

    shard = tmp_path / "fractal.tfrecord-00000"
    write_tfrecord(shard, [example(0), example(1), example(2)])
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 40])  # the last record is cut off
    skips = SkipLog("fractal")
    eps = list(read_rlds([shard], "fractal", skips=skips))
    assert len(eps) == 2 and skips.counts == {base.TRUNCATED: 1}
    assert eps[0].images.shape == (6, 8, 8, 3) and eps[0].dataset == "fractal20220817_data"
    np.testing.assert_array_equal(eps[0].actions[:, 6], [1, 0, 0, 0, 1, 1])


# ------------------------------------------------------------------------------------------------ bags
STEPS = 7  # steps of the episode bag below
BAG_MESSAGES = 1 + 4 * STEPS - 1  # an instruction; per step an image, a mask, joint states, a chunk (but step 3)


def write_episode_bag(path, flush_period_s: float = 0.5, close: bool = True):
    """A recorder-like bag of STEPS steps: images, target masks, chunks (none for step 3), joint states."""
    from pixelvla_training.bags import BagWriter, project_typestore
    from pixelvla_training.datasets.bags import DEFAULT_MSG_DIR
    from pixelvla_robots import wx250s

    store = project_typestore(DEFAULT_MSG_DIR)
    T = store.types
    Time = T["builtin_interfaces/msg/Time"]
    Header = T["std_msgs/msg/Header"]

    def header(k):
        return Header(stamp=Time(sec=100 + k, nanosec=0), frame_id="cam")

    def image(k, enc="rgb8", value=None):
        c = 1 if enc == "mono8" else 3
        data = np.full((6, 8, c), k * 10 if value is None else value, np.uint8)
        if enc == "mono8":
            data[:3] = 0
        return T["sensor_msgs/msg/Image"](header=header(k), height=6, width=8, encoding=enc, is_bigendian=0,
                                          step=8 * c, data=data.reshape(-1))

    path.parent.mkdir(exist_ok=True)
    w = BagWriter(path, store, flush_period_s=flush_period_s)
    for topic, kind in [("/camera/image_raw", "sensor_msgs/msg/Image"), ("/pixelvla/instruction", "std_msgs/msg/String"),
                        ("/pixelvla/action_chunk", "pixelvla_ros/msg/ActionChunk"), ("/sim/target_mask", "sensor_msgs/msg/Image"),
                        ("/joint_states", "sensor_msgs/msg/JointState")]:
        w.add_topic(topic, kind)
    w.write("/pixelvla/instruction", 1, store.serialize_cdr(T["std_msgs/msg/String"](data="put the red cube on the plate"), "std_msgs/msg/String"))
    q = np.array(wx250s.HOME_Q if hasattr(wx250s, "HOME_Q") else np.zeros(6), float)
    for k in range(STEPS):
        ns = (100 + k) * 10**9
        w.write("/camera/image_raw", ns, store.serialize_cdr(image(k), "sensor_msgs/msg/Image"))
        w.write("/sim/target_mask", ns, store.serialize_cdr(image(k, "mono8", 255), "sensor_msgs/msg/Image"))
        if k != 3:  # step 3 has no chunk: dropped, counted
            chunk = T["pixelvla_ros/msg/ActionChunk"](header=header(k), horizon=1, action_dim=7, dt=0.2,
                                                      actions=np.array([0.01 * k, 0, 0, 0, 0, 0, 1], np.float32),
                                                      dimension_names=[], action_space="ee_delta", model_id="x",
                                                      inference_latency=0.0, sequence=k)
            w.write("/pixelvla/action_chunk", ns + 1, store.serialize_cdr(chunk, "pixelvla_ros/msg/ActionChunk"))
        js = T["sensor_msgs/msg/JointState"](header=header(k), name=[*wx250s.JOINT_NAMES, *wx250s.FINGER_NAMES],
                                             position=np.array([*(q + [0.02 * k, 0, 0, 0, 0, 0]), 0.036, -0.036]),
                                             velocity=np.zeros(0), effort=np.zeros(0))
        w.write("/joint_states", ns, store.serialize_cdr(js, "sensor_msgs/msg/JointState"))
    if close:
        w.close()
    return w, q


def test_bag_reader_action_chunks_and_joint_states(tmp_path):
    from pixelvla_training.datasets.bags import read_bags
    from pixelvla_robots import wx250s

    _, q = write_episode_bag(tmp_path / "bags" / "ep0")
    skips = SkipLog("bags")
    (ep,) = list(read_bags(tmp_path / "bags", skips=skips))
    assert ep.instruction == "put the red cube on the plate" and ep.images.shape == (6, 6, 8, 3)
    np.testing.assert_allclose(ep.actions[:, 0], [0.0, 0.01, 0.02, 0.04, 0.05, 0.06], atol=1e-7)
    assert ep.target_masks.shape == (6, 6, 8) and ep.target_masks[0, 4].all() and not ep.target_masks[0, 0].any()
    assert skips.counts == {"image without an action": 1}

    (js_ep,) = list(read_bags(tmp_path / "bags", action_source="joint_states", skips=SkipLog("js")))
    assert js_ep.images.shape[0] == 6  # the last image has no next pose
    p0, r0 = wx250s.fk(q)
    p1, r1 = wx250s.fk(q + [0.02, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(js_ep.actions[0, :6], wx250s.ee_delta_between(p0, r0, p1, r1), atol=1e-6)
    assert set(js_ep.actions[:, 6]) == {1.0}
    eps = load_episodes([{"type": "bags", "path": str(tmp_path / "bags")}], image_size=12)
    assert eps[0].images.shape == (6, 12, 12, 3)


def test_bag_cut_short_gives_its_intact_steps_and_says_what_was_lost(tmp_path, caplog):
    """A crash or a full disk leaves an MCAP file without its end (`File end magic is invalid` for rosbags)
    or a bag without metadata.yaml: the steps before the damage are read, the loss is logged with numbers."""
    from pixelvla_training.datasets.bags import read_bags

    bag = tmp_path / "bags" / "ep0"
    write_episode_bag(bag, flush_period_s=3600)  # one MCAP chunk: the cut falls inside it
    (whole,) = read_bags(tmp_path / "bags", skips=SkipLog("whole"))
    mcap = bag / "ep0.mcap"
    data = mcap.read_bytes()  # magic, header record, the chunk record (opcode 6, u64 length), ...
    chunk_at = 8 + 9 + int.from_bytes(data[9:17], "little")
    assert data[chunk_at] == 0x06
    mcap.write_bytes(data[: chunk_at + 9 + int.from_bytes(data[chunk_at + 1:chunk_at + 9], "little") // 2])
    caplog.clear()
    (cut,) = read_bags(tmp_path / "bags", skips=SkipLog("cut"))
    assert 0 < len(cut.images) < len(whole.images)
    np.testing.assert_array_equal(cut.images, whole.images[: len(cut.images)])  # the steps before the damage
    np.testing.assert_array_equal(cut.actions, whole.actions[: len(cut.actions)])
    (warning,) = [r.getMessage() for r in caplog.records if "lost" in r.getMessage()]
    read, lost = map(int, re.search(rf"read (\d+) messages of the {BAG_MESSAGES} its metadata.yaml lists: (\d+) lost",
                                    warning).groups())
    assert read + lost == BAG_MESSAGES and lost > 0
    assert "ep0.mcap ends without its summary, its last" in warning and "bytes cut off mid-record" in warning

    (bag / "metadata.yaml").unlink()  # a bag never closed: found, read, and reported
    caplog.clear()
    (unclosed,) = read_bags(tmp_path / "bags", skips=SkipLog("unclosed"))
    np.testing.assert_array_equal(unclosed.images, cut.images)
    assert any(f"ep0: no metadata.yaml: the bag was never closed" in r.getMessage() and f"read {read} messages" in r.getMessage()
               for r in caplog.records), caplog.text


def test_flushed_messages_survive_a_crash(tmp_path):
    """What `BagWriter.flush` handed to the OS is in the file without a close (the recorder killed with -9)."""
    from pixelvla_training.bags import find_bags, read_bag

    bag = tmp_path / "ep0"
    writer, _ = write_episode_bag(bag, flush_period_s=3600, close=False)
    store = writer.typestore

    def messages():
        return [stamp for _, stamp, _ in read_bag(bag, store)]

    assert messages() == []  # everything is still in rosbags' in-memory chunk
    writer.flush()
    assert len(messages()) == BAG_MESSAGES
    writer.write("/pixelvla/instruction", 2, store.serialize_cdr(store.types["std_msgs/msg/String"](data="x"), "std_msgs/msg/String"))
    assert len(messages()) == BAG_MESSAGES
    writer.flush_period_s = 0.0
    writer.flush_if_due()
    flushed = messages()
    assert len(flushed) == BAG_MESSAGES + 1
    assert find_bags(tmp_path) == [bag] and find_bags(bag) == [bag]
    writer.close()  # a bag closed after flushes (chunks of any size) reads as any other, through rosbags
    assert (bag / "metadata.yaml").is_file() and messages() == sorted(flushed)


# ------------------------------------------------------------------------------------------------ Pixel-160K
def test_pixel160k_annotations_over_sim_episodes(sim_dataset, tmp_path):
    from pixelvla_model import Mask, Point
    from pixelvla_training.datasets.pixel160k import NO_SOURCE, read_pixel160k
    from pixelvla_training.labeling.format import ShardWriter, make_record
    from pixelvla_training.episodes.dataset import read_episode

    index = json.loads((sim_dataset / "index.json").read_text())
    records, episodes = [], []
    for e in index["episodes"][:2] + [{"file": "episode_999999.npz"}]:  # the last one has no source
        path = sim_dataset / e["file"]
        masks = read_episode(path).arrays["target_masks"] if path.exists() else np.zeros((12, 32, 32), bool)
        eid = f"demos/{path.stem}"
        for t in range(2, 10):  # labels for frames 2..9
            m = masks[t]
            rows, cols = np.nonzero(m)
            prompts = {"points": [{"x": float(cols[0]) + 0.5, "y": float(rows[0]) + 0.5, "label": 1}],
                       "boxes": [{"x0": float(cols.min()), "y0": float(rows.min()), "x1": float(cols.max() + 1),
                                  "y1": float(rows.max() + 1), "label": 1}]} if m.any() else {}
            records.append(make_record(episode_id=eid, frame_index=t, num_frames=12, instruction="put the red cube on the plate",
                                       noun="red cube", mask=m, prompts=prompts, scores={"detector": 0.9, "mask": 0.8},
                                       keyframe=t == 2, source={"format": "pixelvla-sim-episodes", "path": str(sim_dataset),
                                                                "episode": e["file"], "frame": t}))
        episodes.append({"episode_id": eid, "frames": 8, "source": {}})
    ShardWriter(tmp_path / "p160k").write(0, records, episodes, [])
    skips = SkipLog("p160k")
    eps = list(read_pixel160k(tmp_path / "p160k", dataset_key="bridge_orig", skips=skips))
    assert len(eps) == 2 and skips.counts == {NO_SOURCE: 1}
    ep = eps[0]
    assert ep.images.shape[0] == 8 and ep.target_masks.shape == (8, 32, 32) and ep.dataset == "bridge_orig"
    np.testing.assert_array_equal(ep.target_masks[0], read_episode(sim_dataset / "episode_000000.npz").arrays["target_masks"][2])
    kinds = {type(p) for p in ep.prompts[0]}
    assert Point in kinds and Mask in kinds
    ds = ChunkDataset(eps, 5, norm_stats_for(eps), sampler=PromptSampler(text_only=0.0, max_prompts=2))
    s = ds[0]
    assert 1 <= len(s["prompts"]) <= 2 and all(p in ep.prompts[0] for p in s["prompts"])
    assert (load_episodes([{"type": "pixel160k", "path": str(tmp_path / "p160k"), "key": "k"}], image_size=16)[0]
            .images.shape == (8, 32, 32, 3))  # episodes with fixed prompts keep their pixel coordinates


def test_sim_samples_place_their_prompts_from_the_tcp_through_the_recorded_camera(tmp_path):
    from conftest_helpers import synthetic_episode

    from pixelvla_model import PLACE
    from pixelvla_robots.camera import pixel_uv
    from pixelvla_sim.tasks import CUBE_HALF
    from pixelvla_training.datasets.sim import read_sim_episodes
    from pixelvla_training.episodes.dataset import DatasetWriter
    from pixelvla_training.labeling.proposal import camera_from_arrays

    episode = synthetic_episode(np.random.default_rng(0), steps=8, size=32)
    episode.arrays["camera_pose"] = np.array([0.3, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0], np.float32)  # looking straight down
    episode.arrays["tcp_poses"][:, :3] = np.c_[np.linspace(0.2, 0.4, 8), np.zeros(8), np.full(8, 0.15)]
    DatasetWriter(tmp_path / "d").add(episode)
    ep = next(read_sim_episodes(tmp_path / "d", image_size=16))  # the camera follows the resize
    sampler = PromptSampler(text_only=0.0, type_weights={"point": 1.0}, place=1.0)
    s = ChunkDataset([ep], 5, norm_stats_for([ep]), sampler=sampler)[3]
    assert s["prompts"][1].label == PLACE
    camera = camera_from_arrays(episode.arrays["camera_intrinsics"], episode.arrays["camera_pose"], 32, 32)
    tcp = episode.arrays["tcp_poses"][3, :3]

    def placed(x, y):  # a click at (x, y), fractions of the image, through the sample's map
        h = s["click_to_tcp"].astype(float) @ [x, y, 1.0]
        return h[:3] / h[3]

    rows, cols = np.nonzero(s["target_mask"])  # the shown (tracked) mask's centroid, in 16 px
    target = camera.point_at_height(*pixel_uv(((cols.mean() + 0.5) * 2, (rows.mean() + 0.5) * 2)), CUBE_HALF)
    np.testing.assert_allclose(placed((cols.mean() + 0.5) / 16, (rows.mean() + 0.5) / 16), target - tcp, atol=1e-5)
    place = camera.point_at_height(*pixel_uv((s["prompts"][1].x * 2, s["prompts"][1].y * 2)), CUBE_HALF)
    np.testing.assert_allclose(placed(s["prompts"][1].x / 16, s["prompts"][1].y / 16), place - tcp, atol=1e-5)
    assert abs(placed(0.5, 0.5)[2] - (CUBE_HALF - 0.15)) < 1e-6
    text_only = ChunkDataset([ep], 5, norm_stats_for([ep]), sampler=PromptSampler(text_only=1.0))[3]
    np.testing.assert_array_equal(text_only["click_to_tcp"], s["click_to_tcp"])  # the words' clicks are placed too
    from pixelvla_model import PixelVLAConfig, PixelVLAProcessor, build_byte_tokenizer
    from pixelvla_training.datasets import Collator

    config = PixelVLAConfig.from_preset("tiny", image_size=28, proprio_dim=7, place_prompts=True,
                                        prompt_offsets=True)
    uncalibrated = {**text_only, "click_to_tcp": None}
    batch = Collator(PixelVLAProcessor(config, build_byte_tokenizer(), norm_stats_for([ep])))([s, uncalibrated])
    np.testing.assert_array_equal(batch["click_to_tcp"].numpy(), np.stack([s["click_to_tcp"], np.zeros((4, 3))]))
