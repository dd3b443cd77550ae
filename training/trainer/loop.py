"""The CAT / PUE training loop: one process per device under torchrun (DDP, or FSDP for the 7B model).

FSDP (sharding.py): the backbone is built on the meta device, sharded per transformer block and at the root,
and only then filled, shard by shard, from model.init_from (or initialised): no process holds the whole model.

Data order. Each rank reads its micro-batches from a bounded-memory stream over its own shards
(pixelvla_training.datasets.DataStream: lanes, shuffle buffer, mixture weights): micro-batch m of a step on
rank r comes from lane m * world + r (with num_workers <= 1), so runs with the same world * grad_accum see the
same global batches. The stream's position is saved per rank with each checkpoint (data_rank<r>.json) and
restored on resume, so a resumed run continues exactly where the checkpoint was written. Prompts are drawn
from (seed, lane, sample number), never from global RNG.

Loss: masked L1 over the valid steps of each chunk, averaged per sample, then over the batch (divided by
grad_accum per micro-batch; DDP averages over ranks), i.e. the mean over the global batch.

Run directory (``output_dir``):
    config.yaml, trainable.txt, norm_stats.json     what was run
    metrics.jsonl                                     {"step", "loss", "lr", "grad_norm", "samples_per_s"} per log
    tensorboard/                                      TensorBoard event files
    loss.png                                          the loss curve (updated at every checkpoint)
    memory_rank<r>.json                               parameter bytes this process holds / the model's, RSS
                                                      growth while building and wrapping the model, peak RSS
    dataset_statistics.json                           norm stats and steps per source (one pass over the data)
    checkpoints/step_NNNNNNN/                         trainable.safetensors + trainer_state.pt + rng_rank<r>.pt
                                                      + data_rank<r>.json (the stream position)
    final/                                            from_pretrained directory, LoRA merged (the result)
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from pixelvla_model import (PixelVLA, PixelVLAConfig, PixelVLAPolicy, PixelVLAProcessor, add_words,
                            build_byte_tokenizer, from_openvla, load_tokenizer)
from pixelvla_model.files import CONFIG_FILE, load_norm_stats, validate_norm_stats
from pixelvla_model.openvla_import import is_openvla_checkpoint, openvla_config, read_openvla_config

from . import sharding
from .config import TrainConfig

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ distributed
class Dist:
    """World information from torchrun's environment (single process without it)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ schedule
