"""Training data: readers for every source, the training stream, prompt sampling, chunked samples and their
collation.

    Episode, ChunkDataset, SkipLog, make_sample, compute_norm_stats, normalize_actions    base.py
    Source, dataset_statistics           sources.py   `data.sources` entries as shards read one at a time
    DataStream                           stream.py    bounded-memory stream: lanes, shuffle buffer, mixture, resume
    read_sim_episodes                    sim.py       simulator npz episodes (training/episodes/DATASET.md)
    read_bags                            bags.py      ROS 2 bags (rosbags)
    read_rlds                            rlds.py      OXE RLDS TFRecord shards (Bridge V2, Fractal), no TensorFlow
    read_pixel160k                       pixel160k.py Pixel-160K-format annotations (labeling pipeline)
    LeRobotDataset, write_sim_as_lerobot lerobot.py   LeRobot v3 (parquet + mp4), read and written
    PromptSampler                        prompts.py   points / lines / boxes / masks from target masks, text-only
    load_episodes(sources), Collator     this module  (whole sources in memory, for small data; samples -> model inputs)
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .base import (ACTION_DIM, ChunkDataset, Episode, SkipLog, chunk_targets, compute_norm_stats, make_sample,
                   normalize_actions, norm_stats_for, resize_episode)
from .prompts import PromptSampler, sample_prompt
from .sources import SOURCE_TYPES, DataStatistics, Source, dataset_statistics, sources_from_config
from .stream import DataStream

logger = logging.getLogger(__name__)


def load_episodes(sources: Sequence[dict], image_size: Optional[int] = None,
                  skips: Optional[SkipLog] = None) -> list[Episode]:
    """Read every source of a `data.sources` list (see config/training/*.yaml) into memory: for small data
    sets and tools (training streams them, :class:`DataStream`).

    Each source: {type: sim|bags|rlds|pixel160k|lerobot, path: ..., key: <norm-stats key>, ...reader options}.
    """
    skips = skips if skips is not None else SkipLog("data")
    episodes: list[Episode] = []
    for src in sources_from_config(sources, image_size):
        before = len(episodes)
        episodes += src.read_all(skips)
        logger.info("%s: %d episodes", src, len(episodes) - before)
    if skips.total:
        logger.warning(skips.summary())
    return episodes


class Collator:
    """List of samples -> the model's input tensors + ``actions`` (B, N_c, 7) + ``action_valid`` (B, N_c)
    + ``target_xy`` and ``place_xy`` (B, 2), NaN where unknown (samples without one, e.g. from a reader that
    has no masks)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        proprio = [s.get("proprio") for s in samples]
        if self.processor.config.proprio_dim and any(p is None for p in proprio):
            raise ValueError("the model takes the robot state, but some samples have none (their episodes carry "
                             "no proprio); train with proprio_dim: 0 or on data with the state")
        batch = self.processor([s["image"] for s in samples], [s["instruction"] for s in samples],
                               [s["prompts"] for s in samples], [s["target_mask"] for s in samples],
                               proprio if self.processor.config.proprio_dim else None, self._click_maps(samples))
        batch["actions"] = torch.from_numpy(np.stack([s["actions"] for s in samples])).float()
        batch["action_valid"] = torch.from_numpy(np.stack([s["action_valid"] for s in samples]))
        for key in ("target_xy", "place_xy"):
            batch[key] = torch.from_numpy(np.stack([s.get(key, np.full(2, np.nan, np.float32)) for s in samples]))
        return batch

    def _click_maps(self, samples: list[dict[str, Any]]) -> Optional[list[np.ndarray]]:
        """Each sample's map from a click to the TCP for a model that places its prompts; a sample without
        (its episode has no camera or TCP) gets zeros: its prompts are not placed."""
        if not self.processor.config.prompt_offsets:
            return None
        return [s["click_to_tcp"] if s.get("click_to_tcp") is not None else np.zeros((4, 3), np.float32)
                for s in samples]


__all__ = ["ACTION_DIM", "ChunkDataset", "Collator", "DataStatistics", "DataStream", "Episode", "PromptSampler",
           "SOURCE_TYPES", "SkipLog", "Source", "chunk_targets", "compute_norm_stats", "dataset_statistics",
           "load_episodes", "make_sample", "norm_stats_for", "normalize_actions", "resize_episode", "sample_prompt"]
