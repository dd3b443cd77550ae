"""Training data as a stream with bounded memory: shards read one at a time, a bounded shuffle buffer, loader
workers and DDP ranks on disjoint shards, and an exact resume of the position (:class:`DataStream`).

Lanes. The stream is cut into L = world x grad_accum x readers lanes (readers = max(1, num_workers)). In each
epoch of a source, lane l reads its own share of the source's shards: the shards in a random order drawn from
(seed, source, epoch), every L-th one from position l; a source with fewer shards than lanes is split by
episodes instead (lane l takes episode n of every shard when n % L == l). A lane is an endless sequence of
samples (each source's epochs follow one another). Micro-batch k of rank r (counted on that rank) comes from

    q = k mod (grad_accum x readers),  m = q mod grad_accum,  u = q div grad_accum,
    lane = (u x grad_accum + m) x world + r

so no two ranks and no two loader workers share a lane, nor a shard within an epoch; with one reader per
rank, micro-batch m of rank r at every step is lane m x world + r, the slot of the global batch the trainer
gives it: runs with the same world x grad_accum (and num_workers) train on the same global batches.

Shuffle buffer. For each source, a lane fills a buffer with whole episodes until it holds `shuffle_buffer`
steps (or the lane's share of the epoch ends), then emits those steps in a random order drawn from (seed,
lane, source, where the buffer started), then refills: a lane holds at most shuffle_buffer steps plus one
episode per source. Sources are mixed per sample, source i drawn with probability proportional to
weight_i x steps_i (OpenVLA's mixture weights, balanced by dataset size as OpenVLA does; all weights 1: every
step equally likely, as one concatenated dataset). Prompts are drawn from (seed, lane, sample number).

Resume. A lane's position is {samples emitted, per source: epoch, where its buffer started (shard position in
the lane's order, episode index in the shard), steps of that buffer emitted}. Every micro-batch carries its
lane's position after it; the stream records the positions of the micro-batches the trainer took (not those
workers prefetched). ``state_dict()`` is that record (JSON-able); after ``load_state_dict`` each lane refills
its buffer from where it started and skips what was emitted, so the batches that follow are those the
uninterrupted run would have given. Resuming needs the same world size, grad_accum, num_workers and batch size.
"""
from __future__ import annotations

import copy
import itertools
import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from .base import SkipLog, check_episode, make_sample, normalized_arrays
from .sources import DataStatistics, Source, sources_from_config

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Who reads what: this process's rank among `world`, micro-batches per step, loader readers per rank."""

    world: int = 1
    rank: int = 0
    grad_accum: int = 1
    readers: int = 1  # max(1, num_workers)

    @property
    def lanes(self) -> int:
        return self.world * self.grad_accum * self.readers

    def lane_of(self, k: int) -> int:
        """The lane of this rank's micro-batch k (module doc)."""
        q = k % (self.grad_accum * self.readers)
        m, u = q % self.grad_accum, q // self.grad_accum
        return (u * self.grad_accum + m) * self.world + self.rank


