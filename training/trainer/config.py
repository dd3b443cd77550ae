"""TrainConfig: one YAML file per run (config/training/*.yaml), validated at load (yaml.safe_load).

Sections (every key optional unless marked; defaults below):

    stage: cat | pue | grounding     # required. cat: the action decoder trains; pue: LoRA + pixel encoder +
                                     # prompt encoder + decoder; grounding: the text-grounding map alone, with
                                     # grounding_weight > 0 (PixelVLA.freeze_for_stage)
    lora_r: 32                       # LoRA rank of stage pue
    also_train: []                   # extra module prefixes to train (e.g. [vision, projector] when the
                                     # backbones are random-initialised); [] = the paper's stage exactly
    grounding_weight: 0.0            # > 0: the model's text-grounding maps (PixelVLA.enable_text_grounding)
                                     # learn which patch holds the target and the place (their masks'
                                     # centroids, every sample with one, text-only ones too), loss += weight x
                                     # cross-entropy; they click for a sample without mask or prompt
    model: {preset: tiny, overrides: {...}, init_from: null, seed: 0, place_prompts: false}
                                     # init_from: a from_pretrained directory (e.g. the CAT result for PUE),
                                     # or an OpenVLA / Prismatic HF checkpoint directory (openvla-7b), imported
                                     # with its own config; overrides then set what PixelVLA adds (proprio_dim,
                                     # chunk_size, pixel_layers, ...). preset is ignored with init_from, and so
                                     # are overrides with a PixelVLA init. The init's norm stats are kept for
                                     # the dataset keys it has (see README, "Training and labeling").
                                     # place_prompts: the model learns place prompts (label 2), grown onto
                                     # init_from if it has none (PixelVLA.enable_place_prompts)
                                     # tokenizer_words: [red, ...]: whole words made single tokens
                                     # (pixelvla_model.add_words), new ids after the tokenizer's own
                                     # visual_where_octaves: N grows the visual tokens' position term
                                     # onto init_from (PixelVLA.enable_visual_where; config field of that name)
                                     # prompt_offsets: true grows the prompts' offsets from the TCP onto
                                     # init_from (PixelVLA.enable_prompt_offsets; it trains with the
                                     # decoder; data with a recorded camera and TCP poses)
                                     # grounding_colours: N lets the text-grounding key read each patch's
                                     # colour histogram, N bins per channel (PixelVLA.enable_grounding_colours)
                                     # reinit: [decoder, ...]: these modules of init_from start again from
                                     # fresh weights (e.g. a decoder relearned around a new input)
                                     # load_modules: {text_grounding: DIR}: these modules' weights from
                                     # another checkpoint, same shapes (PixelVLA.load_module), after the
                                     # maps and colours above are grown
                                     # text_grounding: false drops init_from's text-grounding maps, so a
                                     # text-only sample carries no prompt (PixelVLA.disable_text_grounding)
                                     # image_size: init_from trains on at N px, its towers' position
                                     # embeddings resampled onto the new grid (PixelVLA.resize_images)
    data:  {sources: [...], image_size: null, chunk_size: null, unnorm_key: null,
            prompts: {text_only, max_prompts, type_weights, first_frame, show_mask, box_jitter,
                      place} | null}
    optim: {lr: 1e-4, weight_decay: 0.0, betas: [0.9, 0.999], grad_clip: 1.0, warmup_steps: 0,
            schedule: cosine | constant, min_lr_ratio: 0.1}
    steps: 1000                      # optimiser steps
    batch_size: 8                    # GLOBAL batch = micro_batch * grad_accum * world size
    grad_accum: 1
    num_workers: 0
    seed: 0                          # data order and prompt sampling
    precision: auto | fp32 | bf16    # auto: bf16 on GPU, fp32 on CPU; bf16: bf16 autocast on any device, and
                                     # under FSDP parameters gathered in bf16, gradients reduced in fp32
    distributed: auto | ddp | fsdp   # auto: fsdp for the prismatic-7b preset, ddp otherwise. fsdp builds the
                                     # backbone on the meta device and fills each rank's shards from init_from
                                     # (trainer/sharding.py): no process holds the whole model
    activation_checkpointing: false  # recompute each transformer block's activations in the backward pass
    checkpoint_every: 100            # steps; the newest `keep_checkpoints` are kept
    keep_checkpoints: 2
    log_every: 10
    output_dir: build/train/run      # required in practice
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml


@dataclass
class TrainConfig:
    stage: str
    output_dir: str = "build/train/run"
    lora_r: int = 32
    also_train: list = field(default_factory=list)
    grounding_weight: float = 0.0
    model: dict = field(default_factory=lambda: {"preset": "tiny"})
    data: dict = field(default_factory=dict)
    optim: dict = field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    num_workers: int = 0
    seed: int = 0
    precision: str = "auto"
    distributed: str = "auto"
    activation_checkpointing: bool = False
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10

    def __post_init__(self):
        errors = []
        if self.stage not in ("cat", "pue", "grounding"):
            errors.append(f"stage must be 'cat', 'pue' or 'grounding', got {self.stage!r}")
        if self.stage == "grounding" and not self.grounding_weight:
            errors.append("stage grounding trains the text-grounding map alone: set grounding_weight > 0")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every", "keep_checkpoints"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                errors.append(f"{name} must be a positive int, got {v!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            errors.append(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.distributed not in ("auto", "ddp", "fsdp"):
            errors.append(f"distributed must be auto, ddp or fsdp, got {self.distributed!r}")
        if not isinstance(self.activation_checkpointing, bool):
            errors.append(f"activation_checkpointing must be true or false, got {self.activation_checkpointing!r}")
        known_model = {"preset", "overrides", "init_from", "seed", "place_prompts", "tokenizer_words",
                       "visual_where_octaves", "image_size", "prompt_offsets", "reinit", "grounding_colours",
                       "text_grounding", "load_modules"}
        if set(self.model) - known_model:
            errors.append(f"unknown model keys {sorted(set(self.model) - known_model)}; known: {sorted(known_model)}")
        size = self.model.get("image_size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            errors.append(f"model.image_size must be a positive int (pixels), got {size!r}")
        bins = self.model.get("grounding_colours", 0)
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 0:
            errors.append(f"model.grounding_colours must be an int >= 0 (bins per colour channel), got {bins!r}")
        loads = self.model.get("load_modules", {})
        if not isinstance(loads, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in loads.items()):
            errors.append(f"model.load_modules must map module names to checkpoint directories, got {loads!r}")
        grounding = self.model.get("text_grounding", True)
        if not isinstance(grounding, bool):
            errors.append(f"model.text_grounding must be true or false, got {grounding!r}")
        elif not grounding and self.grounding_weight:
            errors.append("model.text_grounding: false drops the maps that grounding_weight > 0 trains")
        reinit = self.model.get("reinit", [])
        if not isinstance(reinit, list) or not all(isinstance(r, str) and r for r in reinit):
            errors.append(f"model.reinit must be a list of module names, got {reinit!r}")
        words = self.model.get("tokenizer_words", [])
        if not isinstance(words, list) or not all(isinstance(w, str) and w and w.split() == [w] for w in words):
            errors.append(f"model.tokenizer_words must be a list of single words, got {words!r}")
        known_data = {"sources", "image_size", "chunk_size", "unnorm_key", "prompts"}
        if set(self.data) - known_data:
            errors.append(f"unknown data keys {sorted(set(self.data) - known_data)}; known: {sorted(known_data)}")
        known_optim = {"lr", "weight_decay", "betas", "grad_clip", "warmup_steps", "schedule", "min_lr_ratio"}
        if set(self.optim) - known_optim:
            errors.append(f"unknown optim keys {sorted(set(self.optim) - known_optim)}; known: {sorted(known_optim)}")
        if self.optim.get("schedule", "cosine") not in ("cosine", "constant"):
            errors.append("optim.schedule must be cosine or constant")
        if not isinstance(self.grounding_weight, (int, float)) or self.grounding_weight < 0:
            errors.append(f"grounding_weight must be a number >= 0, got {self.grounding_weight!r}")
        if not isinstance(self.also_train, list):
            errors.append("also_train must be a list of module prefixes")
        if errors:
            raise ValueError("invalid training config: " + "; ".join(errors))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ValueError("a training config must be a YAML mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known: {sorted(names)}")
        if "stage" not in d:
            raise ValueError("a training config needs `stage: cat`, `stage: pue` or `stage: grounding`")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Optional[list[str]] = None) -> "TrainConfig":
        d = yaml.safe_load(Path(path).read_text()) or {}
        for item in overrides or []:
            apply_override(d, item)
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # derived
    def lr(self) -> float:
        return float(self.optim.get("lr", 1e-4))


def apply_override(d: dict, item: str) -> None:
    """`a.b.c=value` (value parsed as YAML) into the nested dict `d`."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key.sub=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = d
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = yaml.safe_load(value)
