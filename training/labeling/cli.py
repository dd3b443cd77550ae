"""`pixelvla-label`: label a robot dataset into the Pixel-160K-format (FORMAT.md), sharded and resumable.

    pixelvla-label /data/sim_episodes --out /data/pixel160k --sam2 /models/sam2.1-hiera-tiny \\
        --gdino /models/grounding-dino-tiny --device cuda
    torchrun --nproc-per-node 8 -m pixelvla_training.labeling.cli /data/bags --out /data/px --device cuda
    pixelvla-label --validate /data/pixel160k

Work split: source episodes are cut into chunks of `--episodes-per-shard` (chunk k -> shard k); worker i of n
(`--shard-index/--shard-count`, default from torchrun's RANK / WORLD_SIZE) takes the chunks k with k % n == i.
The output is the same whatever n is. Resumable and idempotent: a complete shard is never redone; inside an
unfinished chunk every finished episode is kept in `<out>/.work/` (atomic per-episode files) and skipped on
restart; rerunning a finished job only rebuilds the manifest. Settings are stored in the manifest and a rerun
with other settings into the same directory is refused.

Without --sam2 / --gdino the models are tiny RANDOM-WEIGHT ones (a loud warning; masks are meaningless; the
detector box stands in for SAM 2's keyframe mask so the rest of the pipeline runs).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from pixelvla_training.labeling import format as fmt
from pixelvla_training.labeling.pipeline import Labeler, LabelSettings
from pixelvla_training.labeling.sources import EpisodeError, open_source

logger = logging.getLogger("pixelvla-label")
WORK = ".work"


@contextlib.contextmanager
def locked(root: Path):
    """An exclusive lock on <root>/.lock (workers sharing an output directory take turns at the manifest)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_models(args):
    """(segmenter, detector, nouns, trained) from the arguments; random tiny models when dirs are empty."""
    from pixelvla_model.segmentation import Sam2Segmenter
    from pixelvla_training.labeling.detector import GroundingDino
    from pixelvla_training.labeling.nouns import make_noun_extractor

    untrained = []
    if args.sam2:
        seg = Sam2Segmenter.from_pretrained(args.sam2, device=args.device)
    else:
        seg = Sam2Segmenter.from_config(tiny=True, seed=0, device=args.device)
        untrained.append("SAM 2")
    if args.gdino:
        det = GroundingDino.from_pretrained(args.gdino, device=args.device)
    else:
        det = GroundingDino.from_config(tiny=True, seed=0, device=args.device)
        untrained.append("Grounding DINO")
    if untrained:
        bar = "!" * 100
        print(f"{bar}\n!!! pixelvla-label: {' and '.join(untrained)} are UNTRAINED tiny random-weight models: the "
              f"labels are MEANINGLESS.\n!!! Pass --sam2 DIR and --gdino DIR (local checkpoint directories) for real "
              f"labels.\n{bar}", file=sys.stderr, flush=True)
    return seg, det, make_noun_extractor(args.nouns, args.device), not untrained


def settings_of(args, source, seg_name: str, det_name: str) -> dict:
    return {
        "source": str(source.root), "source_format": source.format, "episodes_per_shard": args.episodes_per_shard,
        "limit": args.limit, "sam2": seg_name, "grounding_dino": det_name, "nouns": args.nouns or "spacy",
        "labeler": label_settings(args).to_dict(),
    }


def label_settings(args) -> LabelSettings:
    return LabelSettings(box_threshold=args.box_threshold, frame_stride=args.frame_stride,
                         empty_mask_fallback="skip" if (args.sam2 and args.gdino) else "box")


def _work_path(root: Path, chunk: int, position: int) -> Path:
    return root / WORK / f"shard-{chunk:06d}" / f"{position:06d}.json.gz"


def _label_one(labeler, source, key: str) -> dict:
    """{"episode_id", "source", "records"} or {"episode_id", "source", "reason"}; never raises for bad input."""
    episode_id, ref = source.episode_id(key), source.source_ref(key)
    try:
        episode = source.load(key)
        records = labeler.label(episode)
        return {"episode_id": episode_id, "source": ref, "records": records}
    except EpisodeError as exc:
        return {"episode_id": episode_id, "source": ref, "reason": str(exc)}
    except Exception as exc:  # a bug or a model failure on one episode must not stop the run
        logger.exception("episode %s failed", episode_id)
        return {"episode_id": episode_id, "source": ref, "reason": f"error: {type(exc).__name__}: {exc}"}