class _SourceInLane:
    """One source as one lane reads it: its epochs one after the other, through the shuffle buffer."""

    def __init__(self, source: Source, index: int, lane: int, lanes: int, seed: int, chunk_size: int,
                 norm_stats: dict, skips: SkipLog, state: Optional[dict] = None):
        self.source, self.index, self.lane, self.lanes, self.seed = source, index, lane, lanes, seed
        self.chunk_size, self.norm_stats, self.skips = chunk_size, norm_stats, skips
        self.shards = source.shards()
        if not self.shards:
            raise ValueError(f"{source}: no shards")
        self.state = dict(state) if state else {"epoch": 0, "shard": 0, "episode": 0, "emitted": 0}
        self.walker: Optional[Iterator] = None  # usable episodes from the buffer's start on, kept between buffers
        self.buffer: Optional[list] = None  # [(episode, normalised actions, normalised state)]
        self.order: Optional[np.ndarray] = None  # (N, 2) (buffer entry, step), the emission order
        self.next_start: Optional[tuple[int, int]] = None  # (shard, episode) after the buffer; None: next epoch

    def units(self, epoch: int) -> list[tuple[str, Optional[int]]]:
        """This lane's share of `epoch`: (shard, None) for whole shards, or (shard, lane) for the episodes n of
        the shard with n % lanes == lane (fewer shards than lanes)."""
        order = np.random.default_rng([self.seed, 17, self.index, epoch]).permutation(len(self.shards))
        if len(self.shards) >= self.lanes:
            return [(self.shards[i], None) for i in order[self.lane::self.lanes]]
        return [(self.shards[i], self.lane) for i in order]

    def _walk(self, epoch: int, unit: int, first: int) -> Iterator[tuple[tuple[int, int], tuple]]:
        """Usable episodes of the lane's share of `epoch` from (unit, episode `first`) on, each with the
        position after it."""
        units = self.units(epoch)
        for u in range(unit, len(units)):
            shard, only = units[u]
            for n, load in enumerate(self.source.episodes(shard, self.skips)):
                if (u == unit and n < first) or (only is not None and n % self.lanes != only):
                    continue
                ep = load()
                if ep is not None and check_episode(ep, self.chunk_size, self.skips):
                    yield (u, n + 1), (ep, *normalized_arrays(ep, self.norm_stats))

    def _fill(self) -> None:
        s = self.state
        while True:
            if self.walker is None:
                self.walker = self._walk(s["epoch"], s["shard"], s["episode"])
            buffer, steps, end = [], 0, None
            for end, entry in self.walker:
                buffer.append(entry)
                steps += entry[0].num_steps
                if steps >= self.source.shuffle_buffer:
                    break
            else:  # the lane's share of this epoch is used up
                self.walker, end = None, None
            if buffer:
                break
            if (s["shard"], s["episode"]) == (0, 0):
                raise RuntimeError(f"{self.source}: lane {self.lane} of {self.lanes} found no usable episode in "
                                   f"epoch {s['epoch']} ({len(self.shards)} shards; {self.skips.summary()}); "
                                   "use fewer ranks, workers or grad_accum, or more data")
            s.update(epoch=s["epoch"] + 1, shard=0, episode=0, emitted=0)
        pairs = np.array([(e, t) for e, (ep, _, _) in enumerate(buffer) for t in range(ep.num_steps)])
        rng = np.random.default_rng([self.seed, 19, self.index, self.lane, s["epoch"], s["shard"], s["episode"]])
        self.buffer, self.order, self.next_start = buffer, pairs[rng.permutation(len(pairs))], end

    def next(self) -> tuple[tuple, int]:
        """((episode, actions, state), step t) of the next sample."""
        if self.buffer is None:
            self._fill()
        s = self.state
        e, t = self.order[s["emitted"]]
        entry = self.buffer[e]
        s["emitted"] += 1
        if s["emitted"] == len(self.order):  # the buffer is used up: the next one starts after it
            if self.next_start is None:
                s.update(epoch=s["epoch"] + 1, shard=0, episode=0)
            else:
                s.update(shard=self.next_start[0], episode=self.next_start[1])
            s["emitted"] = 0
            self.buffer = self.order = None
        return entry, int(t)


class _Lane:
    """One lane: its sources mixed by probability, samples made with prompts drawn from its sample count."""

    def __init__(self, lane: int, spec: "_Spec", state: Optional[dict] = None):
        self.lane, self.spec = lane, spec
        state = state or {}
        self.samples = int(state.get("samples", 0))
        saved = state.get("sources") or [None] * len(spec.sources)
        self.sources = [_SourceInLane(src, i, lane, spec.layout.lanes, spec.seed, spec.chunk_size, spec.norm_stats,
                                      spec.skips, saved[i]) if spec.probs[i] > 0 else None
                        for i, src in enumerate(spec.sources)]

    def next_sample(self) -> dict[str, Any]:
        spec, k = self.spec, self.samples
        i = 0 if len(spec.probs) == 1 else int(np.random.default_rng([spec.seed, 23, self.lane, k]).choice(
            len(spec.probs), p=spec.probs))
        (ep, actions, state), t = self.sources[i].next()
        rng = np.random.default_rng([spec.seed, 29, self.lane, k]) if spec.sampler is not None else None
        self.samples += 1
        return make_sample(ep, actions, state, t, spec.chunk_size, spec.sampler, rng)

    def state_dict(self) -> dict:
        return {"samples": self.samples,
                "sources": [None if s is None else copy.deepcopy(s.state) for s in self.sources]}


