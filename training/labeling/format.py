"""Pixel-160K-format: per-frame pixel labels (mask + visual prompts) of robot episodes (spec: FORMAT.md).

One labelled frame is one JSON object (a *record*); records live in gzip-compressed JSON Lines shards,
each with a small JSON sidecar; a top-level ``manifest.json`` sums them up:

    <root>/
      manifest.json                      counts, shard list, labeler settings (rebuilt from the sidecars)
      shard-000000.jsonl.gz              records of the episodes of chunk 0 (episode order, frame order)
      shard-000000.json                  sidecar: episodes labelled, episodes skipped (+ reason), counts, sha256
      ...

Read with :func:`iter_records`, write with :class:`ShardWriter` (atomic: a shard exists completely or not at
all), check with :func:`validate_dataset`. Masks are COCO-style compressed RLE (:func:`encode_rle` /
:func:`decode_rle`, column-major, same string encoding as the COCO API, implemented here).

Pixel coordinates follow ``pixelvla_model.prompts``: x = column, y = row, origin at the top-left corner of
the top-left pixel, pixel (col, row) spans [col, col + 1) x [row, row + 1); normalise with x / W, y / H.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

FORMAT = "pixelvla-pixel160k"
VERSION = 1
MANIFEST = "manifest.json"
SHARD_GLOB = "shard-*.jsonl.gz"

RECORD_KEYS = ("episode_id", "frame_index", "num_frames", "instruction", "noun", "image_size", "mask",
               "mask_area", "prompts", "scores", "keyframe", "source")
SCORE_KEYS = ("detector", "mask")
SOURCE_KEYS = ("format", "path", "episode", "frame")


def shard_name(index: int) -> str:
    """File name of shard `index` (>= 0)."""
    return f"shard-{int(index):06d}.jsonl.gz"


def sidecar_name(index: int) -> str:
    """File name of the sidecar of shard `index`."""
    return f"shard-{int(index):06d}.json"


# ------------------------------------------------------------------------------------------------ RLE
def mask_to_counts(mask: np.ndarray) -> list[int]:
    """(H, W) bool -> run lengths over the column-major (Fortran-order) pixels, starting with a 0-run."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges).tolist()
    return ([0] + runs) if flat[0] else runs


def counts_to_mask(counts: list[int], size: tuple[int, int]) -> np.ndarray:
    """Run lengths (column-major, first run = 0s) -> (H, W) bool. ValueError if they do not cover H * W."""
    h, w = int(size[0]), int(size[1])
    counts = np.asarray(counts, dtype=np.int64)
    if np.any(counts < 0) or int(counts.sum()) != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h}x{w} = {h * w} (or negative runs)")
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy()


def _counts_to_string(counts: list[int]) -> str:
    """COCO's compact string: each count (delta-coded against the count two back, from the third on) as
    little-endian 5-bit groups, bit 0x20 = more groups follow, sign from bit 0x10 of the last, + 48 (ASCII)."""
    out = []
    for i, value in enumerate(counts):
        x = int(value) - (int(counts[i - 2]) if i > 2 else 0)
        while True:
            group = x & 0x1F
            x >>= 5  # arithmetic shift: negative numbers stay negative
            done = (x == -1) if (group & 0x10) else (x == 0)
            out.append(chr(group + 48 + (0 if done else 0x20)))
            if done:
                break
    return "".join(out)


