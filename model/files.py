"""The files of a checkpoint directory by name, and the norm-stats file's I/O. No torch.

    config.json                         PixelVLAConfig
    model.safetensors                   weights (or index + shards, see checkpoint.py)
    norm_stats.json                     OpenVLA layout: {dataset: {"action": {q01, q99, mask, ...}}}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
NORM_STATS_FILE = "norm_stats.json"


def validate_norm_stats(norm_stats: dict[str, Any], action_dim: int = 7) -> dict[str, Any]:
    """Check OpenVLA's layout: norm_stats[dataset]["action"] with q01, q99 (and optional mask) of length 7."""
    if not isinstance(norm_stats, dict):
        raise ValueError(f"norm_stats must be a dict of datasets, got {type(norm_stats).__name__}")
    for key, entry in norm_stats.items():
        a = entry.get("action") if isinstance(entry, dict) else None
        if not isinstance(a, dict) or "q01" not in a or "q99" not in a:
            raise ValueError(f"norm_stats[{key!r}] needs an 'action' entry with 'q01' and 'q99' "
                             "(OpenVLA layout: norm_stats[dataset]['action'] = {q01, q99, mask, ...})")
        for f in ("q01", "q99") + (("mask",) if "mask" in a else ()):
            if len(a[f]) != action_dim:
                raise ValueError(f"norm_stats[{key!r}]['action'][{f!r}] has {len(a[f])} values, expected {action_dim}")
    return norm_stats


def save_norm_stats(norm_stats: dict[str, Any], directory: str | Path) -> None:
    Path(directory, NORM_STATS_FILE).write_text(json.dumps(norm_stats, indent=2) + "\n")


def load_norm_stats(directory: str | Path) -> dict[str, Any]:
    """norm_stats.json of ``directory``; {} when there is none."""
    path = Path(directory, NORM_STATS_FILE)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); fix or regenerate it") from e