@dataclass
class _Spec:
    """Everything a loader worker needs to build its lanes (pickled to the workers)."""

    sources: list[Source]
    probs: np.ndarray
    norm_stats: dict
    chunk_size: int
    batch_size: int
    layout: Layout
    seed: int
    sampler: Optional[Callable]
    collate: Optional[Callable]
    skips: SkipLog


class _MicroBatches(torch.utils.data.IterableDataset):
    """This rank's micro-batches from micro-batch `start` on; in a loader worker, every readers-th of them."""

    def __init__(self, spec: _Spec, start: int, lane_states: dict[str, dict]):
        self.spec, self.start, self.lane_states = spec, start, lane_states

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.spec.layout.readers:
            raise RuntimeError(f"{workers} loader workers, the layout has {self.spec.layout.readers}")
        lanes: dict[int, _Lane] = {}
        for k in itertools.count(self.start + worker, workers):
            lane_id = self.spec.layout.lane_of(k)
            lane = lanes.get(lane_id)
            if lane is None:
                lane = lanes[lane_id] = _Lane(lane_id, self.spec, self.lane_states.get(str(lane_id)))
            samples = [lane.next_sample() for _ in range(self.spec.batch_size)]
            batch = self.spec.collate(samples) if self.spec.collate is not None else samples
            yield {"lane": lane_id, "state": lane.state_dict(), "batch": batch}


def _as_is(item):
    return item


class DataStream:
    """This rank's micro-batches of `batch_size` samples (collated by `collate`, or lists of sample dicts),
    endless, with ``state_dict`` / ``load_state_dict`` of the position (module doc).

    sources: the `data.sources` entries; statistics: from :func:`~pixelvla_training.datasets.dataset_statistics`
    over the same entries; image_size: images and masks resized to it as episodes are read.
    """

    def __init__(self, sources: Sequence[dict], statistics: DataStatistics, chunk_size: int, batch_size: int,
                 collate: Optional[Callable] = None, sampler: Optional[Callable] = None, seed: int = 0,
                 image_size: Optional[int] = None, rank: int = 0, world: int = 1, grad_accum: int = 1,
                 num_workers: int = 0, skips: Optional[SkipLog] = None):
        srcs = sources_from_config(sources, image_size)
        if len(statistics.steps) != len(srcs):
            raise ValueError("the statistics were computed over other sources")
        mass = np.array([s.weight * n for s, n in zip(srcs, statistics.steps)], np.float64)
        if mass.sum() <= 0:
            raise ValueError(f"no usable steps in {[str(s) for s in srcs]} (or every weight is 0)")
        self.num_workers = int(num_workers)
        layout = Layout(world, rank, grad_accum, max(1, self.num_workers))
        self.spec = _Spec(srcs, mass / mass.sum(), statistics.norm_stats, chunk_size, batch_size, layout, seed,
                          sampler, collate, skips if skips is not None else SkipLog("stream"))
        self.position: dict[str, Any] = {"micro_batches": 0, "lanes": {}}
        logger.info("data stream: %d lanes (%s); sources %s, drawn with probabilities %s", layout.lanes, layout,
                    [str(s) for s in srcs], np.round(self.spec.probs, 4).tolist())

    def _layout_record(self) -> dict:
        return {**asdict(self.spec.layout), "batch_size": self.spec.batch_size, "seed": self.spec.seed}

    def state_dict(self) -> dict:
        return {"layout": self._layout_record(), **copy.deepcopy(self.position)}

    def load_state_dict(self, state: dict) -> None:
        if state["layout"] != self._layout_record():
            raise ValueError(f"the data position was saved with {state['layout']}; this stream is "
                             f"{self._layout_record()}: resuming needs the same world size, grad_accum, "
                             "num_workers, batch size and seed")
        self.position = {"micro_batches": int(state["micro_batches"]), "lanes": copy.deepcopy(state["lanes"])}

    def __iter__(self) -> Iterator:
        """Micro-batches from the current position on; the position follows what was taken."""
        dataset = _MicroBatches(self.spec, self.position["micro_batches"], copy.deepcopy(self.position["lanes"]))
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=self.num_workers,
                                             collate_fn=_as_is)
        for item in loader:
            self.position["micro_batches"] += 1
            self.position["lanes"][str(item["lane"])] = item["state"]
            yield item["batch"]