def _string_to_counts(text: str) -> list[int]:
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        x, shift = 0, 0
        while True:
            if pos >= len(text):
                raise ValueError("truncated RLE string")
            c = ord(text[pos]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid RLE character {text[pos]!r}")
            pos += 1
            x |= (c & 0x1F) << shift
            shift += 5
            if not c & 0x20:
                if c & 0x10:
                    x -= 1 << shift  # sign-extend
                break
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> {"size": [H, W], "counts": str} (COCO compressed RLE, decodable by pycocotools)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": _counts_to_string(mask_to_counts(mask))}


def decode_rle(rle: dict) -> np.ndarray:
    """{"size": [H, W], "counts": str | list[int]} -> (H, W) bool."""
    size = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = _string_to_counts(counts)
    return counts_to_mask(counts, (size[0], size[1]))


def rle_area(rle: dict) -> int:
    """Foreground pixel count of an RLE without decoding it."""
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = _string_to_counts(counts)
    return int(sum(counts[1::2]))


# ------------------------------------------------------------------------------------------------ records
def make_record(*, episode_id: str, frame_index: int, num_frames: int, instruction: str, noun: str,
                mask: np.ndarray, prompts: dict, scores: dict, keyframe: bool, source: dict,
                extra: dict | None = None) -> dict:
    """One record (see FORMAT.md). `mask` (H, W) bool; `prompts` {"points", "lines", "boxes"} in pixels;
    `scores` {"detector", "mask", ...} in [0, 1]; `source` {"format", "path", "episode", "frame"}."""
    mask = np.asarray(mask, dtype=bool)
    record = {
        "episode_id": str(episode_id), "frame_index": int(frame_index), "num_frames": int(num_frames),
        "instruction": str(instruction), "noun": str(noun),
        "image_size": [int(mask.shape[0]), int(mask.shape[1])],
        "mask": encode_rle(mask), "mask_area": int(mask.sum()),
        "prompts": {k: list(prompts.get(k, [])) for k in ("points", "lines", "boxes")},
        "scores": {k: round(float(v), 6) for k, v in scores.items()},
        "keyframe": bool(keyframe), "source": dict(source),
    }
    if extra:
        record.update(extra)
    return record


def validate_record(record: dict) -> list[str]:
    """Every way `record` breaks the format, as short strings (empty list: valid)."""
    problems = [f"missing key {k!r}" for k in RECORD_KEYS if k not in record]
    if problems:
        return problems
    where = f"{record.get('episode_id')}#{record.get('frame_index')}"
    h, w = record["image_size"]
    if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
        problems.append(f"{where}: image_size {record['image_size']} must be two positive ints")
        return problems
    if not 0 <= record["frame_index"] < record["num_frames"]:
        problems.append(f"{where}: frame_index outside [0, num_frames={record['num_frames']})")
    if not record["instruction"].strip() or not record["noun"].strip():
        problems.append(f"{where}: empty instruction or noun")
    if list(record["mask"].get("size", [])) != [h, w]:
        problems.append(f"{where}: mask size {record['mask'].get('size')} != image_size {[h, w]}")
    else:
        try:
            mask = decode_rle(record["mask"])
            if int(mask.sum()) != record["mask_area"]:
                problems.append(f"{where}: mask_area {record['mask_area']} != {int(mask.sum())} decoded pixels")
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{where}: undecodable mask ({exc})")
    for key in SCORE_KEYS:
        value = record["scores"].get(key)
        if not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
            problems.append(f"{where}: scores.{key} = {value!r}, expected a number in [0, 1]")
    for key in SOURCE_KEYS:
        if key not in record["source"]:
            problems.append(f"{where}: source lacks {key!r}")

    def inside(x, y) -> bool:
        return all(math.isfinite(float(v)) for v in (x, y)) and 0.0 <= x <= w and 0.0 <= y <= h

    prompts = record["prompts"]
    for key in ("points", "lines", "boxes"):
        if not isinstance(prompts.get(key), list):
            problems.append(f"{where}: prompts.{key} must be a list")
            return problems
    for p in prompts["points"]:
        if not inside(p.get("x"), p.get("y")) or p.get("label") not in (0, 1):
            problems.append(f"{where}: bad point prompt {p}")
    for line in prompts["lines"]:
        pts = line.get("points", [])
        if len(pts) < 2 or not all(inside(x, y) for x, y in pts) or line.get("label") not in (0, 1):
            problems.append(f"{where}: bad line prompt {line}")
    for b in prompts["boxes"]:
        ok = inside(b.get("x0"), b.get("y0")) and inside(b.get("x1"), b.get("y1"))
        if not ok or not (b["x1"] > b["x0"] and b["y1"] > b["y0"]) or b.get("label", 1) != 1:
            problems.append(f"{where}: bad box prompt {b}")
    return problems


# ------------------------------------------------------------------------------------------------ writing
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def dumps_records(records: Iterable[dict]) -> bytes:
    """Records -> gzip JSON Lines bytes, byte-identical for identical records (gzip mtime 0, no name)."""
    raw = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records).encode()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(raw)
    return buf.getvalue()


