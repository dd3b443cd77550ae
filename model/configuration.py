"""PixelVLAConfig: every size of the PixelVLA network in one JSON-serialisable dataclass.

Presets
-------
- ``"tiny"``: random-weight CPU test model (hidden 32-64, 2 layers); a forward takes tens of ms on CPU.
- ``"small"``: mid-size model for benchmarks and parity tests (~0.1-0.3 s per forward on a 2-core CPU).
- ``"prismatic-7b"``: the paper's sizes, OpenVLA's Prismatic-7B backbone: DINOv2-L/14 with 4 registers
  + SigLIP-so400m/14 at 224 px, Llama-2-7B (RMSNorm eps 1e-5, as Llama-2-7B was trained), and none of the
  from-scratch additions. The dataclass defaults are this preset.
- ``"prismatic-7b-shallow"``: "prismatic-7b" with 2 blocks per vision tower and 2 LLM layers: the real
  widths, heads and vocabulary at ~0.7 G parameters, for export / TensorRT checks on a CPU (random weights).

Options added for small towers trained from scratch (docs/results.md), off in the paper's preset and on in
"tiny" / "small": ``pixel_where_octaves`` (the pixel encoder's "where" term). "tiny" / "small" also keep
``rms_norm_eps`` 1e-6, the value their shipped checkpoints were trained with.

Tower depths (``dino_layers``, ``siglip_layers``) are the depths of the *pretrained* towers. Like OpenVLA,
the network reads the patch features of the second-to-last block, so only ``depth - 1`` blocks are built
and run; the importer drops the last block's weights explicitly.

SigLIP layer indices in ``pixel_layers`` are 1-based block outputs (``i`` = the output of block ``i``),
each in ``[1, siglip_layers - 1]``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Index of each prompt type in ``prompt_types`` tensors; 0 marks an empty (padding) prompt slot.
PROMPT_TYPE_IDS = {"none": 0, "point": 1, "line": 2, "box": 3, "mask": 4}


@dataclass
class PixelVLAConfig:
    # --- input ---
    image_size: int = 224  # square input side, pixels (images are resized to this outside the network)
    patch_size: int = 14  # both towers use 14 px patches -> (224/14)^2 = 256 visual tokens

    # --- DINOv2 tower (with registers), timm/transformers ViT ---
    dino_hidden: int = 1024
    dino_layers: int = 24  # depth of the pretrained tower; the last block is not built (see module doc)
    dino_heads: int = 16
    dino_mlp_ratio: int = 4  # DINOv2 MLP width = ratio * hidden
    dino_registers: int = 4
    dino_layerscale_init: float = 1e-5

    # --- SigLIP tower ---
    siglip_hidden: int = 1152
    siglip_layers: int = 27
    siglip_heads: int = 16
    siglip_intermediate: int = 4304
    # timm's SigLIP ViT (the one OpenVLA checkpoints were trained with) uses exact GELU
    siglip_hidden_act: str = "gelu"

    # --- LLM (Llama 2) ---
    llm_hidden: int = 4096
    llm_layers: int = 32
    llm_heads: int = 32
    llm_kv_heads: int = 32
    llm_intermediate: int = 11008
    vocab_size: int = 32064  # OpenVLA pads Llama-2's 32000 (+pad) to a multiple of 64
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5  # Llama-2-7B's value (its config.json); the small presets use 1e-6
    rope_theta: float = 10000.0
    attn_implementation: str = "sdpa"  # "sdpa" or "eager" (all three backbones)

    # --- pixel-aware encoder ---
    pixel_layers: tuple[int, ...] = (9, 18, 26)  # SigLIP block outputs pooled under the target mask
    pixel_hidden: int = 1024  # width of the per-layer projections Gamma_i and the MLP's hidden layer
    pixel_tokens: int = 1  # tokens the pixel encoder emits
    # Where the target is: the mask-weighted mean of a fixed sin/cos encoding of the patch centres (this many
    # octaves per axis, 0: off) is projected and added to the pooled features. A pretrained ViT's features
    # carry their position; a small one trained from scratch barely does, and its pooled features then lose it.
    # Off in the paper's model (a pretrained backbone); 6 in the small presets.
    pixel_where_octaves: int = 0
    # The same encoding, projected, added to every visual token (octaves per axis, 0: off): a patch the LLM
    # attends to then says where it is, which the text-only path needs to turn "the red cube" into a
    # direction. Off in the paper's model (a pretrained ViT's features carry their position). Grown onto a
    # trained model by PixelVLA.enable_visual_where, which leaves its outputs unchanged until it trains.
    visual_where_octaves: int = 0
    # Where the instruction says the target is (and, with place_prompts, where it goes), when no operator says
    # it: maps over the patches, the softmax of the sum over the instruction's words of q(word embedding) .
    # k(patch features), trained from the target's and the place's positions (TrainConfig.grounding_weight).
    # A sample with neither a target mask nor a prompt gets the clicks the words make: a point prompt and a
    # target mask where the target map peaks, a place point where the place map peaks, so "the red cube" selects
    # the cube the way an operator's click does. Off in the paper's model (its LLM grounds the words); a small
    # LLM trained from actions alone did not.
    text_grounding: bool = False
    # Bins per RGB channel of a colour histogram of each patch's pixels that the text-grounding key reads
    # beside the patch features (0: none; 4 gives 64 colours). The small towers' features tell the named
    # cube's colour on 82 % of frames; the histogram says outright whether a patch holds red pixels. Grown onto
    # a trained map by PixelVLA.enable_grounding_colours, which leaves its outputs unchanged until it trains.
    grounding_colours: int = 0
    # Where the target and place prompts are from the gripper in the robot's base frame: each prompt's pixel
    # (prompts.prompt_anchor; the tracked target mask's centroid for the target) met with the plane objects rest
    # at through the calibrated camera, minus the TCP (forward kinematics), [dx, dy, dz (m), known] per row,
    # through a small MLP added to the decoder's actions (modeling.place_prompts). The camera enters as input
    # click_to_tcp (B, 4, 3), so the words' clicks (text_grounding) are placed inside the network like an
    # operator's. Without it the policy must place a click in the arm's frame from the image alone, and the
    # camera's pose moves from setup to setup: from the click's pixel and the joints the expert's steps within
    # 6 cm of the cube are predictable only to a slope of 0.4-0.5 (docs/results.md). Grown onto a trained model
    # by PixelVLA.enable_prompt_offsets (zero-initialised), with the decoder relearned around it
    # (config/training/sim_offsets.yaml).
    prompt_offsets: bool = False

    # --- visual prompt encoder ---
    max_prompts: int = 4  # K: prompt slots per sample (fixed shape; unused slots are masked)
    max_prompt_points: int = 8  # P: points per prompt (point: 1, box: 2 corners, line: up to P)
    prompt_pe_dim: int = 256  # random-Fourier encoding width (SAM: 256 = 128 frequencies x sin/cos)
    prompt_pe_scale: float = 1.0  # std of the Gaussian frequency matrix (SAM's default)
    prompt_mask_size: int = 16  # mask prompts enter downscaled to (S, S); default: the patch grid
    # Prompts labelled PLACE (2) mark where the target goes (the bowl, a spot on the table) besides the
    # foreground / background prompts on the target: one more label embedding. Off in the paper's model and
    # in checkpoints written before it; PixelVLA.enable_place_prompts() switches it on for fine-tuning.
    place_prompts: bool = False

    # --- robot state (proprioception) ---
    # 0: image, text and prompts only (OpenVLA / the paper). > 0: one more prefix token encodes the robot's
    # state vector (e.g. arm joint positions + gripper, rad / normalised), normalised with the checkpoint's
    # norm_stats[key]["proprio"] statistics. The paper's model has none; small policies trained from
    # scratch need it to tell the phase of a task (gripper open or closed, arm up or down).
    proprio_dim: int = 0

    # --- continuous action decoder ---
    chunk_size: int = 5  # N_c: actions per chunk (Bridge: 5 at 5 Hz)
    action_dim: int = 7  # xyz delta, rpy delta, gripper
    decoder_hidden: int = 1024
    decoder_blocks: int = 2  # N_r residual MLP blocks

    # --- adapters ---
    lora_r: int = 0  # 0: no LoRA; > 0: the LLM is wrapped with peft LoRA of this rank (stage "pue")
    lora_alpha: int = 16

    # std of the normal init of the backbones built from scratch (towers, LLM) and of the new embeddings.
    # 0.02 is the value for ~1000-4096-wide pretrained models; narrow models trained from scratch need
    # about 1/sqrt(width), or attention logits start near zero and stay uniform (the presets set it).
    initializer_range: float = 0.02
    preset: str = field(default="custom")  # the preset this config was built from (informational)

    # ------------------------------------------------------------------ derived sizes
    @property
    def grid_size(self) -> int:
        """Patch grid side: 224 / 14 = 16."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Visual tokens per image (256 at 224 px / 14 px patches)."""
        return self.grid_size**2

    @property
    def vision_hidden(self) -> int:
        """Width of the concatenated DINOv2 + SigLIP patch features (2176 for Prismatic-7B)."""
        return self.dino_hidden + self.siglip_hidden

    @property
    def prefix_tokens(self) -> int:
        """Tokens inserted after BOS: visual + pixel + prompt (+ 1 robot-state token when proprio_dim > 0)."""
        return self.num_patches + self.pixel_tokens + self.max_prompts + (1 if self.proprio_dim else 0)

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        self.pixel_layers = tuple(int(i) for i in self.pixel_layers)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming every bad field and what it must be."""
        errors: list[str] = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("int",) and (not isinstance(v, int) or isinstance(v, bool)):
                errors.append(f"{f.name} must be an int, got {v!r}")
            if f.type in ("float",) and not isinstance(v, (int, float)):
                errors.append(f"{f.name} must be a number, got {v!r}")
        if errors:
            raise ValueError("invalid PixelVLAConfig: " + "; ".join(errors))
        positive = [
            "image_size", "patch_size", "dino_hidden", "dino_layers", "dino_heads", "siglip_hidden",
            "dino_mlp_ratio", "siglip_layers", "siglip_heads", "siglip_intermediate", "llm_hidden", "llm_layers", "llm_heads",
            "llm_kv_heads", "llm_intermediate", "vocab_size", "max_position_embeddings", "pixel_hidden",
            "pixel_tokens", "max_prompts", "max_prompt_points", "prompt_pe_dim", "prompt_mask_size",
            "chunk_size", "action_dim", "decoder_hidden",
        ]
        errors += [f"{n} must be > 0, got {getattr(self, n)}" for n in positive if getattr(self, n) <= 0]
        if self.image_size % self.patch_size:
            errors.append(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.dino_layers < 2 or self.siglip_layers < 2:
            errors.append("dino_layers and siglip_layers must be >= 2 (the second-to-last block is read)")
        for name, hidden, heads in (("dino", self.dino_hidden, self.dino_heads),
                                    ("siglip", self.siglip_hidden, self.siglip_heads),
                                    ("llm", self.llm_hidden, self.llm_heads)):
            if heads > 0 and hidden % heads:
                errors.append(f"{name}_hidden {hidden} must be divisible by {name}_heads {heads}")
        if self.llm_kv_heads > 0 and self.llm_heads % self.llm_kv_heads:
            errors.append(f"llm_heads {self.llm_heads} must be divisible by llm_kv_heads {self.llm_kv_heads}")
        if not self.pixel_layers:
            errors.append("pixel_layers must name at least one SigLIP layer")
        bad = [i for i in self.pixel_layers if not 1 <= i <= self.siglip_layers - 1]
        if bad:
            errors.append(f"pixel_layers {bad} out of range: each must be in [1, siglip_layers - 1 = "
                          f"{self.siglip_layers - 1}]")
        if len(set(self.pixel_layers)) != len(self.pixel_layers):
            errors.append(f"pixel_layers {self.pixel_layers} has duplicates")
        if self.prompt_pe_dim % 2:
            errors.append(f"prompt_pe_dim {self.prompt_pe_dim} must be even (sin and cos halves)")
        if self.max_prompt_points < 2:
            errors.append("max_prompt_points must be >= 2 (a box has 2 corners)")
        if self.text_grounding and self.place_prompts and self.max_prompts < 2:
            errors.append("text_grounding with place_prompts clicks twice (the target, where it goes): "
                          "max_prompts must be >= 2")
        if self.grounding_colours and not self.text_grounding:
            errors.append("grounding_colours feeds the text-grounding key: it needs text_grounding")
        if min(self.decoder_blocks, self.lora_r, self.dino_registers, self.proprio_dim, self.pixel_where_octaves,
               self.visual_where_octaves, self.grounding_colours) < 0:
            errors.append("decoder_blocks, lora_r, dino_registers, proprio_dim, pixel_where_octaves, "
                          "visual_where_octaves and grounding_colours must be >= 0")
        if self.attn_implementation not in ("sdpa", "eager"):
            errors.append(f"attn_implementation must be 'sdpa' or 'eager', got {self.attn_implementation!r}")
        if errors:
            raise ValueError("invalid PixelVLAConfig: " + "; ".join(errors))

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pixel_layers"] = list(self.pixel_layers)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PixelVLAConfig":
        """Build and validate; unknown keys are an error (a typo would silently change the network)."""
        if not isinstance(d, dict):
            raise ValueError(f"a PixelVLAConfig must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown PixelVLAConfig keys {unknown}; remove them or fix their spelling "
                             f"(known keys: {sorted(names)})")
        missing = sorted(names - set(d))
        if missing:
            logger.warning("config has no value for %s; using the defaults (Prismatic-7B sizes)", missing)
        return cls(**d)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "PixelVLAConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {path}: a checkpoint directory needs config.json "
                                    "(write one with PixelVLA.save_pretrained)")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); fix or regenerate it") from e
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "PixelVLAConfig":
        """A named preset ("tiny", "small", "prismatic-7b"), optionally with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
        d = dict(PRESETS[name], preset=name)
        d.update(overrides)
        return cls(**d)


