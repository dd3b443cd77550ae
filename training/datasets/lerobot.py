"""LeRobot v3 datasets (parquet + mp4), read with pyarrow and PyAV, and written from simulator episodes.

Layout (LeRobot's ``codebase_version`` v3.0)::

    meta/info.json                                   fps, features {name: {dtype, shape, names, info}}, path templates
    meta/stats.json                                  per feature: min, max, mean, std, count (+ q01, q99 for vectors);
                                                     images per channel in [0, 1], shaped (C, 1, 1)
    meta/tasks.parquet                               task strings (the pandas index) -> task_index
    meta/episodes/chunk-CCC/file-FFF.parquet         one row per episode: episode_index, tasks, length,
                                                     data/{chunk,file}_index, dataset_{from,to}_index,
                                                     videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp}
    data/chunk-CCC/file-FFF.parquet                  one row per frame: the vector features, timestamp (s from the
                                                     episode start), frame_index, episode_index, index, task_index
    videos/<key>/chunk-CCC/file-FFF.mp4              the frames of several episodes one after the other; episode e
                                                     spans [from_timestamp, to_timestamp) of its file

Reading (:class:`LeRobotDataset`, the stream's ``type: lerobot`` source): one episode at a time, its rows from
its data file and its frames decoded from its video between its timestamps (each frame the one nearest
from_timestamp + timestamp). The episode's actions must be 7-D Bridge-convention end-effector deltas (the
source's ``action_key``, default ``action``); ``state_key`` (default ``observation.state``) is the proprio;
``image_key`` defaults to the first video (or image) feature; ``mask_key`` (default
``observation.target_mask`` where present) gives target masks; the instruction is the episode's first task.

Writing (:func:`write_sim_as_lerobot`, ``python -m pixelvla_training.datasets.lerobot SIM_DIR OUT_DIR``):
images -> ``observation.images.image`` (H.264 in mp4, yuv420p, every other frame a key frame), joints and
finger -> ``observation.state`` (7), TCP pose -> ``observation.tcp_pose`` (7), actions -> ``action`` (7),
target masks -> ``observation.target_mask`` (an image feature: lossless PNG in the parquet), instruction ->
task. The destination mask (place prompts) has no LeRobot counterpart and is not carried.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .base import MISSING_IMAGE, NAN_ACTIONS, TRUNCATED, Episode, SkipLog

logger = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
IMAGE_KEY = "observation.images.image"
MASK_KEY = "observation.target_mask"
STATE_NAMES = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger"]
ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
FRAME_MISMATCH = "video frames do not match the episode's timestamps"


# ------------------------------------------------------------------------------------------------ reading
class LeRobotDataset:
    """A LeRobot v3 dataset directory: its metadata in memory (one row per episode), episodes read on demand."""

    def __init__(self, root: str | Path):
        import pyarrow.parquet as pq

        self.root = Path(root)
        self.info = json.loads((self.root / "meta" / "info.json").read_text())
        version = str(self.info.get("codebase_version", ""))
        if not version.startswith("v3"):
            raise ValueError(f"{root}: LeRobot {version or 'unknown version'}, this reader needs v3")
        self.fps = float(self.info["fps"])
        self.features: dict = self.info["features"]
        rows = []
        for path in sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
            table = pq.read_table(path)
            keep = [c for c in table.column_names if not c.startswith("stats/")]  # per-episode stats: not needed
            rows += table.select(keep).to_pylist()
        self.episodes = {int(r["episode_index"]): r for r in rows}
        self.tasks: dict[int, str] = {}
        tasks_file = self.root / "meta" / "tasks.parquet"
        if tasks_file.is_file():
            t = pq.read_table(tasks_file)
            name = next(c for c in t.column_names if c != "task_index")  # the pandas index: the task string
            self.tasks = dict(zip(t.column("task_index").to_pylist(), t.column(name).to_pylist()))

    def camera_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] in ("video", "image") and k != MASK_KEY]

    def frames(self, index: int) -> dict[str, np.ndarray]:
        """The data rows of episode `index`, in frame order: {column: (T, ...) array}; image features as the
        list of their {bytes, path} cells."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        row = self.episodes[index]
        path = self.root / self.info.get("data_path", DATA_PATH).format(chunk_index=row["data/chunk_index"],
                                                                         file_index=row["data/file_index"])
        table = pq.read_table(path, filters=[("episode_index", "=", index)])
        table = table.take(pc.sort_indices(table, [("frame_index", "ascending")]))
        out = {}
        for name in table.column_names:
            if self.features.get(name, {}).get("dtype") == "image":
                out[name] = table.column(name).to_pylist()
            else:
                out[name] = np.asarray(table.column(name).to_pylist())
        return out

    def video(self, index: int, key: str, timestamps: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8 frames of episode `index` from video `key` at `timestamps` (s from the episode
        start); ValueError when a frame is missing (nearest decoded frame more than half a period away)."""
        import av

        row = self.episodes[index]
        path = self.root / self.info.get("video_path", VIDEO_PATH).format(
            video_key=key, chunk_index=row[f"videos/{key}/chunk_index"], file_index=row[f"videos/{key}/file_index"])
        start = float(row[f"videos/{key}/from_timestamp"])
        wanted = start + np.asarray(timestamps, np.float64)
        half = 0.5 / self.fps
        times, frames = [], []
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(max(0, int((wanted[0] - half) / stream.time_base)), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base)
                if t < wanted[0] - half:
                    continue
                if t > wanted[-1] + half:
                    break
                times.append(t)
                frames.append(frame.to_ndarray(format="rgb24"))
        if not frames:
            raise ValueError(f"{path}: no frame between {wanted[0]:.3f} and {wanted[-1]:.3f} s")
        times = np.asarray(times)
        nearest = np.abs(times[None, :] - wanted[:, None]).argmin(1)
        if np.abs(times[nearest] - wanted).max() > half:
            raise ValueError(f"{path}: no frame within {half:.3f} s of some of the episode's timestamps")
        return np.stack([frames[i] for i in nearest])

    def episode(self, index: int, dataset_key: str, skips: SkipLog, images: bool = True,
                image_key: Optional[str] = None, action_key: str = "action",
                state_key: Optional[str] = "observation.state", mask_key: Optional[str] = MASK_KEY) -> Optional[Episode]:
        """Episode `index` as an :class:`Episode` (None, counted, if unusable); images=False leaves images
        and masks None."""
        where = f"{self.root}:episode {index}"
        try:
            rows = self.frames(index)
        except Exception as exc:  # missing or damaged parquet file
            skips.skip(TRUNCATED, f"{where}: {exc}")
            return None
        actions = np.asarray(rows.get(action_key, np.zeros((0, 0))), np.float32)
        if actions.ndim != 2 or actions.shape[1] != 7 or not len(actions):
            skips.skip(NAN_ACTIONS, f"{where}: {action_key} is {actions.shape}, not (T, 7) Bridge actions")
            return None
        state = np.asarray(rows[state_key], np.float32) if state_key and state_key in rows else None
        tasks = self.episodes[index].get("tasks") or []
        instruction = tasks[0] if tasks else self.tasks.get(int(rows["task_index"][0]), "") if "task_index" in rows else ""
        frames = masks = None
        if images:
            key = image_key or (self.camera_keys() or [None])[0]
            if key is None or key not in self.features:
                skips.skip(MISSING_IMAGE, f"{where}: no camera feature {key!r}")
                return None
            try:
                if self.features[key]["dtype"] == "video":
                    frames = self.video(index, key, rows["timestamp"])
                else:
                    frames = np.stack([_decode_png(cell, "RGB") for cell in rows[key]])
                if mask_key and mask_key in rows:
                    masks = np.stack([_decode_png(cell, "L") > 127 for cell in rows[mask_key]])
            except ValueError as exc:
                skips.skip(FRAME_MISMATCH, f"{where}: {exc}")
                return None
            except Exception as exc:  # an undecodable video or image
                skips.skip(MISSING_IMAGE, f"{where}: {exc}")
                return None
        return Episode(images=frames, actions=actions, instruction=str(instruction), dataset=dataset_key,
                       target_masks=masks, first_masks=None if masks is None else masks[0], source=where,
                       proprio=state)


def _decode_png(cell: dict, mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(cell["bytes"])) as im:
        return np.asarray(im.convert(mode))


def _encode_png(image: np.ndarray) -> dict:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


# ------------------------------------------------------------------------------------------------ writing
class _VideoFile:
    """One mp4 being written: H.264, yuv420p, a key frame every other frame (quick seeks to an episode)."""

    def __init__(self, path: Path, fps: int, height: int, width: int, crf: int):
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.height, self.stream.width, self.stream.pix_fmt = height, width, "yuv420p"
        self.stream.codec_context.gop_size = 2
        self.stream.options = {"crf": str(crf), "preset": "medium"}
        self.stream.time_base = Fraction(1, fps)
        self.frames = 0

    def add(self, images: np.ndarray) -> None:
        import av

        for image in images:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames
            self.frames += 1
            self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode())
        self.container.close()


class _Stats:
    """Running statistics of one feature: vectors kept whole (for the quantiles), images as per-channel sums."""

    def __init__(self):
        self.values: list[np.ndarray] = []
        self.sums = None

    def add_vectors(self, v: np.ndarray) -> None:
        self.values.append(np.asarray(v, np.float64).reshape(len(v), -1))

    def add_images(self, images: np.ndarray) -> None:
        x = np.asarray(images, np.float64).reshape(-1, images.shape[-1] if images.ndim == 4 else 1) / 255.0
        s = (x.sum(0), (x * x).sum(0), x.min(0), x.max(0), len(x))
        self.sums = s if self.sums is None else (self.sums[0] + s[0], self.sums[1] + s[1],
                                                 np.minimum(self.sums[2], s[2]), np.maximum(self.sums[3], s[3]),
                                                 self.sums[4] + s[4])

    def result(self) -> dict:
        if self.sums is not None:  # per channel, (C, 1, 1) as LeRobot stores image statistics
            total, sq, lo, hi, n = self.sums
            mean = total / n
            std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
            shape = lambda a: a.reshape(-1, 1, 1).tolist()  # noqa: E731
            return {"min": shape(lo), "max": shape(hi), "mean": shape(mean), "std": shape(std), "count": [int(n)]}
        v = np.concatenate(self.values)
        return {"min": v.min(0).tolist(), "max": v.max(0).tolist(), "mean": v.mean(0).tolist(),
                "std": v.std(0).tolist(), "count": [int(len(v))], "q01": np.quantile(v, 0.01, axis=0).tolist(),
                "q99": np.quantile(v, 0.99, axis=0).tolist()}


def write_sim_as_lerobot(sim_root: str | Path, out: str | Path, episodes_per_file: int = 100,
                         files_per_chunk: int = 1000, crf: int = 10, skip_failures: bool = True) -> dict:
    """Convert a simulator dataset (training/episodes/DATASET.md) to LeRobot v3 at `out`; returns info.json.

    Episodes are read one at a time; `episodes_per_file` of them share a data file and a video file.
    crf: H.264 quality (0 = lossless, 10 = near-lossless, LeRobot's AV1 default is 30).
    """
    from pixelvla_training.episodes.dataset import read_episode, read_index

    entries = read_index(sim_root)["episodes"]
    episodes = (read_episode(Path(sim_root) / e["file"], validate=False) for e in entries)
    return write_lerobot(episodes, out, episodes_per_file, files_per_chunk, crf, skip_failures)


def write_lerobot(episodes: Iterable, out: str | Path, episodes_per_file: int = 100, files_per_chunk: int = 1000,
                  crf: int = 10, skip_failures: bool = True) -> dict:
    """Simulator-format episodes (pixelvla_training.episodes.dataset.Episode) -> LeRobot v3 at `out`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    vec = pa.list_(pa.float32(), 7)
    png = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("observation.state", vec), ("observation.tcp_pose", vec), ("action", vec),
                        (MASK_KEY, png), ("timestamp", pa.float32()), ("frame_index", pa.int64()),
                        ("episode_index", pa.int64()), ("index", pa.int64()), ("task_index", pa.int64())])
    tasks: dict[str, int] = {}
    stats = {k: _Stats() for k in ("observation.state", "observation.tcp_pose", "action", IMAGE_KEY, MASK_KEY,
                                   "timestamp", "frame_index", "episode_index", "index", "task_index")}
    rows: list[dict] = []
    data_writer = video = None
    fps = size = None
    total = 0
    episode_index = 0
    for ep in episodes:
        if skip_failures and not ep.meta.get("success", True):
            continue
        a = ep.arrays
        T, H, W = a["images"].shape[:3]
        period = float(ep.meta.get("control_period", 0.2))
        fps = fps or round(1.0 / period)
        if size is None:
            size = (H, W)
        if (H, W) != size or round(1.0 / period) != fps:
            raise ValueError(f"episode {episode_index}: {H}x{W} at {1 / period:g} Hz; the dataset is "
                             f"{size[0]}x{size[1]} at {fps} Hz (one size and rate per LeRobot dataset)")
        file_no, slot = divmod(episode_index, episodes_per_file)
        chunk, file = divmod(file_no, files_per_chunk)
        if slot == 0:  # a new data file and video file
            if data_writer is not None:
                data_writer.close()
                video.close()
            data_path = out / DATA_PATH.format(chunk_index=chunk, file_index=file)
            data_path.parent.mkdir(parents=True, exist_ok=True)
            data_writer = pq.ParquetWriter(str(data_path), schema)
            video = _VideoFile(out / VIDEO_PATH.format(video_key=IMAGE_KEY, chunk_index=chunk, file_index=file),
                               fps, H, W, crf)
        instruction = str(ep.meta.get("instruction", ""))
        task = tasks.setdefault(instruction, len(tasks))
        state = np.concatenate([a["joint_positions"], a["gripper_positions"][:, None]], axis=1).astype(np.float32)
        frame_index = np.arange(T)
        columns = {"observation.state": state, "observation.tcp_pose": a["tcp_poses"].astype(np.float32),
                   "action": a["actions"].astype(np.float32), "timestamp": (frame_index / fps).astype(np.float32),
                   "frame_index": frame_index, "episode_index": np.full(T, episode_index),
                   "index": total + frame_index, "task_index": np.full(T, task)}
        table = {k: pa.array(list(v), type=schema.field(k).type) for k, v in columns.items()}
        table[MASK_KEY] = pa.array([_encode_png(m.astype(np.uint8) * 255) for m in a["target_masks"]], type=png)
        data_writer.write_table(pa.table(table, schema=schema))  # one row group per episode
        start_s = video.frames / fps
        video.add(a["images"])
        for k, v in columns.items():
            stats[k].add_vectors(v)
        stats[IMAGE_KEY].add_images(a["images"])
        stats[MASK_KEY].add_images(a["target_masks"].astype(np.uint8)[..., None] * 255)
        rows.append({"episode_index": episode_index, "tasks": [instruction], "length": T,
                     "data/chunk_index": chunk, "data/file_index": file,
                     "dataset_from_index": total, "dataset_to_index": total + T,
                     f"videos/{IMAGE_KEY}/chunk_index": chunk, f"videos/{IMAGE_KEY}/file_index": file,
                     f"videos/{IMAGE_KEY}/from_timestamp": start_s,
                     f"videos/{IMAGE_KEY}/to_timestamp": video.frames / fps,
                     "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        total += T
        episode_index += 1
    if data_writer is None:
        raise ValueError("no episodes to write")
    data_writer.close()
    video.close()
    episodes_path = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), str(episodes_path))
    _write_tasks(out / "meta" / "tasks.parquet", tasks)
    (out / "meta" / "stats.json").write_text(json.dumps({k: s.result() for k, s in stats.items()}, indent=1))
    H, W = size
    scalar = lambda dtype: {"dtype": dtype, "shape": [1], "names": None}  # noqa: E731
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": "wx250s_sim", "total_episodes": episode_index,
        "total_frames": total, "total_tasks": len(tasks), "chunks_size": files_per_chunk, "fps": fps,
        "splits": {"train": f"0:{episode_index}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
        "features": {
            IMAGE_KEY: {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"],
                        "info": {"video.height": H, "video.width": W, "video.codec": "h264",
                                 "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                                 "video.channels": 3, "has_audio": False}},
            "observation.state": {"dtype": "float32", "shape": [7], "names": STATE_NAMES},
            "observation.tcp_pose": {"dtype": "float32", "shape": [7], "names": ["x", "y", "z", "qw", "qx", "qy", "qz"]},
            "action": {"dtype": "float32", "shape": [7], "names": ACTION_NAMES},
            MASK_KEY: {"dtype": "image", "shape": [H, W, 1], "names": ["height", "width", "channels"]},
            "timestamp": scalar("float32"), "frame_index": scalar("int64"), "episode_index": scalar("int64"),
            "index": scalar("int64"), "task_index": scalar("int64"),
        },
    }
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    return info


def _write_tasks(path: Path, tasks: dict[str, int]) -> None:
    """meta/tasks.parquet as pandas writes a frame indexed by the task strings (how LeRobot reads it back)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(tasks)
    table = pa.table({"task_index": pa.array([tasks[n] for n in names], pa.int64()),
                      "__index_level_0__": pa.array(names, pa.string())})
    pandas_meta = {"index_columns": ["__index_level_0__"],
                   "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                                       "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}],
                   "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), str(path))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Convert a simulator dataset to LeRobot v3 (parquet + mp4).")
    parser.add_argument("sim_dir", help="a simulator dataset (training/episodes/DATASET.md)")
    parser.add_argument("out_dir", help="the LeRobot v3 dataset to write")
    parser.add_argument("--episodes-per-file", type=int, default=100)
    parser.add_argument("--crf", type=int, default=10, help="H.264 quality: 0 lossless, higher = smaller files")
    parser.add_argument("--keep-failures", action="store_true", help="also convert episodes recorded as failures")
    opts = parser.parse_args(argv)
    info = write_sim_as_lerobot(opts.sim_dir, opts.out_dir, opts.episodes_per_file, crf=opts.crf,
                                skip_failures=not opts.keep_failures)
    print(f"{opts.out_dir}: {info['total_episodes']} episodes, {info['total_frames']} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