class ShardWriter:
    """Writes complete shards into a dataset root: ``write(index, records, episodes, skipped)``.

    The shard file goes first, then its sidecar (which carries the shard's sha256): a shard counts as
    written only when its sidecar exists and matches, so a crash between the two leaves nothing half-done.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def write(self, index: int, records: list[dict], episodes: list[dict], skipped: list[dict],
              info: dict | None = None) -> dict:
        """Write shard `index`. `episodes`: [{"episode_id", "frames", "source"}] labelled episodes;
        `skipped`: [{"episode_id", "reason", "source"}]. Returns the sidecar dict."""
        data = dumps_records(records)
        atomic_write_bytes(self.root / shard_name(index), data)
        sidecar = {
            "format": FORMAT, "version": VERSION, "shard": shard_name(index), "index": int(index),
            "num_records": len(records), "num_episodes": len(episodes), "num_skipped": len(skipped),
            "sha256": hashlib.sha256(data).hexdigest(), "episodes": episodes, "skipped": skipped,
            **({"info": info} if info else {}),
        }
        atomic_write_bytes(self.root / sidecar_name(index), json.dumps(sidecar, indent=1, sort_keys=True).encode())
        return sidecar


def read_sidecar(root: str | os.PathLike, index: int, check_hash: bool = True) -> dict | None:
    """The sidecar of shard `index` if the shard is completely written (and its hash matches), else None."""
    root = Path(root)
    side, shard = root / sidecar_name(index), root / shard_name(index)
    if not side.is_file() or not shard.is_file():
        return None
    try:
        sidecar = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if check_hash and hashlib.sha256(shard.read_bytes()).hexdigest() != sidecar.get("sha256"):
        return None
    return sidecar


def shard_indices(root: str | os.PathLike) -> list[int]:
    """Indices of every shard sidecar in `root`, sorted."""
    out = []
    for path in Path(root).glob("shard-*.json"):
        try:
            out.append(int(path.stem.split("-")[1]))
        except (IndexError, ValueError):
            continue
    return sorted(out)


def build_manifest(root: str | os.PathLike, settings: dict | None = None, expected_shards: int | None = None) -> dict:
    """Sum up every complete shard of `root` into manifest.json (written atomically); returns it."""
    root = Path(root)
    previous = read_manifest(root) if (root / MANIFEST).is_file() else {}
    shards = []
    totals = {"records": 0, "episodes": 0, "skipped": 0}
    reasons: dict[str, int] = {}
    for index in shard_indices(root):
        side = read_sidecar(root, index)
        if side is None:
            continue
        shards.append({"file": side["shard"], "index": index, "records": side["num_records"],
                       "episodes": side["num_episodes"], "skipped": side["num_skipped"], "sha256": side["sha256"]})
        totals["records"] += side["num_records"]
        totals["episodes"] += side["num_episodes"]
        totals["skipped"] += side["num_skipped"]
        for s in side["skipped"]:
            key = s["reason"].split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    manifest = {
        "format": FORMAT, "version": VERSION,
        "settings": settings if settings is not None else previous.get("settings", {}),
        "expected_shards": expected_shards if expected_shards is not None else previous.get("expected_shards"),
        "num_shards": len(shards), "num_records": totals["records"], "num_episodes": totals["episodes"],
        "num_skipped": totals["skipped"], "skipped_reasons": dict(sorted(reasons.items())), "shards": shards,
    }
    manifest["complete"] = manifest["expected_shards"] is not None and len(shards) == manifest["expected_shards"]
    atomic_write_bytes(root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


def read_manifest(root: str | os.PathLike) -> dict:
    """Parsed manifest.json (ValueError if it is not this format)."""
    manifest = json.loads((Path(root) / MANIFEST).read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"{root}: not a {FORMAT} v{VERSION} dataset")
    return manifest


# ------------------------------------------------------------------------------------------------ reading
def iter_shard(path: str | os.PathLike) -> Iterator[dict]:
    """Records of one shard file, in file order."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def iter_records(root: str | os.PathLike, decode_masks: bool = False) -> Iterator[dict]:
    """Every record of a dataset, shard by shard in index order (only complete shards). With
    `decode_masks`, each record also gets "mask_array": (H, W) bool."""
    root = Path(root)
    for index in shard_indices(root):
        if read_sidecar(root, index, check_hash=False) is None:
            continue
        for record in iter_shard(root / shard_name(index)):
            if decode_masks:
                record["mask_array"] = decode_rle(record["mask"])
            yield record


