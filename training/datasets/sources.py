"""The entries of `data.sources` as shards read one at a time: what the training stream, the statistics pass
and :func:`~pixelvla_training.datasets.load_episodes` share.

A source: {type: sim|bags|rlds|pixel160k|lerobot, path, key: <norm-stats key>, weight: 1.0,
shuffle_buffer: <steps>, ...reader options}. Its shards are its units of reading, listed without opening
them: a simulator episode file, a bag, an RLDS TFRecord file, a Pixel-160K annotation shard, a LeRobot
episode. ``Source.episodes(shard)`` gives one loader per episode of the shard, in order; calling a loader reads
that episode (None, counted in the SkipLog, if it is unusable), so an episode keeps its index in its shard and
the stream decodes only the episodes it takes.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from .base import Episode, SkipLog, norm_stats_for, resize_episode

logger = logging.getLogger(__name__)

SOURCE_TYPES = ("sim", "bags", "rlds", "pixel160k", "lerobot")
DEFAULT_SHUFFLE_BUFFER = 2000  # steps held per source in each lane of the stream (stream.py)


@dataclass
class Source:
    """One `data.sources` entry (module doc). `image_size`: images and masks resized to it as they are read."""

    kind: str
    path: str
    key: Optional[str] = None
    weight: float = 1.0
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    options: dict = field(default_factory=dict)
    image_size: Optional[int] = None

    @classmethod
    def from_config(cls, spec: dict, image_size: Optional[int] = None) -> "Source":
        spec = dict(spec)
        kind, path = spec.pop("type", None), spec.pop("path", None)
        if kind not in SOURCE_TYPES or not path:
            raise ValueError(f"data source {spec!r}: needs type (one of {SOURCE_TYPES}) and path")
        weight, buffer = float(spec.pop("weight", 1.0)), int(spec.pop("shuffle_buffer", DEFAULT_SHUFFLE_BUFFER))
        if weight < 0 or buffer < 1:
            raise ValueError(f"data source {path}: weight must be >= 0 and shuffle_buffer >= 1")
        if kind == "rlds" and "max_episodes" in spec:
            raise ValueError(f"data source {path}: max_episodes is not available for rlds; list fewer shards")
        return cls(kind, str(path), spec.pop("key", None), weight, buffer, spec, image_size)

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"

    @functools.cached_property
    def _lerobot(self):
        from .lerobot import LeRobotDataset

        return LeRobotDataset(self.path)

    def shards(self) -> list[str]:
        """The shard names, sorted (JSON-able: they are part of the stream's position)."""
        o = self.options
        if self.kind == "sim":
            from .sim import sim_shards

            return sim_shards(self.path, o.get("tasks"), o.get("max_episodes"))
        if self.kind == "bags":
            from pixelvla_training.bags import find_bags

            return [str(p) for p in find_bags(self.path)][:o.get("max_episodes")]
        if self.kind == "rlds":
            from .rlds import shard_files

            return shard_files(self.path)
        if self.kind == "pixel160k":
            from .pixel160k import annotation_shards

            return annotation_shards(self.path)
        return [str(i) for i in sorted(self._lerobot.episodes)][:o.get("max_episodes")]

    def episodes(self, shard: str, skips: SkipLog, images: bool = True) -> Iterator[Callable[[], Optional[Episode]]]:
        """One loader per episode of `shard` (module doc); images=False: only what statistics need (actions,
        state), without decoding images where the format allows it."""
        o = self.options
        if self.kind == "sim":
            from .sim import read_sim_episode

            read = functools.partial(read_sim_episode, self.path, shard, self.key or "pixelvla_sim",
                                     o.get("skip_failures", True), skips, images)
            yield self._sized(read)
        elif self.kind == "bags":
            from .bags import read_bag_episode

            options = {k: v for k, v in o.items() if k != "max_episodes"}
            yield self._sized(functools.partial(read_bag_episode, shard, skips=skips,
                                                dataset_key=self.key or "robot_bags", **options))
        elif self.kind == "rlds":
            from .rlds import shard_episodes

            for load in shard_episodes(shard, o["dataset"], skips, self.key, o.get("verify_crc", True), images):
                yield self._sized(load)
        elif self.kind == "pixel160k":
            from .pixel160k import shard_episodes

            for load in shard_episodes(self.path, shard, skips, self.key, o.get("min_mask_score", 0.0), images):
                yield self._sized(load)
        else:
            options = {k: v for k, v in o.items() if k in ("image_key", "action_key", "state_key", "mask_key")}
            yield self._sized(functools.partial(self._lerobot.episode, int(shard), self.key or Path(self.path).name,
                                                skips, images, **options))

    def _sized(self, load: Callable[[], Optional[Episode]]) -> Callable[[], Optional[Episode]]:
        if not self.image_size:
            return load

        def sized() -> Optional[Episode]:
            ep = load()
            return resize_episode(ep, self.image_size) if ep is not None and ep.images is not None else ep
        return sized

    def read_all(self, skips: SkipLog, images: bool = True) -> Iterator[Episode]:
        """Every usable episode of every shard, in order."""
        for shard in self.shards():
            for load in self.episodes(shard, skips, images):
                ep = load()
                if ep is not None:
                    yield ep


def sources_from_config(specs: Sequence[dict], image_size: Optional[int] = None) -> list[Source]:
    if not specs:
        raise ValueError("data.sources is empty: name at least one dataset")
    return [Source.from_config(s, image_size) for s in specs]


# ------------------------------------------------------------------------------------------------ statistics
@dataclass
class DataStatistics:
    """What training needs to know of the data before streaming it: q01/q99 statistics per dataset key
    (OpenVLA layout, :func:`~pixelvla_training.datasets.base.norm_stats_for`) and the steps of each source
    (for the mixture: a source is drawn with probability proportional to weight x steps)."""

    norm_stats: dict[str, dict]
    steps: list[int]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def dataset_statistics(specs: Sequence[dict], cache: Optional[str | Path] = None) -> DataStatistics:
    """One pass over the actions and states of every source (images are not decoded where the format allows),
    as OpenVLA computes its dataset statistics. With `cache` (a JSON file), a pass over the same sources is
    read from it instead (and written to it)."""
    sources = sources_from_config(specs)
    fingerprint = hashlib.sha256(json.dumps(list(specs), sort_keys=True, default=str).encode()).hexdigest()
    if cache is not None and Path(cache).is_file():
        saved = json.loads(Path(cache).read_text())
        if saved.get("sources_sha256") == fingerprint:
            return DataStatistics(saved["norm_stats"], saved["steps"])
    skips = SkipLog("statistics")
    episodes: list[Episode] = []
    steps = []
    for src in sources:
        before = len(episodes)
        for ep in src.read_all(skips, images=False):
            episodes.append(Episode(None, ep.actions, ep.instruction, ep.dataset, proprio=ep.proprio, source=ep.source))
        usable = [e.num_steps for e in episodes[before:] if np.all(np.isfinite(e.actions))]
        steps.append(int(sum(usable)))
        logger.info("%s: %d episodes, %d steps", src, len(episodes) - before, steps[-1])
    if skips.total:
        logger.warning(skips.summary())
    stats = DataStatistics(norm_stats_for(episodes), steps)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(cache) + ".tmp")
        tmp.write_text(json.dumps({"sources_sha256": fingerprint, **stats.to_json()}))
        tmp.replace(cache)
    return stats