def lr_lambda(cfg: TrainConfig):
    warmup = int(cfg.optim.get("warmup_steps", 0))
    floor = float(cfg.optim.get("min_lr_ratio", 0.1))
    cosine = cfg.optim.get("schedule", "cosine") == "cosine"

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, cfg.steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def grounding_cross_entropy(logits: torch.Tensor, target_xy: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, grid*grid) text-grounding logits (row-major patches) and mask centroids (B, 2), (x, y) as fractions of
    the image, NaN: unknown -> mean cross-entropy of the patch that holds the centroid, over the known rows."""
    known = ~target_xy.isnan().any(-1)
    if not known.any():
        return logits.sum() * 0.0  # keeps the map in the graph (DDP expects a gradient for every parameter)
    cell = (target_xy[known].float() * grid).long().clamp(0, grid - 1)  # (K, 2): column, row
    return F.cross_entropy(logits[known].float(), cell[:, 1] * grid + cell[:, 0])


def masked_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """pred, target (B, N_c, 7); valid (B, N_c) bool -> mean over samples of each sample's mean |error|
    over its valid steps."""
    v = valid.to(pred.dtype).unsqueeze(-1)
    per_sample = ((pred - target.to(pred.dtype)).abs() * v).sum((1, 2)) / (v.sum((1, 2)) * pred.shape[-1]).clamp_min(1)
    return per_sample.mean()


# ------------------------------------------------------------------------------------------------ trainer
class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = True):
        self.cfg = cfg
        self.dist = Dist()
        self.out = Path(cfg.output_dir)
        self.resume = resume
        micro_total = cfg.grad_accum * self.dist.world
        if cfg.batch_size % micro_total:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by grad_accum x world size = {micro_total}")
        self.micro = cfg.batch_size // micro_total
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.dist.barrier()

    # .............................................................................. building
    def build_model(self):
        """The model to train, its tokenizer and the names of its trainable parameters. Also sets
        ``self.init_norm_stats`` (the statistics of ``model.init_from``, {} without one) and
        ``self.init_reads_state`` (whether that model read a robot state, so its "proprio" stats were used)."""
        m = self.cfg.model
        torch.manual_seed(int(m.get("seed", 0)))
        overrides = dict(m.get("overrides") or {})
        if self.cfg.data.get("chunk_size"):
            overrides["chunk_size"] = int(self.cfg.data["chunk_size"])
        self.init_norm_stats, self.init_reads_state = {}, False
        init = m.get("init_from")
        if init and not Path(init).is_dir():
            raise FileNotFoundError(f"model.init_from {init} is not a directory: download the checkpoint there (an "
                                    "OpenVLA one: huggingface-cli download openvla/openvla-7b --local-dir DIR) or "
                                    "pass --set model.init_from=DIR")
        openvla = bool(init) and is_openvla_checkpoint(init)
        if openvla:  # the backbone from OpenVLA; what PixelVLA adds (encoders, decoder, robot-state input) per overrides
            config = openvla_config(init, **overrides)
        elif init:
            config = PixelVLAConfig.from_json_file(Path(init) / CONFIG_FILE)
        else:
            config = PixelVLAConfig.from_preset(m.get("preset", "tiny"), **overrides)
        self.mode = self.parallel_mode(config)
        if self.mode == "fsdp":  # no full copy in any process: wrap() fills the backbone into the shards
            model = sharding.meta_model(config, init)
            self.checkpoint_names = {id(p): n for n, p in model.named_parameters()}
        elif openvla:
            model, _ = from_openvla(init, config=config)
        elif init:
            model = PixelVLA.from_pretrained(init, config=config)
        else:
            model = PixelVLA(config)
        if openvla:
            self.init_norm_stats = validate_norm_stats(read_openvla_config(Path(init))["norm_stats"])
            tokenizer = load_tokenizer(init)
            logger.info("init_from %s: an OpenVLA checkpoint, imported (%s)", init, config.preset)
        elif init:
            self.init_norm_stats, self.init_reads_state = load_norm_stats(init), bool(config.proprio_dim)
            try:
                tokenizer = load_tokenizer(init)
            except FileNotFoundError:
                tokenizer = build_byte_tokenizer()
            if overrides:
                logger.warning("model.overrides / data.chunk_size %s are ignored: the network is the one of "
                               "init_from %s", overrides, init)
        else:
            tokenizer = build_byte_tokenizer()
            if self.cfg.stage == "cat" and not self.cfg.also_train:
                logger.warning("CAT trains only the action decoder, here on a randomly initialised backbone: set "
                               "model.init_from to an OpenVLA checkpoint directory (or train more with also_train)")
        if m.get("tokenizer_words"):
            added = add_words(tokenizer, m["tokenizer_words"], config.vocab_size)
            logger.info("tokenizer: %d of the %d tokenizer_words are new tokens (%d in all)", added,
                        len(m["tokenizer_words"]), len(tokenizer))
        if m.get("place_prompts"):
            model.enable_place_prompts()
        if m.get("visual_where_octaves"):
            model.enable_visual_where(int(m["visual_where_octaves"]))
        if m.get("prompt_offsets"):
            model.enable_prompt_offsets()
        edits = [key for key in ("reinit", "load_modules") if m.get(key)]
        if edits and self.mode == "fsdp":  # each shard is filled from init_from after this, undoing them
            raise ValueError(f"model.{edits[0]} is not supported with fsdp (its shards are filled from init_from "
                             "once sharded): compose the model in one process and save_pretrained, then init_from "
                             "that")
        for name in m.get("reinit", []):
            model.reinitialise(name)
        if m.get("image_size") and int(m["image_size"]) != config.image_size:
            if self.mode == "fsdp":  # the towers are not loaded yet: resize the checkpoint in one process first
                raise ValueError("model.image_size resizes init_from's towers, which an fsdp run loads only once "
                                 "sharded: resize it in one process (PixelVLA.resize_images, save_pretrained)")
            model.resize_images(int(m["image_size"]))
        if m.get("text_grounding") is False:
            model.disable_text_grounding()
        if self.cfg.grounding_weight:
            model.enable_text_grounding()
        if m.get("grounding_colours"):
            model.enable_grounding_colours(int(m["grounding_colours"]))
        for name, directory in m.get("load_modules", {}).items():
            model.load_module(name, directory)
        model.train()
        names = model.freeze_for_stage(self.cfg.stage, lora_r=self.cfg.lora_r)
        grounding = ["text_grounding"] if self.cfg.grounding_weight else []  # trained only with its loss
        extra = tuple(p.rstrip(".") + "." for p in [*self.cfg.also_train, *grounding])
        if extra:
            for n, p in model.named_parameters():
                # prefixes name the model's own modules: under LoRA llm.embed_tokens is llm.base_model.model.embed_tokens
                if n.replace("base_model.model.", "").startswith(extra):
                    p.requires_grad_(True)
            names = [n for n, p in model.named_parameters() if p.requires_grad]
        return model, tokenizer, names

    def build_data(self, config, tokenizer):
        from pixelvla_training.datasets import Collator, DataStatistics, DataStream, PromptSampler, SkipLog, dataset_statistics

        d = self.cfg.data
        if not d.get("sources"):
            raise ValueError("data.sources is empty: name at least one dataset")
        skips = SkipLog("data")
        image_size = d.get("image_size") or config.image_size
        cache = self.out / "dataset_statistics.json"  # rank 0 reads the data once, the others its result
        if self.dist.main:
            statistics = dataset_statistics(d["sources"], cache=cache)
        self.dist.barrier()
        if not self.dist.main:
            statistics = dataset_statistics(d["sources"], cache=cache)
        computed = statistics.norm_stats
        if not computed:
            raise ValueError(f"no usable episodes in {d['sources']}")
        self.n_samples = sum(statistics.steps)
        # the name each dataset's statistics are saved under: data.unnorm_key renames a single dataset
        # (e.g. to bridge_orig, the name a robot config asks for)
        if d.get("unnorm_key") and len(computed) != 1:
            raise ValueError("data.unnorm_key renames the statistics of exactly one dataset")
        saved_name = {k: d.get("unnorm_key") or k for k in computed}
        stats = {k: carry_norm_stats(saved_name[k], v, self.init_norm_stats, self.init_reads_state,
                                     bool(config.proprio_dim)) for k, v in computed.items()}
        sampler = PromptSampler(**d["prompts"]) if d.get("prompts") is not None else None
        self.skips = skips
        norm_stats = {saved_name[k]: v for k, v in stats.items()}
        collate = Collator(PixelVLAProcessor(config, tokenizer, norm_stats))
        stream = DataStream(d["sources"], DataStatistics(stats, statistics.steps), config.chunk_size, self.micro,
                            collate, sampler, seed=self.cfg.seed, image_size=image_size, rank=self.dist.rank,
                            world=self.dist.world, grad_accum=self.cfg.grad_accum,
                            num_workers=self.cfg.num_workers, skips=skips)
        return stream, collate, norm_stats

    def parallel_mode(self, config: PixelVLAConfig) -> str:
        """single (one process), ddp or fsdp (distributed: auto = fsdp for the prismatic-7b preset)."""
        if not self.dist.enabled:
            return "single"
        if self.cfg.distributed == "auto":
            return "fsdp" if config.preset == "prismatic-7b" else "ddp"
        return self.cfg.distributed

    def wrap(self, model):
        """The model as trained: as it is (one process), under DDP, or sharded with fully_shard (sharding.py)."""
        if self.cfg.activation_checkpointing:
            sharding.checkpoint_blocks(model)
        if self.mode == "fsdp":
            # checkpoint keys of the parameters that LoRA has wrapped since the model was built
            names = {n: self.checkpoint_names.get(id(p), n) for n, p in model.named_parameters()}
            shadow = sharding.meta_copy(model)
            sharding.shard(model, self.use_bf16)
            sharding.materialise(model, shadow, names, self.dist.device, self.cfg.model.get("init_from"))
            return model
        model.to(self.dist.device)
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            return DistributedDataParallel(model, device_ids=[self.dist.device] if self.dist.device.type == "cuda" else None)
        return model

    @property
    def use_bf16(self) -> bool:
        """precision bf16 (any device), or auto on a GPU."""
        p = self.cfg.precision
        return p == "bf16" or (p == "auto" and self.dist.device.type == "cuda")

    # .............................................................................. checkpoints
    def checkpoint_dirs(self) -> list[Path]:
        return sorted((self.out / "checkpoints").glob("step_*[0-9]"))

    def save_checkpoint(self, model, optimizer, scheduler, step: int, trainable: list[str]) -> None:
        from safetensors.torch import save_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        msd, osd = get_state_dict(model, optimizer, options=StateDictOptions(  # frozen tensors are not gathered
            full_state_dict=True, cpu_offload=True, ignore_frozen_params=True))
        final = self.out / "checkpoints" / f"step_{step:07d}"
        tmp = self.out / "checkpoints" / f".tmp_step_{step:07d}"
        if self.dist.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            keep = set(trainable)
            save_file({k: v.detach().contiguous().cpu() for k, v in msd.items() if k in keep},
                      str(tmp / "trainable.safetensors"))
            torch.save({"step": step, "optimizer": osd, "scheduler": scheduler.state_dict(),
                        "data": {"batch_size": self.cfg.batch_size, "seed": self.cfg.seed},
                        "world_size": self.dist.world}, tmp / "trainer_state.pt")
        self.dist.barrier()
        torch.save(rng_state(), tmp / f"rng_rank{self.dist.rank}.pt")
        (tmp / f"data_rank{self.dist.rank}.json").write_text(json.dumps(self.stream.state_dict()))
        self.dist.barrier()
        if self.dist.main:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)  # atomic: a checkpoint directory is complete or absent
            for old in self.checkpoint_dirs()[:-self.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.dist.barrier()

    def load_checkpoint(self, path: Path, model, optimizer, scheduler) -> int:
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        trainable = load_file(str(path / "trainable.safetensors"))
        state = torch.load(path / "trainer_state.pt", weights_only=True)
        if state["data"]["batch_size"] != self.cfg.batch_size or state["data"]["seed"] != self.cfg.seed:
            raise ValueError(f"{path}: written with batch_size {state['data']['batch_size']} / seed "
                             f"{state['data']['seed']}; resuming needs the same values")
        set_state_dict(model, optimizer, model_state_dict=trainable, optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True, strict=False))
        scheduler.load_state_dict(state["scheduler"])
        rng_file = path / f"rng_rank{self.dist.rank}.pt"
        if rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=True))
        data_file = path / f"data_rank{self.dist.rank}.json"
        if data_file.is_file():
            self.stream.load_state_dict(json.loads(data_file.read_text()))
        else:
            logger.warning("%s has no data position for rank %d: the data stream starts from its beginning",
                           path, self.dist.rank)
        logger.info("resumed from %s (step %d, data: %d micro-batches taken)", path, state["step"],
                    self.stream.position["micro_batches"])
        return int(state["step"])

    # .............................................................................. run
    def train(self, stop_after: Optional[int] = None) -> Optional[Path]:
        """Train to cfg.steps (or stop after `stop_after` steps of this call, for tests); returns final/."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        rss = sharding.rss_bytes()
        model, tokenizer, trainable = self.build_model()
        model_rss = sharding.rss_bytes() - rss  # what building and wrapping the model cost, the data excluded
        dataset, collate, norm_stats = self.build_data(model.config, tokenizer)
        self.stream = dataset
        params = [p for p in model.parameters() if p.requires_grad]
        if self.dist.main:
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            (self.out / "trainable.txt").write_text("\n".join(trainable) + "\n")
            (self.out / "norm_stats.json").write_text(json.dumps(norm_stats, indent=2) + "\n")
            logger.info("stage %s: %d trainable tensors (%.3fM of %.3fM parameters); %d samples; %s",
                        cfg.stage, len(trainable), sum(p.numel() for p in params) / 1e6,
                        sum(p.numel() for p in model.parameters()) / 1e6, self.n_samples, self.skips.summary())
        rss = sharding.rss_bytes()
        wrapped = self.wrap(model)
        model_rss += sharding.rss_bytes() - rss
        params = [p for p in wrapped.parameters() if p.requires_grad]
        local, full = sharding.parameter_bytes(wrapped)
        self.memory = {"mode": self.mode, "parameter_bytes_local": local, "parameter_bytes_model": full,
                       "rss_growth_bytes_model": model_rss}
        logger.info("%s: this process holds %.1f MB of the model's %.1f MB of parameters", self.mode, local / 1e6,
                    full / 1e6)
        o = cfg.optim
        optimizer = torch.optim.AdamW(params, lr=cfg.lr(), weight_decay=float(o.get("weight_decay", 0.0)),
                                      betas=tuple(o.get("betas", (0.9, 0.999))))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
        start = 0
        ckpts = self.checkpoint_dirs() if self.resume else []
        if ckpts:
            start = self.load_checkpoint(ckpts[-1], wrapped, optimizer, scheduler)
        metrics_path = self.out / "metrics.jsonl"
        if self.dist.main:
            kept = [line for line in (metrics_path.read_text().splitlines() if metrics_path.exists() and start else [])
                    if json.loads(line)["step"] <= start]  # drop what a killed run logged past its checkpoint
            metrics_path.write_text("".join(line + "\n" for line in kept))
        writer = progress = None
        if self.dist.main:
            from torch.utils.tensorboard import SummaryWriter
            from tqdm import tqdm

            writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=start + 1 if start else None)
            progress = tqdm(total=cfg.steps, initial=start, desc=f"{cfg.stage}", unit="step", dynamic_ncols=True)
        batches = iter(dataset)  # endless: this rank's micro-batches from the restored position on
        device = self.dist.device
        autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if self.use_bf16 else contextlib.nullcontext
        last_log, done = time.monotonic(), 0
        step = start
        try:
            for step in range(start + 1, cfg.steps + 1):
                total = torch.zeros((), device=device)
                grounding = torch.zeros((), device=device)  # its share of total, logged on its own
                for m in range(cfg.grad_accum):
                    batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
                    target, valid = batch.pop("actions"), batch.pop("action_valid")
                    where = torch.stack([batch.pop("target_xy"), batch.pop("place_xy")], 1)  # (B, 2 roles, 2)
                    sync = self.mode != "ddp" or m == cfg.grad_accum - 1
                    with (contextlib.nullcontext() if sync else wrapped.no_sync()), autocast():
                        out = wrapped(**batch)
                        loss = masked_l1(out.actions.float(), target, valid)
                        if cfg.grounding_weight:
                            logits = out.grounding_logits  # (B, R, N): the target, then where it goes
                            ce = grounding_cross_entropy(logits.flatten(0, 1), where[:, :logits.shape[1]].flatten(0, 1),
                                                         model.config.grid_size)
                            loss = loss + cfg.grounding_weight * ce
                            grounding += ce.detach() / cfg.grad_accum
                        loss = loss / cfg.grad_accum
                    loss.backward()
                    total += loss.detach()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, float(o.get("grad_clip", 1.0)))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if self.dist.enabled:
                    dist.all_reduce(total)
                    dist.all_reduce(grounding)
                    total /= self.dist.world
                    grounding /= self.dist.world
                done += 1
                if step % cfg.log_every == 0 or step == cfg.steps:
                    now = time.monotonic()
                    rec = {"step": step, "loss": float(total), "lr": scheduler.get_last_lr()[0],
                           "grad_norm": float(grad_norm), "samples_per_s": done * cfg.batch_size / max(1e-9, now - last_log)}
                    if cfg.grounding_weight:
                        rec["grounding_ce"] = float(grounding)
                    last_log, done = now, 0
                    if self.dist.main:
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps(rec) + "\n")
                        for k in ("loss", "lr", "grad_norm", "samples_per_s"):
                            writer.add_scalar(f"train/{k}", rec[k], step)
                        progress.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}")
                if progress is not None:
                    progress.update(1)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self.save_checkpoint(wrapped, optimizer, scheduler, step, trainable)
                    if self.dist.main:
                        plot_loss(metrics_path, self.out / "loss.png", f"{cfg.stage} loss")
                if stop_after is not None and step - start >= stop_after:
                    return None
        finally:
            if progress is not None:
                progress.close()
            if writer is not None:
                writer.close()
            self.memory["max_rss_bytes"] = sharding.max_rss_bytes()  # the training's peak (before final/)
            (self.out / f"memory_rank{self.dist.rank}.json").write_text(json.dumps(self.memory) + "\n")
        final = self.out / "final"
        self.export_final(wrapped, model, tokenizer, norm_stats, final)
        if self.dist.main:
            plot_loss(metrics_path, self.out / "loss.png", f"{cfg.stage} loss")
            logger.info("final checkpoint (LoRA merged): %s", final)
        return final

    def export_final(self, wrapped, model, tokenizer, norm_stats, final: Path) -> None:
        """from_pretrained directory of the trained model with LoRA merged into the LLM (rank 0 writes)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.dist.main:
            config = PixelVLAConfig.from_dict(model.config.to_dict())
            lora_r = config.lora_r
            config.lora_r = 0
            if lora_r:
                config_lora = PixelVLAConfig.from_dict({**config.to_dict(), "lora_r": lora_r})
                with torch.device("cpu"):
                    tmp = PixelVLA(config_lora)
                tmp.load_state_dict(full, strict=True)
                tmp.llm = tmp.llm.merge_and_unload()
                tmp.config.lora_r = 0
                out_model = tmp
            else:
                out_model = PixelVLA(config)
                out_model.load_state_dict(full, strict=True)
            out_model.eval()
            PixelVLAPolicy(out_model, tokenizer, norm_stats).save_pretrained(final)
        self.dist.barrier()


# ------------------------------------------------------------------------------------------------ helpers
def carry_norm_stats(name: str, computed: dict[str, Any], init: dict[str, Any], init_reads_state: bool,
                     reads_state: bool) -> dict[str, Any]:
    """The statistics to train dataset ``name`` with: chosen once per key, then carried through the stages.

    When the init checkpoint has statistics for ``name``, its entry is used as it is: the actions keep the
    scale the init was trained on, and the saved checkpoint holds the same numbers. One exception: a model
    that reads the robot state grown from an init that did not (an OpenVLA import: its checkpoints list state
    statistics it never used) gets the computed "proprio" entry. A key the init does not know gets the
    ``computed`` statistics."""
    if name not in init:
        logger.info("norm stats for %r: computed from this run's data (the init has none for it)", name)
        return computed
    entry = dict(init[name])
    new_state_input = reads_state and not init_reads_state
    if new_state_input:
        entry.pop("proprio", None)
        if "proprio" in computed:
            entry["proprio"] = computed["proprio"]
    logger.info("norm stats for %r: the init checkpoint's, not recomputed%s", name,
                " (robot-state statistics computed: a new input)" if new_state_input else "")
    return entry


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": repr(random.getstate()),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import ast

    torch.set_rng_state(state["torch"])
    random.setstate(ast.literal_eval(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plot_loss(metrics: Path, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps, grounding = [r["step"] for r in rows], "grounding_ce" in rows[-1]
    ax.plot(steps, [r["loss"] for r in rows], lw=1,
            label="L1 (normalised actions)" + (" + weighted text-grounding cross-entropy" if grounding else ""))
    if grounding:  # the maps' own term (TrainConfig.grounding_weight)
        ax.plot(steps, [r.get("grounding_ce", float("nan")) for r in rows], lw=1, label="text-grounding cross-entropy")
    ax.legend(fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
