"""Pixel-160K-format: RLE, records, shards, manifest, validation."""
from __future__ import annotations


import numpy as np
import pytest

from pixelvla_training.labeling import format as fmt


def test_rle_round_trip_on_random_and_edge_masks():
    rng = np.random.default_rng(0)
    masks = [np.zeros((5, 7), bool), np.ones((5, 7), bool), np.eye(6, dtype=bool), np.zeros((1, 1), bool)]
    masks += [rng.random(tuple(rng.integers(1, 50, 2))) < rng.random() for _ in range(200)]
    for m in masks:
        rle = fmt.encode_rle(m)
        assert rle["size"] == list(m.shape) and isinstance(rle["counts"], str)
        assert np.array_equal(fmt.decode_rle(rle), m)
        assert fmt.rle_area(rle) == int(m.sum())
        assert np.array_equal(fmt.decode_rle({"size": list(m.shape), "counts": fmt.mask_to_counts(m)}), m)


def test_rle_is_column_major_and_starts_with_background():
    m = np.array([[0, 1], [0, 1]], bool)  # column-major: 0 0 1 1
    assert fmt.mask_to_counts(m) == [2, 2]
    assert fmt.mask_to_counts(~m) == [0, 2, 2]
    with pytest.raises(ValueError):
        fmt.decode_rle({"size": [2, 2], "counts": [1, 1]})


def _record(eid="ds/ep0", frame=0, mask=None):
    mask = np.zeros((8, 10), bool) if mask is None else mask
    mask[2:5, 3:7] = True
    return fmt.make_record(
        episode_id=eid, frame_index=frame, num_frames=3, instruction="put the red cube on the plate", noun="red cube",
        mask=mask, prompts={"points": [{"x": 4.5, "y": 3.5, "label": 1}], "lines": [{"points": [[3.5, 3.5], [6.5, 3.5]], "label": 1}],
                            "boxes": [{"x0": 3.0, "y0": 2.0, "x1": 7.0, "y1": 5.0, "label": 1}]},
        scores={"detector": 0.9, "mask": 0.8}, keyframe=frame == 0,
        source={"format": "pixelvla-sim-episodes", "path": "/x", "episode": "episode_000000.npz", "frame": frame})


def test_record_validation_catches_bad_fields():
    assert fmt.validate_record(_record()) == []
    bad = _record()
    bad["prompts"]["points"][0]["x"] = 11.0
    bad["scores"]["mask"] = 1.5
    bad["mask_area"] = 3
    problems = fmt.validate_record(bad)
    assert len(problems) == 3, problems


def test_shards_manifest_reader_and_validator(tmp_path):
    writer = fmt.ShardWriter(tmp_path)
    writer.write(0, [_record(frame=f) for f in range(3)], [{"episode_id": "ds/ep0", "frames": 3, "source": {}}],
                 [{"episode_id": "ds/ep1", "reason": "no_closure: the gripper never closes", "source": {}}])
    writer.write(1, [_record("ds/ep2", f) for f in range(3)], [{"episode_id": "ds/ep2", "frames": 3, "source": {}}], [])
    manifest = fmt.build_manifest(tmp_path, {"k": 1}, expected_shards=2)
    assert manifest["complete"] and manifest["num_records"] == 6 and manifest["skipped_reasons"] == {"no_closure": 1}
    assert fmt.validate_dataset(tmp_path) == {"records": 6, "episodes": 2, "skipped": 1, "shards": 2}
    records = list(fmt.iter_records(tmp_path, decode_masks=True))
    assert [(r["episode_id"], r["frame_index"]) for r in records][:2] == [("ds/ep0", 0), ("ds/ep0", 1)]
    assert records[0]["mask_array"].sum() == 12
    assert [s["episode_id"] for s in fmt.iter_skipped(tmp_path)] == ["ds/ep1"]
    # identical records -> byte-identical shards (gzip without time stamp)
    assert fmt.dumps_records(records[:0]) == fmt.dumps_records([])
    first = (tmp_path / fmt.shard_name(1)).read_bytes()
    writer.write(1, [_record("ds/ep2", f) for f in range(3)], [{"episode_id": "ds/ep2", "frames": 3, "source": {}}], [])
    assert (tmp_path / fmt.shard_name(1)).read_bytes() == first
    # a damaged shard is incomplete: readers skip it, the validator names it
    (tmp_path / fmt.shard_name(1)).write_bytes(first[:-5])
    assert fmt.read_sidecar(tmp_path, 1) is None
    with pytest.raises(ValueError, match="sha256"):
        fmt.validate_dataset(tmp_path)


def test_validator_finds_duplicates(tmp_path):
    writer = fmt.ShardWriter(tmp_path)
    ep = [{"episode_id": "ds/ep0", "frames": 1, "source": {}}]
    writer.write(0, [_record()], ep, [])
    writer.write(1, [_record()], ep, [])
    fmt.build_manifest(tmp_path, {}, 2)
    with pytest.raises(ValueError, match="duplicate"):
        fmt.validate_dataset(tmp_path)