#: The additions for small towers trained from scratch (module doc), shared by "tiny" and "small".
FROM_SCRATCH_OPTIONS: dict[str, Any] = dict(pixel_where_octaves=6, rms_norm_eps=1e-6)

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's sizes (OpenVLA Prismatic-7B backbone) = the dataclass defaults. The pixel layers are our
    # choice of three SigLIP depths (shallow / middle / the block the visual tokens are read from).
    "prismatic-7b": dict(),
    # Prismatic-7B's widths at 2 blocks per vision tower and 2 LLM layers (~0.71 G parameters, 1.4 GB in bf16):
    # every weight matrix, head count and the vocabulary of the real model, so exports, graph dtypes and
    # TensorRT's operator support can be checked at the real size on a CPU. Random weights only.
    "prismatic-7b-shallow": dict(dino_layers=3, siglip_layers=3, llm_layers=2, pixel_layers=(1, 2)),
    # Random-weight model for CPU tests: a forward is ~10-30 ms on 2 cores.
    "tiny": dict(
        dino_hidden=32, dino_layers=3, dino_heads=2, dino_registers=4,
        siglip_hidden=32, siglip_layers=3, siglip_heads=2, siglip_intermediate=64,
        llm_hidden=64, llm_layers=2, llm_heads=4, llm_kv_heads=4, llm_intermediate=128,
        vocab_size=512, max_position_embeddings=1024,
        pixel_layers=(1, 2), pixel_hidden=32,
        prompt_pe_dim=32, decoder_hidden=64, initializer_range=0.125,  # 1/sqrt(llm_hidden)
        **FROM_SCRATCH_OPTIONS,
    ),
    # Mid-size model for benchmarks / parity tests (roughly ViT-S towers and a 4-layer 512-wide LLM).
    "small": dict(
        dino_hidden=256, dino_layers=7, dino_heads=4,
        siglip_hidden=256, siglip_layers=7, siglip_heads=4, siglip_intermediate=1024,
        llm_hidden=512, llm_layers=4, llm_heads=8, llm_kv_heads=8, llm_intermediate=1376,
        vocab_size=32064, max_position_embeddings=1024,
        pixel_layers=(2, 4, 6), pixel_hidden=256,
        prompt_pe_dim=128, decoder_hidden=256, initializer_range=0.044,  # 1/sqrt(llm_hidden)
        **FROM_SCRATCH_OPTIONS,
    ),
}