def iter_skipped(root: str | os.PathLike) -> Iterator[dict]:
    """Every skipped episode ({"episode_id", "reason", "source"}) of a dataset."""
    root = Path(root)
    for index in shard_indices(root):
        side = read_sidecar(root, index, check_hash=False)
        if side is not None:
            yield from side["skipped"]


def validate_dataset(root: str | os.PathLike) -> dict:
    """Check manifest, sidecars, shard hashes and every record; ValueError listing the first problems.
    Returns {"records", "episodes", "skipped", "shards"} counts."""
    root = Path(root)
    problems: list[str] = []
    manifest = read_manifest(root)
    seen_frames: set[tuple[str, int]] = set()
    seen_episodes: set[str] = set()
    counts = {"records": 0, "episodes": 0, "skipped": 0, "shards": 0}
    listed = {s["index"] for s in manifest["shards"]}
    for index in shard_indices(root):
        side = read_sidecar(root, index)
        if side is None:
            problems.append(f"{sidecar_name(index)}: shard missing or its sha256 does not match")
            continue
        if index not in listed:
            problems.append(f"{side['shard']} is not in manifest.json (rebuild it with build_manifest)")
        counts["shards"] += 1
        frames_per_episode: dict[str, int] = {}
        n = 0
        for record in iter_shard(root / side["shard"]):
            n += 1
            problems += validate_record(record)
            key = (record.get("episode_id"), record.get("frame_index"))
            if key in seen_frames:
                problems.append(f"duplicate record {key}")
            seen_frames.add(key)
            frames_per_episode[key[0]] = frames_per_episode.get(key[0], 0) + 1
        if n != side["num_records"]:
            problems.append(f"{side['shard']}: {n} records, sidecar says {side['num_records']}")
        for ep in side["episodes"]:
            if frames_per_episode.get(ep["episode_id"], 0) != ep["frames"]:
                problems.append(f"{ep['episode_id']}: sidecar says {ep['frames']} frames, shard has "
                                f"{frames_per_episode.get(ep['episode_id'], 0)}")
        for ep in side["episodes"] + side["skipped"]:
            if ep["episode_id"] in seen_episodes:
                problems.append(f"episode {ep['episode_id']} appears twice")
            seen_episodes.add(ep["episode_id"])
            if "reason" in ep and not ep["reason"]:
                problems.append(f"skipped episode {ep['episode_id']} has no reason")
        counts["records"] += n
        counts["episodes"] += side["num_episodes"]
        counts["skipped"] += side["num_skipped"]
    for key in ("records", "episodes", "skipped"):
        if manifest[f"num_{key}"] != counts[key]:
            problems.append(f"manifest num_{key} = {manifest[f'num_{key}']}, shards hold {counts[key]}")
    if problems:
        more = f" (+{len(problems) - 20} more)" if len(problems) > 20 else ""
        raise ValueError(f"invalid {FORMAT} dataset {root}: " + "; ".join(problems[:20]) + more)
    return counts


__all__ = [
    "FORMAT", "VERSION", "MANIFEST", "encode_rle", "decode_rle", "rle_area", "mask_to_counts", "counts_to_mask",
    "make_record", "validate_record", "ShardWriter", "atomic_write_bytes", "dumps_records", "read_sidecar",
    "shard_indices", "shard_name", "sidecar_name", "build_manifest", "read_manifest", "iter_shard", "iter_records",
    "iter_skipped", "validate_dataset",
]
