"""pixelvla-label end to end with tiny random-weight SAM 2 + Grounding DINO: output validates, bad input is
skipped with its reason, a crashed or killed run resumes to exactly the uninterrupted output."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pixelvla_training.labeling import cli
from pixelvla_training.labeling import format as fmt
from pixelvla_training.labeling.nouns import SpacyNouns
from pixelvla_training.episodes.dataset import DatasetWriter, iter_episodes

from labeling_helpers import window


def label(input_dir, out, *extra):
    args = cli.parse_args([str(input_dir), "--out", str(out), "--episodes-per-shard", "2", "--no-progress",
                           "--sheet", "0", *extra])
    return cli.run(args)


def shard_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("shard-*"))}


@pytest.fixture(scope="module")
def reference(short_dataset, tmp_path_factory):
    """An uninterrupted single-worker run over the short dataset."""
    out = tmp_path_factory.mktemp("reference") / "labels"
    label(short_dataset, out)
    return out


def test_spacy_nouns():
    nouns = SpacyNouns()
    assert nouns("put the red cube on the plate") == "red cube"
    assert nouns("Put this cube in the bowl") == "cube"
    assert nouns("pick up the blue sponge and place it in the sink") == "blue sponge"
    assert nouns("move it to the left") is None and nouns("") is None


def test_tiny_detector_boxes_stay_in_the_region():
    from pixelvla_training.labeling.detector import GroundingDino

    det = GroundingDino.from_config(tiny=True, seed=0)
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    found = det.detect(image, "red cube", region=(10, 5, 40, 30))
    assert found and all(0 <= d.score <= 1 for d in found)
    assert all(10 <= d.box[0] < d.box[2] <= 40 and 5 <= d.box[1] < d.box[3] <= 30 for d in found)


def test_end_to_end_output_validates_and_sheet_is_written(short_dataset, tmp_path):
    out = tmp_path / "labels"
    args = cli.parse_args([str(short_dataset), "--out", str(out), "--episodes-per-shard", "2", "--no-progress"])
    summary = cli.run(args)
    assert summary["labelled"] + summary["skipped"] == 4 and summary["manifest"]["complete"]
    counts = fmt.validate_dataset(out)
    assert counts["episodes"] == summary["labelled"] >= 3, summary
    records = list(fmt.iter_records(out))
    assert len(records) == counts["records"] == 7 * counts["episodes"]
    for r in records:
        assert r["closure_frame"] == 3 and r["keyframe"] == (r["frame_index"] == 3)
        assert r["noun"] in ("red cube", "green cube", "blue cube", "yellow cube", "cube")
        mask = fmt.decode_rle(r["mask"])
        for p in r["prompts"]["points"]:
            assert mask[int(p["y"]), int(p["x"])] == bool(p["label"])
        if r["keyframe"]:
            x0, y0, x1, y1 = r["proposal"]
            rows, cols = np.nonzero(mask)
            assert x0 - 1 <= cols.min() and cols.max() <= x1 + 1 and y0 - 1 <= rows.min() and rows.max() <= y1 + 1
    assert (out / "contact_sheet.html").is_file() and list((out / "contact_sheet").glob("*.png"))
    # a finished job reruns as a no-op
    again = cli.run(args)
    assert again["episodes_processed"] == 0 and again["shards_already_done"] == 2


def test_bad_input_is_skipped_with_reasons(short_dataset, tmp_path):
    episodes = list(iter_episodes(short_dataset))
    root = tmp_path / "bad"
    writer = DatasetWriter(root)
    good = episodes[0]
    writer.add(good)
    never = window(good, 0, 7)
    never.arrays["actions"] = never.arrays["actions"].copy()
    never.arrays["actions"][:, 6] = 1.0
    never.arrays["gripper_positions"] = np.full_like(never.arrays["gripper_positions"], 0.037)
    writer.add(never)
    writer.add(window(good, 0, 7, instruction="  "))
    writer.add(window(good, 0, 7, instruction="move it to the left"))
    blank = window(good, 0, 7)
    blank.arrays["images"] = blank.arrays["images"].copy()
    blank.arrays["images"][4] = 0
    writer.add(blank)
    writer.add(good)
    (root / "episode_000005.npz").write_bytes(b"not an npz file")  # damaged on disk after writing
    summary = label(root, tmp_path / "out")
    reasons = {s["episode_id"].split("/")[-1]: s["reason"] for s in fmt.iter_skipped(tmp_path / "out")}
    assert reasons["episode_000001"].startswith("no_closure")
    assert reasons["episode_000002"].startswith("empty_instruction")
    assert reasons["episode_000003"].startswith("no_noun")
    assert reasons["episode_000004"].startswith("corrupt_frame") and "frame 4" in reasons["episode_000004"]
    assert reasons["episode_000005"].startswith("unreadable")
    assert summary["labelled"] == 1 and summary["skipped"] == 5
    counts = fmt.validate_dataset(tmp_path / "out")
    assert counts == {"records": 7, "episodes": 1, "skipped": 5, "shards": 3}
    assert fmt.read_manifest(tmp_path / "out")["skipped_reasons"] == {
        "corrupt_frame": 1, "empty_instruction": 1, "no_closure": 1, "no_noun": 1, "unreadable": 1}


@pytest.mark.slow
def test_crash_and_restart_equals_uninterrupted_run(short_dataset, reference, tmp_path, monkeypatch):
    crashed = tmp_path / "crashed"
    real, calls = cli._label_one, []

    def crash_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if killed while labelling episode 3 (shard 1, after its episode 2)
        return real(*a, **k)

    monkeypatch.setattr(cli, "_label_one", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        label(short_dataset, crashed)
    monkeypatch.setattr(cli, "_label_one", real)
    assert fmt.read_sidecar(crashed, 0) is not None and fmt.read_sidecar(crashed, 1) is None
    resumed = label(short_dataset, crashed)
    assert resumed["shards_already_done"] == 1 and resumed["episodes_resumed"] == 0
    assert shard_files(crashed) == shard_files(reference)
    assert fmt.validate_dataset(crashed) == fmt.validate_dataset(reference)
    assert not (crashed / cli.WORK).exists()


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_output_and_workers_split_the_shards(short_dataset, reference, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pixelvla_training.labeling.cli", str(short_dataset), "--out", str(out),
           "--episodes-per-shard", "2", "--no-progress", "--sheet", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if list((out / cli.WORK).glob("*/*.json.gz")) if (out / cli.WORK).is_dir() else []:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert fmt.read_sidecar(out, 1) is None
    # restart as two workers (torchrun-style environment), one after the other
    for rank in ("0", "1"):
        env = {**os.environ, "RANK": rank, "WORLD_SIZE": "2"}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout)
        assert summary["worker"] == f"{rank}/2" and summary["shards_mine"] == 1
    assert shard_files(out) == shard_files(reference)
    assert fmt.validate_dataset(out) == fmt.validate_dataset(reference)
