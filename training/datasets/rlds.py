"""Open X-Embodiment RLDS shards (TFDS TFRecord files) of Bridge V2 and Fractal, read without TensorFlow.

One record = one episode, its steps flattened into features named ``steps/<path>`` (TFDS layout):
images as a list of encoded JPEG/PNG bytes (one per step), vectors as float lists of T * dim values,
strings as byte lists. Each dataset's :class:`Convention` says where the image, the instruction and the
action parts are, and turns them into 7-D Bridge-convention actions (dx dy dz droll dpitch dyaw, gripper
1 = open), following OpenVLA's per-dataset transforms:

- ``bridge`` (``bridge_orig``), as OpenVLA's ``bridge_orig_dataset_transform``: the first step (its action is
  all zeros in Bridge) is dropped from every feature; the commanded gripper is binarised (> 0.95 open, < 0.05
  closed, in-between values take the value of the next definite step; a trajectory ending in-between keeps
  its last raw value there, as OpenVLA's scan starts from it), 1 = open; then the actions are relabelled
  from the reached end-effector states (``relabel_bridge_actions``): action[t] = state[t+1] - state[t] on
  the six pose dims of ``steps/observation/state`` (x y z in m, roll pitch yaw in rad: a plain difference of
  the Euler angles, not wrapped, as OpenVLA computes it), gripper = the binarised command of step t, and the
  last step, which has no next state, is dropped. The robot state (7: pose and gripper) is the episode's proprio.
- ``fractal`` (``fractal20220817_data``, RT-1): action = world_vector (3) + rotation_delta (3) + gripper;
  ``gripper_closedness_action`` is relative (+1 close, -1 open, 0 keep): turned into an absolute state,
  1 = open, starting from the opposite of the first command (open if there is none).

Bad records (CRC mismatch, truncated shard, undecodable image, NaN actions, too short) are counted in the
:class:`SkipLog` and skipped; a truncated shard ends that shard's reading. A shard (one TFRecord file) is read
lazily, record by record (:func:`shard_episodes`): the training stream decodes only the episodes it takes.
"""
from __future__ import annotations

import glob
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from .base import MISSING_IMAGE, MISSING_INSTRUCTION, NAN_ACTIONS, TRUNCATED, Episode, SkipLog
from .tfrecord import CorruptRecord, parse_example, read_tfrecord

logger = logging.getLogger(__name__)


def binarize_gripper_open(g: np.ndarray, open_above: float = 0.95, closed_below: float = 0.05) -> np.ndarray:
    """Continuous gripper command (1 = open) -> {0, 1} as OpenVLA's ``binarize_gripper_actions``: in-between
    values take the next definite state; trailing in-between values keep the last raw value."""
    g = np.asarray(g, np.float64)
    out = np.zeros(len(g), np.float32)
    state = g[-1] if len(g) else 0.0
    for i in range(len(g) - 1, -1, -1):
        if g[i] > open_above:
            state = 1.0
        elif g[i] < closed_below:
            state = 0.0
        out[i] = state
    return out


def relabel_bridge_actions(states: np.ndarray, gripper: np.ndarray) -> np.ndarray:
    """OpenVLA's ``relabel_bridge_actions``: (T, >= 6) reached end-effector states (x y z m, roll pitch yaw rad)
    and (T,) binarised gripper commands -> (T - 1, 7) actions: state[t+1] - state[t] on the six pose dims
    (plain differences, angles not wrapped), gripper[t]; the last step has no next state and is dropped."""
    states = np.asarray(states, np.float64)
    movement = states[1:, :6] - states[:-1, :6]
    return np.concatenate([movement, np.asarray(gripper, np.float64)[:-1, None]], axis=1).astype(np.float32)


