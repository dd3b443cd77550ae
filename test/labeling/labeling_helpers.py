"""Helpers shared by the labeling tests and their fixtures (a unique module name: test folders share `conftest`)."""
from __future__ import annotations

from pixelvla_training.episodes.dataset import Episode


def window(episode: Episode, start: int, stop: int, **meta) -> Episode:
    """Frames [start, stop) of an episode as a valid episode of its own (meta overrides in `meta`)."""
    arrays = {k: (v[start:stop] if v.ndim and len(v) == episode.num_steps and k not in ("camera_intrinsics", "camera_pose")
                  else v) for k, v in episode.arrays.items()}
    return Episode(arrays, {**episode.meta, "num_steps": stop - start, **meta})
