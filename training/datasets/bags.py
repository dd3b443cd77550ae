"""ROS 2 bags recorded from a robot or the simulator (recorder node, one bag per episode) -> :class:`Episode`.

Per bag: every image on ``image_topic`` (sensor_msgs/Image rgb8/bgr8/rgba8/bgra8/mono8) is one step; its
instruction is the latest ``/pixelvla/instruction`` (std_msgs/String) before it; its action comes from

- ``action_source="action_chunk"``: the ActionChunk on ``/pixelvla/action_chunk`` stamped with the image's
  stamp (the policy or a tele-operator's command computed from that frame), its first action (7-D Bridge
  convention); images without one are dropped (counted);
- ``action_source="joint_states"``: the end-effector motion to the next image, from ``/joint_states``
  (nearest in time) through the WX250s forward kinematics: (dx, dy, dz, droll, dpitch, dyaw) between the
  two TCP poses, gripper = the next finger position binarised (1 = open); the last image has no action.

The target mask of a step is the latest ``mask_topic`` image (mono8, non-zero = target) at or before it, if
the bag has one. A bag cut short (a recorder that crashed: no metadata.yaml, an MCAP file without its end)
gives the steps up to the damage; `pixelvla_training.bags.read_bag` logs what was lost. No ROS installation
is needed (rosbags).
"""
from __future__ import annotations

import bisect
import logging
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from .base import MISSING_IMAGE, MISSING_INSTRUCTION, TRUNCATED, Episode, SkipLog

logger = logging.getLogger(__name__)

NO_ACTION = "image without an action"
DEFAULT_MSG_DIR = Path(__file__).resolve().parents[2] / "msg"


def read_bag_episode(path: str | Path, typestore=None, image_topic: str = "/camera/image_raw",
                     action_source: str = "action_chunk", mask_topic: Optional[str] = "/sim/target_mask",
                     instruction_topic: str = "/pixelvla/instruction", dataset_key: str = "robot_bags",
                     skips: Optional[SkipLog] = None, msg_dir: str | Path = DEFAULT_MSG_DIR) -> Optional[Episode]:
    """One bag -> one Episode (None, counted in `skips`, if nothing usable is in it)."""
    from pixelvla_training.bags import project_typestore, read_bag_topics

    if action_source not in ("action_chunk", "joint_states"):
        raise ValueError("action_source must be 'action_chunk' or 'joint_states'")
    skips = skips if skips is not None else SkipLog(f"bag:{path}")
    typestore = typestore or project_typestore(msg_dir)
    action_topic = "/pixelvla/action_chunk" if action_source == "action_chunk" else "/joint_states"
    decode = {image_topic: "rgb", **({mask_topic: "mono"} if mask_topic else {})}
    try:
        bag = read_bag_topics(path, typestore, [instruction_topic, action_topic], images=decode)
        for _, exc in bag.bad_images[image_topic]:
            skips.skip(MISSING_IMAGE, f"{path}: {exc}")
        if mask_topic and bag.bad_images[mask_topic]:  # a mask that does not decode spoils the episode
            raise bag.bad_images[mask_topic][0][1]
        images = [(m.stamp, m.value, m.log_ns) for m in bag[image_topic]]
        masks = [(m.stamp, m.value > 0) for m in bag[mask_topic]] if mask_topic else []
        instructions = [(m.log_ns, str(m.value.data)) for m in bag[instruction_topic]]
        chunks, joints = {}, []
        for m in bag[action_topic]:
            if action_source == "action_chunk":
                a = np.asarray(m.value.actions, np.float32)
                if int(m.value.action_dim) == 7 and a.size >= 7:
                    chunks[m.stamp] = a[:7]
            else:
                joints.append((m.stamp, dict(zip(m.value.name, np.asarray(m.value.position, float)))))
    except Exception as exc:  # an unreadable / truncated bag
        skips.skip(TRUNCATED, f"{path}: {exc}")
        return None
    if not images:
        skips.skip(MISSING_IMAGE, f"{path}: no {image_topic} messages")
        return None
    images.sort(key=lambda x: x[0])
    frames, actions = [], []
    if action_source == "action_chunk":
        for stamp, img, _ in images:
            if stamp in chunks:
                frames.append((stamp, img))
                actions.append(chunks[stamp])
            else:
                skips.skip(NO_ACTION, f"{path} @ {stamp}")
    else:
        actions_js = _joint_actions([s for s, _, _ in images], joints)
        for (stamp, img, _), a in zip(images, actions_js):
            if a is None:
                skips.skip(NO_ACTION, f"{path} @ {stamp}")
            else:
                frames.append((stamp, img))
                actions.append(a)
    if not frames:
        return None
    instruction = ""
    if instructions:
        instructions.sort()
        first_image_log = images[0][2]
        before = [s for t, s in instructions if t <= first_image_log]
        instruction = (before[-1] if before else instructions[0][1])
    if not instruction:
        skips.skip(MISSING_INSTRUCTION, str(path))
        return None
    target = None
    if masks:
        masks.sort(key=lambda x: x[0])
        stamps = [s for s, _ in masks]
        hw = frames[0][1].shape[:2]
        target = []
        for stamp, _ in frames:
            k = bisect.bisect_right(stamps, stamp) - 1
            m = masks[k][1] if k >= 0 else None
            target.append(m if m is not None and m.shape == hw else np.zeros(hw, bool))
        target = np.stack(target)
    return Episode(images=np.stack([f for _, f in frames]), actions=np.stack(actions).astype(np.float32),
                   instruction=instruction, dataset=dataset_key, target_masks=target,
                   first_masks=None if target is None else target[0], source=str(path))


def _joint_actions(image_stamps: Sequence[int], joints: list) -> list:
    """Per image: the Bridge action to the next image's end-effector pose (None where it cannot be made)."""
    from pixelvla_robots import wx250s

    if not joints:
        return [None] * len(image_stamps)
    joints.sort(key=lambda x: x[0])
    js = [s for s, _ in joints]

    def state(stamp):
        k = bisect.bisect_left(js, stamp)
        k = min(range(max(0, k - 1), min(len(js), k + 1)), key=lambda i: abs(js[i] - stamp))
        d = joints[k][1]
        try:
            q = np.array([d[n] for n in wx250s.JOINT_NAMES])
        except KeyError:
            return None
        finger = d.get(wx250s.FINGER_NAMES[0])
        return q, finger

    states = [state(s) for s in image_stamps]
    out = []
    for i in range(len(states)):
        if i + 1 >= len(states) or states[i] is None or states[i + 1] is None:
            out.append(None)
            continue
        (q0, _), (q1, f1) = states[i], states[i + 1]
        p0, r0 = wx250s.fk(q0)
        p1, r1 = wx250s.fk(q1)
        grip = 1.0 if f1 is None else wx250s.binarize_gripper(wx250s.finger_to_gripper(f1))
        out.append(np.concatenate([wx250s.ee_delta_between(p0, r0, p1, r1), [grip]]).astype(np.float32))
    return out


def read_bags(paths: str | Sequence[str | Path], skips: Optional[SkipLog] = None, **kwargs) -> Iterator[Episode]:
    """Episodes of every bag directory under `paths` (a folder of bags, one bag, or a list), closed or not."""
    if isinstance(paths, (str, Path)):
        from pixelvla_training.bags import find_bags

        bag_dirs = find_bags(paths)
    else:
        bag_dirs = [Path(p) for p in paths]
    skips = skips if skips is not None else SkipLog("bags")
    for bag in bag_dirs:
        ep = read_bag_episode(bag, skips=skips, **kwargs)
        if ep is not None:
            yield ep