def run(args) -> dict:
    """Label this worker's shards; returns the summary dict."""
    t_start = time.perf_counter()
    root = Path(args.out).resolve()
    source = open_source(args.input, args.source)
    keys = source.keys()[: args.limit] if args.limit else source.keys()
    per = args.episodes_per_shard
    n_shards = (len(keys) + per - 1) // per
    mine = [c for c in range(n_shards) if c % args.shard_count == args.shard_index]
    todo = [c for c in mine if fmt.read_sidecar(root, c) is None]
    models = None
    seg_name = args.sam2 and Path(args.sam2).resolve().name or "untrained-sam2-tiny"
    det_name = args.gdino and Path(args.gdino).resolve().name or "untrained-grounding-dino-tiny"
    settings = settings_of(args, source, seg_name, det_name)
    with locked(root):
        if (root / fmt.MANIFEST).is_file():
            old = fmt.read_manifest(root).get("settings", {})
            if old and old != settings:
                changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                raise SystemExit(f"{root} was labelled with other settings ({', '.join(changed)} differ): "
                                 "use a new --out directory")
        fmt.build_manifest(root, settings, n_shards)
    counts = {"labelled": 0, "skipped": 0, "resumed": 0, "records": 0}
    reasons: dict[str, int] = {}
    n_todo = sum(min(per, len(keys) - c * per) for c in todo)
    if todo:  # built before the clock starts: episodes_per_minute is the labelling rate
        seg, det, nouns, _ = build_models(args)
        models = Labeler(seg, det, nouns, label_settings(args))
    bar = _progress(n_todo, args.progress, f"label {args.shard_index}/{args.shard_count}")
    t_label = time.perf_counter()
    for chunk in todo:
        results = []
        for position in range(chunk * per, min(len(keys), (chunk + 1) * per)):
            path = _work_path(root, chunk, position)
            if path.is_file():
                result = json.loads(gzip.decompress(path.read_bytes()))
                counts["resumed"] += 1
            else:
                result = _label_one(models, source, keys[position])
                fmt.atomic_write_bytes(path, gzip.compress(json.dumps(result).encode(), mtime=0))
            results.append(result)
            if "reason" in result:
                counts["skipped"] += 1
                code = result["reason"].split(":")[0]
                reasons[code] = reasons.get(code, 0) + 1
            else:
                counts["labelled"] += 1
                counts["records"] += len(result["records"])
            bar.update(1)
            bar.set_postfix(skipped=counts["skipped"], records=counts["records"])
        records = [r for res in results if "records" in res for r in res["records"]]
        episodes = [{"episode_id": r["episode_id"], "frames": len(r["records"]), "source": r["source"]}
                    for r in results if "records" in r]
        skipped = [{"episode_id": r["episode_id"], "reason": r["reason"], "source": r["source"]}
                   for r in results if "reason" in r]
        fmt.ShardWriter(root).write(chunk, records, episodes, skipped)
        shutil.rmtree(root / WORK / f"shard-{chunk:06d}", ignore_errors=True)
    bar.close()
    elapsed_label = time.perf_counter() - t_label
    with locked(root):
        manifest = fmt.build_manifest(root, settings, n_shards)
        work = root / WORK
        if work.is_dir() and not any(work.iterdir()):
            work.rmdir()
    sheet = None
    if args.sheet > 0:
        from pixelvla_training.labeling.sheet import write_contact_sheet

        sheet = write_contact_sheet(root, source, mine, args.sheet, f"{args.shard_index:05d}-of-{args.shard_count:05d}")
    newly = counts["labelled"] + counts["skipped"] - counts["resumed"]
    summary = {
        "out": str(root), "worker": f"{args.shard_index}/{args.shard_count}", "episodes_in_source": len(keys),
        "shards_total": n_shards, "shards_mine": len(mine), "shards_already_done": len(mine) - len(todo),
        "episodes_processed": counts["labelled"] + counts["skipped"], "episodes_resumed": counts["resumed"],
        "labelled": counts["labelled"], "skipped": counts["skipped"], "skipped_reasons": dict(sorted(reasons.items())),
        "records": counts["records"], "seconds": round(time.perf_counter() - t_start, 2),
        "episodes_per_minute": round(60.0 * newly / elapsed_label, 2) if newly and elapsed_label > 0 else None,
        "manifest": {k: manifest[k] for k in ("num_shards", "expected_shards", "complete", "num_records",
                                               "num_episodes", "num_skipped")},
        "contact_sheet": str(sheet) if sheet else None,
    }
    return summary


def _progress(total: int, enabled: bool, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="ep", disable=not enabled, file=sys.stderr)
    except ImportError:  # tqdm is in the train extra; stay usable without it
        class _Quiet:
            def update(self, n): ...
            def set_postfix(self, **kw): ...
            def close(self): ...
        return _Quiet()


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="pixelvla-label", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", help="simulator episode directory or directory of ROS 2 bags")
    p.add_argument("--out", help="output directory (Pixel-160K-format)")
    p.add_argument("--source", choices=("auto", "sim", "bags"), default="auto")
    p.add_argument("--sam2", default="", help="local SAM 2 checkpoint directory (empty: tiny random weights)")
    p.add_argument("--gdino", default="", help="local Grounding DINO directory (empty: tiny random weights)")
    p.add_argument("--nouns", default="spacy", help='"spacy" (default), "spacy:<model>", or a local causal-LM directory')
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--shard-index", type=int, default=int(os.environ.get("RANK", 0)))
    p.add_argument("--shard-count", type=int, default=int(os.environ.get("WORLD_SIZE", 1)))
    p.add_argument("--episodes-per-shard", type=int, default=16)
    p.add_argument("--limit", type=int, default=0, help="label only the first N source episodes (0: all)")
    p.add_argument("--box-threshold", type=float, default=None,
                   help="detector score threshold (default 0.3; 0.0 with untrained models)")
    p.add_argument("--frame-stride", type=int, default=1, help="label every k-th frame (the closure frame always)")
    p.add_argument("--sheet", type=int, default=16, help="records on the contact sheet (0: none)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--validate", metavar="DIR", help="only validate a Pixel-160K-format directory")
    args = p.parse_args(argv)
    if args.validate:
        return args
    if not args.input or not args.out:
        p.error("INPUT and --out are required (or --validate DIR)")
    if not 0 <= args.shard_index < args.shard_count:
        p.error(f"--shard-index {args.shard_index} must be in [0, --shard-count {args.shard_count})")
    if args.episodes_per_shard < 1:
        p.error("--episodes-per-shard must be >= 1")
    if args.box_threshold is None:
        args.box_threshold = 0.3 if args.gdino else 0.0
    if args.device.startswith("cuda") and "LOCAL_RANK" in os.environ and args.device == "cuda":
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.validate:
        counts = fmt.validate_dataset(args.validate)
        print(json.dumps({"valid": True, **counts}))
        return 0
    summary = run(args)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
