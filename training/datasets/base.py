"""The common sample format, action chunking, q01/q99 statistics and bad-data accounting.

Every reader (simulator episodes, ROS 2 bags, RLDS TFRecord shards, Pixel-160K annotations) produces
:class:`Episode` objects; :func:`make_sample` turns a step of one into a training sample (the training stream and
the in-memory :class:`ChunkDataset` both use it):

    sample = {
        "image":        (H, W, 3) uint8 RGB, the observation at step t
        "instruction":  str
        "target_mask":  (H, W) bool mask of the target at step t, or None (no target / text-only sample)
        "prompts":      list of pixel_model prompts (Point/Line/Box/Mask, pixel coordinates of `image`)
        "proprio":      (P,) float32 robot state at step t normalised with norm_stats[dataset]["proprio"], or None
                        when the episode has no state
        "actions":      (N_c, 7) float32, actions t .. t+N_c-1 normalised with q01/q99 (gripper kept in [0, 1]);
                        steps past the episode end repeat the last action
        "action_valid": (N_c,) bool, False for those padded steps (the loss ignores them)
        "target_xy":    (2,) float32, the centroid of the target's mask at step t (x, y as fractions of the image
                        width and height from the top-left corner; pixel centres), NaN without a mask; given
                        whether or not the sample shows its prompts (the text-grounding map learns it, text-only too)
        "place_xy":     (2,) float32, the same for the episode's place mask (where the target goes), NaN without one
        "click_to_tcp": (4, 3) float32, the camera's map from a click to where it lies from the TCP at step t
                        (pixelvla_robots.camera.plane_click_map; the model places the prompts with it), or None
                        when the episode has no camera, TCP or prompt plane (see Episode)
        "dataset":      str, the dataset key (its norm_stats entry)
        "episode":      str, where the episode came from (Episode.source), for logs and tests
    }

Actions are 7-D end-effector deltas in the Bridge convention: dx, dy, dz (m), droll, dpitch, dyaw (rad),
gripper (1 = open, 0 = closed). Normalisation follows OpenVLA: a_n = 2 (a - q01) / (q99 - q01) - 1, clipped to
[-1, 1], on the dims where ``mask`` is true (all but the gripper).

Bad data is never trained on: readers and :class:`ChunkDataset` drop it through a :class:`SkipLog`, which
counts each reason and logs each occurrence (``SkipLog.counts`` is the record a test or a report reads).
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

ACTION_DIM = 7
#: Reasons for dropping data; readers may add their own strings.
SHORT_EPISODE = "episode shorter than the chunk"
NAN_ACTIONS = "NaN or inf actions"
MISSING_IMAGE = "missing image"
TRUNCATED = "truncated or corrupt record"
MISSING_INSTRUCTION = "missing instruction"
BAD_STATE = "robot state missing a step, or NaN"


class SkipLog:
    """Counted, logged reasons for data that was dropped."""

    def __init__(self, name: str = "data"):
        self.name = name
        self.counts: collections.Counter[str] = collections.Counter()

    def skip(self, reason: str, where: str = "") -> None:
        self.counts[reason] += 1
        logger.warning("%s: skipped %s%s (%d so far for this reason)", self.name, reason,
                       f" ({where})" if where else "", self.counts[reason])

    def merge(self, other: "SkipLog") -> None:
        self.counts.update(other.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return f"{self.name}: nothing skipped"
        return f"{self.name}: skipped " + ", ".join(f"{n} x {r}" for r, n in sorted(self.counts.items()))


@dataclass
class Episode:
    """One demonstration, as every reader delivers it.

    images (T, H, W, 3) uint8 RGB; actions (T, 7) float32 raw (Bridge convention, see module doc);
    target_masks (T, H, W) bool or None; prompts: optional per-step list of fixed prompts (e.g. from
    annotations), None to sample them from the masks; instruction: str; dataset: its norm-stats key;
    proprio (T, P) float32 robot state at each step (raw, the dataset's convention) or None.
    camera (a pixelvla_robots CameraModel at the images' size), tcp_positions (T, 3) m in the base frame and
    prompt_plane_z (m, the height objects rest at): where they are known, a prompt's pixel is placed in the
    base frame (samples' "click_to_tcp").
    """

    images: np.ndarray
    actions: np.ndarray
    instruction: str
    dataset: str
    target_masks: Optional[np.ndarray] = None
    prompts: Optional[list] = None
    first_masks: Optional[np.ndarray] = None  # (H, W) target mask of step 0, for "operator clicks once" prompts
    source: str = ""  # where it came from (file, episode id) for log lines
    meta: dict = field(default_factory=dict)
    proprio: Optional[np.ndarray] = None
    place_mask: Optional[np.ndarray] = None  # (H, W) where the target goes (e.g. the plate) at step 0: place prompts
    camera: Any = None
    tcp_positions: Optional[np.ndarray] = None
    prompt_plane_z: Optional[float] = None

    @property
    def num_steps(self) -> int:
        return int(len(self.actions))


def check_episode(ep: Episode, chunk_size: int, skips: SkipLog) -> bool:
    """True if `ep` can be trained on; otherwise the reason is counted in `skips`."""
    if ep.images is None or len(ep.images) != len(ep.actions) or (len(ep.images) and ep.images[0] is None):
        skips.skip(MISSING_IMAGE, ep.source)
        return False
    if not ep.instruction or not str(ep.instruction).strip():
        skips.skip(MISSING_INSTRUCTION, ep.source)
        return False
    a = np.asarray(ep.actions)
    if a.ndim != 2 or a.shape[1] != ACTION_DIM or not np.all(np.isfinite(a)):
        skips.skip(NAN_ACTIONS, ep.source)
        return False
    if ep.proprio is not None:
        s = np.asarray(ep.proprio)
        if s.ndim != 2 or len(s) != len(a) or not np.all(np.isfinite(s)):
            skips.skip(BAD_STATE, ep.source)
            return False
    if len(a) < chunk_size:
        skips.skip(SHORT_EPISODE, f"{ep.source}: {len(a)} < {chunk_size} steps")
        return False
    return True


# ------------------------------------------------------------------------------------------------ statistics
def state_stats(states: Sequence[np.ndarray]) -> dict:
    """Per-column statistics of (N, P) arrays (robot states: OpenVLA's "proprio" entry; actions: its "action"
    entry without the mask): {mean, std, max, min, q01, q99}."""
    s = np.concatenate([np.asarray(x, np.float64) for x in states])
    return {"mean": s.mean(0).tolist(), "std": s.std(0).tolist(), "max": s.max(0).tolist(), "min": s.min(0).tolist(),
            "q01": np.quantile(s, 0.01, axis=0).tolist(), "q99": np.quantile(s, 0.99, axis=0).tolist()}


def compute_norm_stats(actions: Sequence[np.ndarray] | np.ndarray, gripper_dims: Sequence[int] = (6,)) -> dict:
    """OpenVLA-layout statistics of (N, 7) actions: {"action": {mean, std, max, min, q01, q99, mask}}."""
    a = np.concatenate([np.asarray(x, np.float64).reshape(-1, ACTION_DIM) for x in actions]) \
        if not isinstance(actions, np.ndarray) else np.asarray(actions, np.float64).reshape(-1, ACTION_DIM)
    if len(a) == 0:
        raise ValueError("no actions to compute statistics from")
    mask = [i not in gripper_dims for i in range(ACTION_DIM)]
    return {"action": {**state_stats([a]), "mask": mask}, "num_transitions": int(len(a))}


def normalize_actions(actions: np.ndarray, stats: dict) -> np.ndarray:
    """(..., 7) raw -> normalised (module doc); the inverse of pixelvla_model.unnormalize_actions."""
    s = stats["action"]
    q01, q99 = np.asarray(s["q01"], np.float64), np.asarray(s["q99"], np.float64)
    mask = np.asarray(s.get("mask", [True] * (ACTION_DIM - 1) + [False]), bool)
    span = np.where(q99 - q01 > 1e-8, q99 - q01, 1.0)  # a constant dim maps to -1, never a division by zero
    norm = np.clip(2.0 * (np.asarray(actions, np.float64) - q01) / span - 1.0, -1.0, 1.0)
    return np.where(mask, norm, actions).astype(np.float32)


def chunk_targets(actions: np.ndarray, t: int, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Actions t .. t+N_c-1 of (T, 7) `actions` -> ((N_c, 7), valid (N_c,)); past the end: the last action
    repeated, valid False."""
    T = len(actions)
    idx = np.arange(t, t + chunk_size)
    valid = idx < T
    return actions[np.minimum(idx, T - 1)], valid


# ------------------------------------------------------------------------------------------------ samples
def normalized_arrays(ep: Episode, norm_stats: dict[str, dict]) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(T, 7) normalised actions and (T, P) normalised robot state of `ep` (None without a state or without
    "proprio" statistics for its dataset)."""
    from pixelvla_model.processing import normalize_proprio  # the inference path's own normalisation

    stats = norm_stats[ep.dataset]
    state = None if ep.proprio is None or "proprio" not in stats else normalize_proprio(ep.proprio, stats)
    return normalize_actions(ep.actions, stats), state


def mask_centroid(mask: Optional[np.ndarray]) -> np.ndarray:
    """(2,) float32 (x, y) centroid of a (H, W) mask as fractions of the width and height (pixel centres at
    (i + 0.5) / size); NaN for no mask or an empty one."""
    from pixelvla_model.prompts import Mask, prompt_anchor

    if mask is None or not mask.any():
        return np.full(2, np.nan, np.float32)
    x, y = prompt_anchor(Mask(mask))
    return np.array([x / mask.shape[1], y / mask.shape[0]], np.float32)


def make_sample(ep: Episode, actions: np.ndarray, state: Optional[np.ndarray], t: int, chunk_size: int,
                sampler: Optional[Callable[..., tuple[list, Optional[np.ndarray]]]],
                rng: Optional[np.random.Generator]) -> dict[str, Any]:
    """The sample of step `t` (module doc) from an episode and its :func:`normalized_arrays`; the prompts are
    drawn with `rng` (the caller seeds it from the sample's position, never from global state)."""
    chunk, valid = chunk_targets(actions, t, chunk_size)
    mask = ep.target_masks[t] if ep.target_masks is not None else None
    fixed = ep.prompts[t] if ep.prompts is not None else None
    prompts: list = []
    shown_mask = mask
    if sampler is not None:
        first = ep.first_masks if ep.first_masks is not None else (
            ep.target_masks[0] if ep.target_masks is not None else None)
        prompts, shown_mask = sampler(rng, mask, first_mask=first, fixed_prompts=fixed, place_mask=ep.place_mask)
    elif fixed:
        prompts = list(fixed)
    click_map = None
    if ep.camera is not None and ep.tcp_positions is not None and ep.prompt_plane_z is not None:
        from pixelvla_robots.camera import plane_click_map

        click_map = plane_click_map(ep.camera, ep.prompt_plane_z, ep.tcp_positions[t])
    return {"image": ep.images[t], "instruction": ep.instruction, "target_mask": shown_mask, "prompts": prompts,
            "proprio": None if state is None else state[t], "actions": chunk, "action_valid": valid,
            "target_xy": mask_centroid(mask), "place_xy": mask_centroid(ep.place_mask), "click_to_tcp": click_map,
            "dataset": ep.dataset, "episode": ep.source}


# ------------------------------------------------------------------------------------------------ dataset
class ChunkDataset:
    """Map-style dataset over (episode, step) pairs of in-memory episodes (torch Dataset protocol), for small
    data sets and tools; training streams instead (:mod:`pixelvla_training.datasets.stream`).

    ``sampler`` (a :class:`~pixelvla_training.datasets.prompts.PromptSampler`) decides each sample's prompts
    and whether its target mask is shown, deterministically from (seed, epoch, index): the same index in the
    same epoch always gives the same sample.
    """

    def __init__(self, episodes: Sequence[Episode], chunk_size: int, norm_stats: dict[str, dict],
                 sampler: Optional[Callable[..., tuple[list, Optional[np.ndarray]]]] = None, seed: int = 0,
                 skips: Optional[SkipLog] = None):
        self.skips = skips or SkipLog("dataset")
        self.chunk_size = chunk_size
        self.episodes = [ep for ep in episodes if check_episode(ep, chunk_size, self.skips)]
        missing = sorted({ep.dataset for ep in self.episodes} - set(norm_stats))
        if missing:
            raise ValueError(f"no norm stats for datasets {missing}; compute them with compute_norm_stats")
        self.norm_stats = norm_stats
        self.arrays = [normalized_arrays(ep, norm_stats) for ep in self.episodes]
        self.index = [(e, t) for e, ep in enumerate(self.episodes) for t in range(ep.num_steps)]
        self.sampler = sampler
        self.seed = seed
        self.epoch = 0
        if self.skips.total:
            logger.warning(self.skips.summary())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item) -> dict[str, Any]:
        """item: an index, or (epoch, index)."""
        epoch, i = (int(item[0]), int(item[1])) if isinstance(item, tuple) else (self.epoch, int(item))
        e, t = self.index[i]
        actions, state = self.arrays[e]
        rng = np.random.default_rng([self.seed, epoch, i]) if self.sampler is not None else None
        return make_sample(self.episodes[e], actions, state, t, self.chunk_size, self.sampler, rng)


def norm_stats_for(episodes: Sequence[Episode], keys: Optional[dict[str, str]] = None) -> dict[str, dict]:
    """q01/q99 statistics per dataset key over the episodes' raw actions (OpenVLA layout), with a "proprio"
    entry for the keys whose every episode has a finite robot state of one width."""
    by_key: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    states: dict[str, list] = collections.defaultdict(list)
    for ep in episodes:
        a = np.asarray(ep.actions, np.float64)
        if a.ndim == 2 and a.shape[1] == ACTION_DIM and np.all(np.isfinite(a)):
            by_key[ep.dataset].append(a)
            s = None if ep.proprio is None else np.asarray(ep.proprio, np.float64)
            states[ep.dataset].append(s if s is not None and s.ndim == 2 and len(s) == len(a)
                                      and np.all(np.isfinite(s)) else None)
    stats = {k: compute_norm_stats(v) for k, v in by_key.items()}
    for k, ss in states.items():
        if ss and all(s is not None for s in ss) and len({s.shape[1] for s in ss}) == 1:
            stats[k]["proprio"] = state_stats(ss)
    return stats


def resize_episode(ep: Episode, size: int) -> Episode:
    """Images and masks resized to (size, size) once at load (what the processor would do every step).
    Images: the model's own resize (pixelvla_model.processing.resize_image, Lanczos), so training sees what
    the policy node sees; masks: area coverage > 0.5."""
    import torch
    import torch.nn.functional as F

    from pixelvla_model.processing import resize_image

    if ep.images.shape[1:3] == (size, size) or ep.prompts is not None:
        return ep  # fixed prompts are in the original pixel coordinates: leave those episodes as they are
    imgs = np.stack([resize_image(image, size) for image in ep.images])

    def shrink(m):
        if m is None:
            return None
        t = torch.from_numpy(np.asarray(m, np.float32))
        t = t[None] if t.ndim == 3 else t[None, None]
        out = F.interpolate(t, size=(size, size), mode="area")[0] > 0.5
        return out.numpy() if np.asarray(m).ndim == 3 else out[0].numpy()

    camera = None if ep.camera is None else ep.camera.resized(size, size)
    return Episode(imgs, ep.actions, ep.instruction, ep.dataset, shrink(ep.target_masks), ep.prompts,
                   shrink(ep.first_masks), ep.source, ep.meta, ep.proprio, shrink(ep.place_mask), camera,
                   ep.tcp_positions, ep.prompt_plane_z)
