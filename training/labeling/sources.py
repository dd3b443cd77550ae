"""Input datasets for the labeler, as a list of episode keys plus a loader per key.

Every source gives `EpisodeInput`s in a fixed order (the order decides shard membership, see FORMAT.md):
- `SimSource`: a simulator episode directory (`pixelvla-sim-episodes`, training/episodes/DATASET.md): images,
  gripper commands and states, TCP poses, camera intrinsics and pose (the kinematic proposal path).
- `BagSource`: a directory of ROS 2 bags (or one bag) recorded by the recorder node, one episode per bag, closed
  or cut short (a recorder that crashed; found by `pixelvla_training.bags.find_bags`, read by `read_bag_topics`):
  `/camera/image_raw` frames, `/pixelvla/instruction`, finger state from `/joint_states`, camera from
  `/camera/camera_info` + `/camera/pose`, TCP from forward kinematics of the arm joints when all are there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class EpisodeError(Exception):
    """An episode that cannot be labelled; `reason` is a FORMAT.md skip code."""

    def __init__(self, reason: str, details: str = "") -> None:
        super().__init__(f"{reason}: {details}" if details else reason)
        self.reason = reason
        self.details = details


@dataclass
class EpisodeInput:
    """One episode, source-independent. images (T, H, W, 3) uint8; gripper_actions (T,) and gripper_state (T,)
    in [0, 1], 1 = open; tcp_poses (T, 7) base frame (x, y, z m, qw, qx, qy, qz); finger_positions (T,) m
    (distance of a pad from the TCP); camera: CameraModel or None; source: the record's "source" fields."""

    episode_id: str
    instruction: str
    images: np.ndarray
    source: dict
    gripper_actions: np.ndarray | None = None
    gripper_state: np.ndarray | None = None
    tcp_poses: np.ndarray | None = None
    finger_positions: np.ndarray | None = None
    camera: object | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(len(self.images))


class SimSource:
    """Episodes of a simulator dataset directory, in index order."""

    format = "pixelvla-sim-episodes"

    def __init__(self, root: str | Path) -> None:
        from pixelvla_training.episodes.dataset import read_index

        self.root = Path(root).resolve()
        self.index = read_index(self.root)
        self.name = self.root.name

    def keys(self) -> list[str]:
        return [e["file"] for e in self.index["episodes"]]

    def episode_id(self, key: str) -> str:
        return f"{self.name}/{Path(key).stem}"

    def source_ref(self, key: str) -> dict:
        return {"format": self.format, "path": str(self.root), "episode": key}

    def load(self, key: str) -> EpisodeInput:
        from pixelvla_training.labeling.proposal import camera_from_arrays, finger_state
        from pixelvla_training.episodes.dataset import read_episode, validate_episode

        try:
            ep = read_episode(self.root / key, validate=False)
        except Exception as exc:  # zip / npz / JSON damage
            raise EpisodeError("unreadable", f"{type(exc).__name__}: {exc}") from None
        try:
            validate_episode(ep)
        except ValueError as exc:
            raise EpisodeError("unreadable", str(exc)) from None
        a = ep.arrays
        h, w = a["images"].shape[1:3]
        return EpisodeInput(
            episode_id=self.episode_id(key), instruction=str(ep.meta.get("instruction", "")), images=a["images"],
            source=self.source_ref(key), gripper_actions=a["actions"][:, 6], gripper_state=finger_state(a["gripper_positions"]),
            tcp_poses=a["tcp_poses"], finger_positions=a["gripper_positions"],
            camera=camera_from_arrays(a["camera_intrinsics"], a["camera_pose"], h, w),
            extra={"target_masks": a["target_masks"], "meta": ep.meta},
        )

    def load_frame(self, key: str, frame: int) -> np.ndarray:
        with np.load(self.root / key, allow_pickle=False) as npz:
            return npz["images"][frame]


