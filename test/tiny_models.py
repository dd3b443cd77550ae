"""Tiny randomly initialised checkpoints the tests save for themselves (preset "tiny" plus overrides)."""
from __future__ import annotations

from pathlib import Path

#: Bridge-like action statistics (q01/q99 per dimension; the gripper is not normalised).
BRIDGE_LIKE = {"bridge_orig": {"action": {"q01": [-0.02] * 6 + [0.0], "q99": [0.02] * 6 + [1.0],
                                          "mask": [True] * 6 + [False]}}}
#: The same plus robot-state statistics for the 6 arm joints (rad) and the gripper finger (m).
BRIDGE_LIKE_WITH_STATE = {"bridge_orig": {**BRIDGE_LIKE["bridge_orig"],
                                          "proprio": {"q01": [-1.5] * 6 + [0.015], "q99": [1.5] * 6 + [0.037]}}}


def save_tiny_checkpoint(path: Path, seed: int = 0, norm_stats: dict = BRIDGE_LIKE, **config) -> Path:
    """Save a tiny checkpoint (`config` overrides the preset, e.g. proprio_dim=7, place_prompts=True) to `path`."""
    from pixelvla_model import PixelVLAConfig, PixelVLAPolicy

    PixelVLAPolicy.from_config(PixelVLAConfig.from_preset("tiny", **config), seed=seed,
                               norm_stats=norm_stats).save_pretrained(path)
    return path