def relative_to_absolute_gripper(closedness: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """RT-1 relative gripper commands (+1 close, -1 open, 0 keep) -> absolute state, 1 = open."""
    c = np.asarray(closedness, np.float64).reshape(-1)
    commands = np.where(c > threshold, -1, np.where(c < -threshold, 1, 0))  # +1 = open, -1 = close
    nonzero = commands[commands != 0]
    state = -nonzero[0] if len(nonzero) else 1
    out = np.zeros(len(c), np.float32)
    for i, cmd in enumerate(commands):
        if cmd:
            state = cmd
        out[i] = 1.0 if state > 0 else 0.0
    return out


@dataclass(frozen=True)
class Convention:
    """Where a dataset keeps its parts and how its steps become Bridge-convention actions."""

    name: str
    image_key: str
    instruction_keys: tuple[str, ...]
    # (features, T) -> (actions (T', 7), kept steps (T',) indices into 0..T-1, proprio (T', P) or None)
    steps: Callable[[dict, int], tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]


def _vec(f: dict, key: str, T: int, dim: int) -> np.ndarray:
    if key not in f:
        raise KeyError(key)
    a = np.asarray(f[key], np.float32)
    if a.size != T * dim:
        raise ValueError(f"{key}: {a.size} values for {T} steps x {dim}")
    return a.reshape(T, dim)


def _bridge_steps(f: dict, T: int):
    """bridge_orig: drop step 0, binarise the gripper, relabel from the reached states, drop the last step."""
    commanded = _vec(f, "steps/action", T, 7)[1:]
    states = _vec(f, "steps/observation/state", T, 7)[1:]
    actions = relabel_bridge_actions(states, binarize_gripper_open(commanded[:, 6]))
    return actions, np.arange(1, T - 1), states[:-1].copy()


def _fractal_steps(f: dict, T: int):
    world = _vec(f, "steps/action/world_vector", T, 3)
    rot = _vec(f, "steps/action/rotation_delta", T, 3)
    grip = relative_to_absolute_gripper(_vec(f, "steps/action/gripper_closedness_action", T, 1)[:, 0])
    return np.concatenate([world, rot, grip[:, None]], axis=1).astype(np.float32), np.arange(T), None


CONVENTIONS: dict[str, Convention] = {
    "bridge": Convention("bridge_orig", "steps/observation/image_0",
                         ("steps/language_instruction", "steps/observation/natural_language_instruction"),
                         _bridge_steps),
    "fractal": Convention("fractal20220817_data", "steps/observation/image",
                          ("steps/observation/natural_language_instruction", "steps/language_instruction"),
                          _fractal_steps),
}


def decode_image(data: bytes) -> np.ndarray:
    """Encoded JPEG/PNG bytes -> (H, W, 3) uint8 RGB (Pillow)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def episode_from_example(f: dict, conv: Convention, source: str, skips: SkipLog,
                         dataset_key: Optional[str] = None, images: bool = True) -> Optional[Episode]:
    """One parsed tf.train.Example -> Episode (None, counted, if unusable). images=False leaves `images` None
    (statistics need only the actions)."""
    encoded = f.get(conv.image_key)
    if not encoded:
        skips.skip(MISSING_IMAGE, source)
        return None
    T = len(encoded)
    try:
        actions, kept, proprio = conv.steps(f, T)
    except (KeyError, ValueError) as exc:
        skips.skip(NAN_ACTIONS if isinstance(exc, ValueError) else f"missing feature {exc}", source)
        return None
    text = next((f[k] for k in conv.instruction_keys if f.get(k)), None)
    instruction = text[0].decode("utf-8", "replace").strip() if text else ""
    if not instruction:
        skips.skip(MISSING_INSTRUCTION, source)
        return None
    if not len(kept):
        skips.skip(MISSING_IMAGE, f"{source}: no steps left")
        return None
    frames = None
    if images:
        frames = []
        for t in kept:
            if not encoded[t]:
                skips.skip(MISSING_IMAGE, f"{source} step {t}")
                return None
            try:
                frames.append(decode_image(encoded[t]))
            except Exception as exc:  # undecodable bytes
                skips.skip(MISSING_IMAGE, f"{source} step {t}: {exc}")
                return None
        frames = np.stack(frames)
    return Episode(images=frames, actions=actions, instruction=instruction, dataset=dataset_key or conv.name,
                   source=source, proprio=proprio)


def shard_files(paths: str | Sequence[str]) -> list[str]:
    """The TFRecord shards of a glob or a list of files, sorted."""
    files = sorted(glob.glob(paths)) if isinstance(paths, str) else sorted(str(p) for p in paths)
    if not files:
        raise FileNotFoundError(f"no TFRecord shards match {paths!r}")
    return files


def shard_episodes(path: str, dataset: str, skips: SkipLog, dataset_key: Optional[str] = None,
                   verify_crc: bool = True, images: bool = True) -> Iterator[Callable[[], Optional[Episode]]]:
    """One loader per record of the shard, in file order; calling it parses and decodes that episode (None
    if unusable, counted). Only the record's bytes are read until then."""
    if dataset not in CONVENTIONS:
        raise ValueError(f"unknown RLDS dataset {dataset!r}; known: {sorted(CONVENTIONS)}")
    conv = CONVENTIONS[dataset]

    def loader(record: bytes, src: str) -> Callable[[], Optional[Episode]]:
        def load() -> Optional[Episode]:
            try:
                features = parse_example(record)
            except CorruptRecord as exc:
                skips.skip(TRUNCATED, f"{src}: {exc}")
                return None
            return episode_from_example(features, conv, src, skips, dataset_key, images)
        return load

    try:
        for n, record in enumerate(read_tfrecord(path, verify=verify_crc)):
            yield loader(record, f"{Path(path).name}#{n}")
    except CorruptRecord as exc:  # nothing after a bad frame can be read
        skips.skip(TRUNCATED, str(exc))


def read_rlds(paths: str | Sequence[str], dataset: str, dataset_key: Optional[str] = None,
              skips: Optional[SkipLog] = None, verify_crc: bool = True,
              max_episodes: Optional[int] = None) -> Iterator[Episode]:
    """Yield episodes from RLDS TFRecord shards (a glob or a list of files) of `dataset` ("bridge" or
    "fractal"). Episodes carry no target mask (no pixel labels in OXE); they train text-only."""
    if dataset not in CONVENTIONS:
        raise ValueError(f"unknown RLDS dataset {dataset!r}; known: {sorted(CONVENTIONS)}")
    skips = skips if skips is not None else SkipLog(f"rlds:{dataset}")
    count = 0
    for path in shard_files(paths):
        for load in shard_episodes(path, dataset, skips, dataset_key, verify_crc):
            ep = load()
            if ep is not None:
                count += 1
                yield ep
                if max_episodes is not None and count >= max_episodes:
                    return