class BagSource:
    """ROS 2 bags (MCAP or sqlite3) of the recorder node, one episode per bag, sorted by path."""

    format = "ros2-bag"
    IMAGE, INFO, POSE, JOINTS, INSTRUCTION = ("/camera/image_raw", "/camera/camera_info", "/camera/pose",
                                              "/joint_states", "/pixelvla/instruction")

    def __init__(self, root: str | Path, msg_dir: str | Path | None = None) -> None:
        from pixelvla_training.bags import find_bags, project_typestore

        self.root = Path(root).resolve()
        self.bags = find_bags(self.root)  # closed bags and bags cut short (no metadata.yaml)
        self.name = self.root.name
        msg_dir = Path(msg_dir) if msg_dir else Path(__file__).resolve().parents[2] / "msg"
        self.typestore = project_typestore(msg_dir)

    def keys(self) -> list[str]:
        return [str(b.relative_to(self.root)) if b != self.root else "." for b in self.bags]

    def episode_id(self, key: str) -> str:
        return f"{self.name}/{key}"

    def source_ref(self, key: str) -> dict:
        return {"format": self.format, "path": str(self.root), "episode": key}

    def load(self, key: str) -> EpisodeInput:
        from pixelvla_robots import wx250s
        from pixelvla_robots.camera import CameraModel, pose_arrays
        from pixelvla_training.bags import read_bag_topics

        try:
            bag = read_bag_topics(self.root / key, self.typestore, [self.INFO, self.POSE, self.JOINTS, self.INSTRUCTION],
                                  images={self.IMAGE: "rgb"})
        except Exception as exc:
            raise EpisodeError("unreadable", f"{type(exc).__name__}: {exc}") from None
        if bag.bad_images[self.IMAGE]:
            index, exc = bag.bad_images[self.IMAGE][0]
            raise EpisodeError("corrupt_frame", f"image {index}: {exc}")
        images = [m.value for m in bag[self.IMAGE]]
        stamps = [m.log_ns for m in bag[self.IMAGE]]
        joints = [(m.log_ns, dict(zip(m.value.name, np.asarray(m.value.position, dtype=float)))) for m in bag[self.JOINTS]]
        instruction = bag[self.INSTRUCTION][-1].value.data if bag[self.INSTRUCTION] else ""
        info = bag[self.INFO][-1].value if bag[self.INFO] else None
        pose = bag[self.POSE][-1].value.pose if bag[self.POSE] else None
        if not images:
            raise EpisodeError("unreadable", f"no {self.IMAGE} messages")
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise EpisodeError("corrupt_frame", f"image sizes differ: {sorted(shapes)}")
        T = len(images)
        state = tcp = finger = None
        if joints:
            jstamps = np.array([s for s, _ in joints])
            latest = [joints[max(0, int(np.searchsorted(jstamps, s, side="right")) - 1)][1] for s in stamps]
            if all(wx250s.FINGER_NAMES[0] in j for j in latest):
                finger = np.array([j[wx250s.FINGER_NAMES[0]] for j in latest])
                state = np.array([wx250s.finger_to_gripper(f) for f in finger])
            if all(all(n in j for n in wx250s.JOINT_NAMES) for j in latest):
                tcp = np.empty((T, 7))
                for t, j in enumerate(latest):
                    pos, rot = wx250s.fk(np.array([j[n] for n in wx250s.JOINT_NAMES]))
                    tcp[t] = np.concatenate([pos, wx250s.matrix_to_quat(rot)])
        camera = None
        if info is not None and pose is not None:
            camera = CameraModel.from_camera_info(info, *pose_arrays(pose))
        return EpisodeInput(self.episode_id(key), instruction, np.stack(images), self.source_ref(key),
                            gripper_actions=None, gripper_state=state, tcp_poses=tcp if camera is not None else None,
                            finger_positions=finger, camera=camera)

    def load_frame(self, key: str, frame: int) -> np.ndarray:
        return self.load(key).images[frame]


def open_source(path: str | Path, kind: str = "auto"):
    """A source for `path`: kind "sim", "bags" or "auto" (index.json -> sim, bags below (`find_bags`) -> bags)."""
    from pixelvla_training.bags import find_bags

    path = Path(path)
    if kind == "sim" or (kind == "auto" and (path / "index.json").is_file()):
        return SimSource(path)
    if kind == "bags" or (kind == "auto" and find_bags(path)):
        return BagSource(path)
    raise ValueError(f"{path}: neither a simulator episode directory (index.json) nor ROS 2 bags (metadata.yaml, or "
                     "MCAP files of a bag never closed); "
                     "no RLDS reader exists in this project yet")


__all__ = ["EpisodeInput", "EpisodeError", "SimSource", "BagSource", "open_source"]
