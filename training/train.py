"""`pixelvla-train`: stage-1 CAT / stage-2 PUE training of PixelVLA from a YAML config.

    pixelvla-train config/training/cat.yaml                               # one process
    pixelvla-train config/training/pue.yaml --set steps=2000 --set model.init_from=build/train/cat/final
    torchrun --nproc-per-node 8 -m pixelvla_training.train config/training/pue.yaml       # one machine, 8 GPUs
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m pixelvla_training.train config/training/pue.yaml                             # two machines

A run resumes from the newest checkpoint in its output_dir (exactly: step, optimiser, scheduler, RNG and
data position); --fresh starts over. The result is output_dir/final (PixelVLAPolicy.from_pretrained).
See pixelvla_training.trainer.config for every key.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixelvla-train", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="training YAML (config/training/*.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set steps=100 --set data.image_size=112 (repeatable)")
    parser.add_argument("--fresh", action="store_true", help="delete output_dir's checkpoints and start over")
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: stop early
    opts = parser.parse_args(argv)
    import os

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s")
    from pixelvla_training.trainer import TrainConfig, Trainer

    try:
        cfg = TrainConfig.from_yaml(opts.config, opts.set)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    if opts.fresh and rank == 0:
        shutil.rmtree(Path(cfg.output_dir) / "checkpoints", ignore_errors=True)
    trainer = Trainer(cfg, resume=not opts.fresh)
    try:
        final = trainer.train(stop_after=opts.stop_after)
    finally:
        trainer.dist.close()
    if final is not None and rank == 0:
        print(f"final checkpoint: {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
