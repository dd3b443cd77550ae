"""Training data: readers for every source, prompt sampling, chunked samples and their collation.

    Episode, ChunkDataset, SkipLog, compute_norm_stats, normalize_actions    base.py
    read_sim_episodes                    sim.py       simulator npz episodes (training/episodes/DATASET.md)
    read_bags                            bags.py      ROS 2 bags (rosbags)
    read_rlds                            rlds.py      OXE RLDS TFRecord shards (Bridge V2, Fractal), no TensorFlow
    read_pixel160k                       pixel160k.py Pixel-160K-format annotations (labeling pipeline)
    PromptSampler                        prompts.py   points / lines / boxes / masks from target masks, text-only
    load_episodes(sources), Collator     this module  (YAML `data.sources` -> episodes; samples -> model inputs)
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .base import (ACTION_DIM, ChunkDataset, Episode, SkipLog, chunk_targets, compute_norm_stats,
                   normalize_actions, norm_stats_for, resize_episode)
from .prompts import PromptSampler, sample_prompt

logger = logging.getLogger(__name__)

SOURCE_TYPES = ("sim", "bags", "rlds", "pixel160k")


def load_episodes(sources: Sequence[dict], image_size: Optional[int] = None,
                  skips: Optional[SkipLog] = None) -> list[Episode]:
    """Read every source of a `data.sources` list (see config/training/*.yaml) into memory.

    Each source: {type: sim|bags|rlds|pixel160k, path: ..., key: <norm-stats key>, ...reader options}.
    """
    skips = skips if skips is not None else SkipLog("data")
    episodes: list[Episode] = []
    for src in sources:
        src = dict(src)
        kind = src.pop("type", None)
        path = src.pop("path", None)
        key = src.pop("key", None)
        if kind not in SOURCE_TYPES or not path:
            raise ValueError(f"data source {src!r}: needs type (one of {SOURCE_TYPES}) and path")
        before = len(episodes)
        if kind == "sim":
            from .sim import read_sim_episodes

            it = read_sim_episodes(path, dataset_key=key or "pixelvla_sim", image_size=image_size, skips=skips, **src)
        elif kind == "bags":
            from .bags import read_bags

            it = read_bags(path, skips=skips, dataset_key=key or "robot_bags", **src)
        elif kind == "rlds":
            from .rlds import read_rlds

            it = read_rlds(path, skips=skips, dataset_key=key, **src)
        else:
            from .pixel160k import read_pixel160k

            it = read_pixel160k(path, skips=skips, dataset_key=key, **src)
        for ep in it:
            episodes.append(resize_episode(ep, image_size) if image_size and kind != "sim" else ep)
        logger.info("%s %s: %d episodes", kind, path, len(episodes) - before)
    if skips.total:
        logger.warning(skips.summary())
    return episodes


class Collator:
    """List of samples -> the model's input tensors + ``actions`` (B, N_c, 7) + ``action_valid`` (B, N_c)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        proprio = [s.get("proprio") for s in samples]
        if self.processor.config.proprio_dim and any(p is None for p in proprio):
            raise ValueError("the model takes the robot state, but some samples have none (their episodes carry "
                             "no proprio); train with proprio_dim: 0 or on data with the state")
        batch = self.processor([s["image"] for s in samples], [s["instruction"] for s in samples],
                               [s["prompts"] for s in samples], [s["target_mask"] for s in samples],
                               proprio if self.processor.config.proprio_dim else None)
        batch["actions"] = torch.from_numpy(np.stack([s["actions"] for s in samples])).float()
        batch["action_valid"] = torch.from_numpy(np.stack([s["action_valid"] for s in samples]))
        return batch


__all__ = ["ACTION_DIM", "ChunkDataset", "Collator", "Episode", "PromptSampler", "SkipLog", "chunk_targets",
           "compute_norm_stats", "load_episodes", "norm_stats_for", "normalize_actions", "resize_episode",
           "sample_prompt"]
