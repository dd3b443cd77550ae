"""Pixel-160K-format annotations (training/labeling/FORMAT.md) -> :class:`Episode` with masks and prompts.

The annotations hold per-frame target masks (RLE) and prompts; images and actions stay in the source
dataset each record points to (``source.format``: ``pixelvla-sim-episodes`` -> the npz episode,
``ros2-bag`` -> the bag). An episode is trained on from its first labelled frame to its last, with every
frame's mask and fixed prompts (points, lines, boxes of the record, plus the mask itself as a Mask prompt);
the PromptSampler picks from those fixed prompts and mixes in text-only samples.

Records whose ``scores.mask`` is below ``min_mask_score`` count as unlabelled frames (empty mask, no prompt).
Annotations whose source is missing or unreadable are skipped with a counted reason. The shards of the stream are
the annotation shards (``shard-NNNNNN.jsonl.gz``, whole episodes each, :func:`annotation_shards`), read one at a
time; an episode's source is opened only when that episode is taken (:func:`shard_episodes`).
"""
from __future__ import annotations

import collections
import functools
import logging
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from pixelvla_model import Box, Line, Mask, Point

from .base import MISSING_IMAGE, Episode, SkipLog

logger = logging.getLogger(__name__)

NO_SOURCE = "annotation source missing or unreadable"
MISMATCH = "annotation does not match its source episode"


def record_prompts(record: dict, mask: np.ndarray) -> list:
    """The record's prompts (pixel coordinates, corner origin) as pixelvla_model prompts, mask included."""
    p = record.get("prompts") or {}
    out: list = [Point(float(q["x"]), float(q["y"]), int(q.get("label", 1))) for q in p.get("points", [])]
    out += [Line([list(map(float, xy)) for xy in q["points"]], int(q.get("label", 1))) for q in p.get("lines", [])]
    out += [Box(float(q["x0"]), float(q["y0"]), float(q["x1"]), float(q["y1"]), int(q.get("label", 1)))
            for q in p.get("boxes", [])]
    if mask.any():
        out.append(Mask(mask))
    return out


def _load_source(source: dict, skips: SkipLog, images: bool = True):
    """(images (T,H,W,3), actions (T,7)) of the source episode, or None (counted). images=False: the images
    are not read where the source allows it (an all-zero (T, 1, 1, 3) stands for them)."""
    fmt, path, key = source.get("format"), source.get("path"), source.get("episode")
    try:
        if fmt == "pixelvla-sim-episodes":
            with np.load(Path(path) / key, allow_pickle=False) as npz:
                actions = np.asarray(npz["actions"], np.float32)
                return (npz["images"] if images else np.zeros((len(actions), 1, 1, 3), np.uint8)), actions
        if fmt == "ros2-bag":
            from .bags import read_bag_episode

            bag = Path(path) / key if (Path(path) / str(key)).exists() else Path(path)
            ep = read_bag_episode(bag, skips=skips)
            return (ep.images, ep.actions) if ep is not None else None
    except Exception as exc:  # missing file, damaged npz or bag
        skips.skip(NO_SOURCE, f"{path}/{key}: {exc}")
        return None
    skips.skip(NO_SOURCE, f"unknown source format {fmt!r}")
    return None


def annotation_shards(root: str | Path) -> list[str]:
    """The complete annotation shard files of a Pixel-160K-format dataset (its stream shards), in index order."""
    from pixelvla_training.labeling.format import read_sidecar, shard_indices, shard_name

    return [str(Path(root) / shard_name(i)) for i in shard_indices(root) if read_sidecar(root, i, check_hash=False)]


def shard_episodes(root: str | Path, shard: str, skips: SkipLog, dataset_key: Optional[str] = None,
                   min_mask_score: float = 0.0, images: bool = True) -> Iterator[Callable[[], Optional[Episode]]]:
    """One loader per annotated episode of an annotation shard, in file order; calling it joins the
    annotations to their source episode (None, counted, if they cannot be)."""
    from pixelvla_training.labeling.format import iter_shard

    by_episode: dict[str, list[dict]] = collections.OrderedDict()
    for record in iter_shard(shard):
        by_episode.setdefault(record["episode_id"], []).append(record)
    for episode_id, records in by_episode.items():
        yield functools.partial(_join, root, episode_id, records, skips, dataset_key, min_mask_score, images)


def _join(root, episode_id: str, records: list[dict], skips: SkipLog, dataset_key: Optional[str],
          min_mask_score: float, images: bool) -> Optional[Episode]:
    from pixelvla_training.labeling.format import decode_rle

    records.sort(key=lambda r: r["frame_index"])
    loaded = _load_source(records[0]["source"], skips, images)
    if loaded is None:
        return None
    frames_, actions = loaded
    frames = [int(r["source"].get("frame", r["frame_index"])) for r in records]
    if max(frames) >= len(frames_) or len(frames_) != len(actions):
        skips.skip(MISMATCH, f"{episode_id}: frame {max(frames)} of a {len(frames_)}-frame source")
        return None
    if frames_ is None or len(frames_) == 0:
        skips.skip(MISSING_IMAGE, episode_id)
        return None
    first, last = frames[0], frames[-1] + 1
    sel = np.array(frames) - first
    if not np.array_equal(sel, np.arange(last - first)):  # gaps: keep only the labelled frames' steps
        idx = np.array(frames)
    else:
        idx = np.arange(first, last)
    key = dataset_key or episode_id.split("/")[0]
    if not images:
        return Episode(images=None, actions=actions[idx], instruction=records[0]["instruction"], dataset=key,
                       source=f"{root}:{episode_id}")
    hw = frames_.shape[1:3]
    masks, prompts = [], []
    for r in records:
        m = decode_rle(r["mask"]) if r.get("mask_area", 1) else np.zeros(hw, bool)
        if m.shape != hw:
            skips.skip(MISMATCH, f"{episode_id}: mask size differs from the image size {hw}")
            return None
        if float((r.get("scores") or {}).get("mask", 1.0)) < min_mask_score:
            m = np.zeros(hw, bool)
        masks.append(m)
        prompts.append(record_prompts(r, m) if m.any() else [])
    return Episode(images=frames_[idx], actions=actions[idx], instruction=records[0]["instruction"],
                   dataset=key, target_masks=np.stack(masks), prompts=prompts, first_masks=masks[0],
                   source=f"{root}:{episode_id}", meta={"noun": records[0].get("noun")})


def read_pixel160k(root: str | Path, dataset_key: Optional[str] = None, min_mask_score: float = 0.0,
                   skips: Optional[SkipLog] = None, max_episodes: Optional[int] = None) -> Iterator[Episode]:
    """Yield one Episode per annotated episode of a Pixel-160K-format dataset at `root`."""
    skips = skips if skips is not None else SkipLog(f"pixel160k:{root}")
    count = 0
    for shard in annotation_shards(root):
        for load in shard_episodes(root, shard, skips, dataset_key, min_mask_score):
            if max_episodes is not None and count >= max_episodes:
                return
            ep = load()
            if ep is not None:
                count += 1
                yield ep
