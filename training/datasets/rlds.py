"""Open X-Embodiment RLDS shards (TFDS TFRecord files) of Bridge V2 and Fractal, read without TensorFlow.

One record = one episode, its steps flattened into features named ``steps/<path>`` (TFDS layout):
images as a list of encoded JPEG/PNG bytes (one per step), vectors as float lists of T * dim values,
strings as byte lists. Each dataset's :class:`Convention` says where the image, the instruction and the
action parts are, and turns them into 7-D Bridge-convention actions (dx dy dz droll dpitch dyaw, gripper
1 = open), following OpenVLA's per-dataset transforms:

- ``bridge`` (``bridge_dataset`` / ``bridge_orig``): action = steps/action (T, 7); the first step's action
  is all zeros in Bridge, so step 0 is dropped; the gripper is binarised (> 0.95 open, < 0.05 closed,
  in-between values take the state of the next definite step), 1 = open.
- ``fractal`` (``fractal20220817_data``, RT-1): action = world_vector (3) + rotation_delta (3) + gripper;
  ``gripper_closedness_action`` is relative (+1 close, -1 open, 0 keep): turned into an absolute state,
  1 = open, starting from the opposite of the first command (open if there is none).

Bad records (CRC mismatch, truncated shard, undecodable image, NaN actions, too short) are counted in the
:class:`SkipLog` and skipped; a truncated shard ends that shard's reading.
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
    """Continuous gripper command (1 = open) -> {0, 1}; in-between values take the next definite state."""
    g = np.asarray(g, np.float64)
    out = np.zeros(len(g), np.float32)
    state = 1.0 if (len(g) and g[-1] > 0.5) else 0.0
    for i in range(len(g) - 1, -1, -1):
        if g[i] > open_above:
            state = 1.0
        elif g[i] < closed_below:
            state = 0.0
        out[i] = state
    return out


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
    """Where a dataset keeps its parts and how its actions become Bridge-convention actions."""

    name: str
    image_key: str
    instruction_keys: tuple[str, ...]
    actions: Callable[[dict, int], np.ndarray]  # (features, T) -> (T, 7)
    drop_first: bool = False


def _vec(f: dict, key: str, T: int, dim: int) -> np.ndarray:
    if key not in f:
        raise KeyError(key)
    a = np.asarray(f[key], np.float32)
    if a.size != T * dim:
        raise ValueError(f"{key}: {a.size} values for {T} steps x {dim}")
    return a.reshape(T, dim)


def _bridge_actions(f: dict, T: int) -> np.ndarray:
    a = _vec(f, "steps/action", T, 7).copy()
    a[:, 6] = binarize_gripper_open(a[:, 6])
    return a


def _fractal_actions(f: dict, T: int) -> np.ndarray:
    world = _vec(f, "steps/action/world_vector", T, 3)
    rot = _vec(f, "steps/action/rotation_delta", T, 3)
    grip = relative_to_absolute_gripper(_vec(f, "steps/action/gripper_closedness_action", T, 1)[:, 0])
    return np.concatenate([world, rot, grip[:, None]], axis=1).astype(np.float32)


CONVENTIONS: dict[str, Convention] = {
    "bridge": Convention("bridge_orig", "steps/observation/image_0",
                         ("steps/language_instruction", "steps/observation/natural_language_instruction"),
                         _bridge_actions, drop_first=True),
    "fractal": Convention("fractal20220817_data", "steps/observation/image",
                          ("steps/observation/natural_language_instruction", "steps/language_instruction"),
                          _fractal_actions),
}


def decode_image(data: bytes) -> np.ndarray:
    """Encoded JPEG/PNG bytes -> (H, W, 3) uint8 RGB (Pillow)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def episode_from_example(f: dict, conv: Convention, source: str, skips: SkipLog,
                         dataset_key: Optional[str] = None) -> Optional[Episode]:
    images = f.get(conv.image_key)
    if not images:
        skips.skip(MISSING_IMAGE, source)
        return None
    T = len(images)
    try:
        actions = conv.actions(f, T)
    except (KeyError, ValueError) as exc:
        skips.skip(NAN_ACTIONS if isinstance(exc, ValueError) else f"missing feature {exc}", source)
        return None
    text = next((f[k] for k in conv.instruction_keys if f.get(k)), None)
    instruction = text[0].decode("utf-8", "replace").strip() if text else ""
    if not instruction:
        skips.skip(MISSING_INSTRUCTION, source)
        return None
    start = 1 if conv.drop_first else 0
    frames = []
    for t in range(start, T):
        if not images[t]:
            skips.skip(MISSING_IMAGE, f"{source} step {t}")
            return None
        try:
            frames.append(decode_image(images[t]))
        except Exception as exc:  # undecodable bytes
            skips.skip(MISSING_IMAGE, f"{source} step {t}: {exc}")
            return None
    if not frames:
        skips.skip(MISSING_IMAGE, f"{source}: no steps left")
        return None
    return Episode(images=np.stack(frames), actions=actions[start:], instruction=instruction,
                   dataset=dataset_key or conv.name, source=source)


def read_rlds(paths: str | Sequence[str], dataset: str, dataset_key: Optional[str] = None,
              skips: Optional[SkipLog] = None, verify_crc: bool = True,
              max_episodes: Optional[int] = None) -> Iterator[Episode]:
    """Yield episodes from RLDS TFRecord shards (a glob or a list of files) of `dataset` ("bridge" or
    "fractal"). Episodes carry no target mask (no pixel labels in OXE); they train text-only."""
    if dataset not in CONVENTIONS:
        raise ValueError(f"unknown RLDS dataset {dataset!r}; known: {sorted(CONVENTIONS)}")
    conv = CONVENTIONS[dataset]
    files = sorted(glob.glob(paths)) if isinstance(paths, str) else [str(p) for p in paths]
    if not files:
        raise FileNotFoundError(f"no TFRecord shards match {paths!r}")
    skips = skips if skips is not None else SkipLog(f"rlds:{dataset}")
    count = 0
    for path in files:
        n = 0
        try:
            for record in read_tfrecord(path, verify=verify_crc):
                src = f"{Path(path).name}#{n}"
                n += 1
                try:
                    features = parse_example(record)
                except CorruptRecord as exc:
                    skips.skip(TRUNCATED, f"{src}: {exc}")
                    continue
                ep = episode_from_example(features, conv, src, skips, dataset_key)
                if ep is not None:
                    count += 1
                    yield ep
                    if max_episodes is not None and count >= max_episodes:
                        return
        except CorruptRecord as exc:
            skips.skip(TRUNCATED, str(exc))
