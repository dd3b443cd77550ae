"""Pre/post-processing around the network, shared by every runtime (torch, onnxruntime, TensorRT).

PixelVLAProcessor turns (image, instruction, prompts, target mask) into the network's input tensors
(see modeling.INPUT_NAMES) and normalised actions back into robot units. A policy is this processor
around a runtime that runs the network (runtime/policy.py: PixelVLAPolicy, RuntimePolicy).

Images (preprocess_image, the one image path: the processor's, so training batches', the policy node's and
export's; resize_image is its uint8 step alone, for code that resizes frames ahead of time): (H, W, 3) uint8 RGB
-> resized to 224x224 with Pillow's Lanczos filter (antialiased, rounded to uint8), as OpenVLA's training
data was resized (its RLDS pipeline resizes every frame with a Lanczos-3 antialiased filter before the
processor, whose own resize is then a no-op) -> float32 (3, 224, 224) in [0, 1]. The per-tower mean/std
normalisation happens inside the network. Optional centre crop (``center_crop`` = kept area fraction, e.g.
0.9): OpenVLA's evaluation crops the centre 90 % of the area for models trained with random-crop
augmentation; it is applied before the resize (one resize), to the image and the target mask alike.
Not copied from OpenVLA-OFT: its JPEG round trip at inference (it matches JPEG-stored training frames).

Robot state (models with config.proprio_dim > 0): a raw (P,) vector in the dataset's state convention (the
simulator's and the WidowX's: the 6 arm joint positions in rad, then the gripper finger position in m, as
/joint_states reports them) ->
2 (s - q01) / (q99 - q01) - 1 with norm_stats[key]["proprio"], clipped to [-2, 2].

Actions: the network predicts (N_c, 7) in [-1, 1]; un-normalisation follows OpenVLA:
a = 0.5 (a_n + 1) (q99 - q01) + q01 on the dims where norm_stats[key]["action"]["mask"] is true; the
gripper dim (mask false) is returned as predicted. Units are those of the dataset the stats come from
(Bridge: end-effector deltas in metres / radians, gripper 0 = closed, 1 = open).
"""
from __future__ import annotations

import math
import threading
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .configuration import PixelVLAConfig
# norm-stats file I/O lives in files.py (no torch); the names stay importable from here
from .files import NORM_STATS_FILE, load_norm_stats, save_norm_stats, validate_norm_stats  # noqa: F401
from .prompts import Prompt, batch_prompts

PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"


# ---------------------------------------------------------------------------------------------------
# images, masks, text
# ---------------------------------------------------------------------------------------------------
def center_crop_box(hw: tuple[int, int], area: float) -> tuple[slice, slice]:
    """(rows, cols) slices of the centred crop that keeps ``area`` (0 < area <= 1) of an (H, W) image, both
    sides scaled by sqrt(area) (OpenVLA's centre crop)."""
    if not 0.0 < area <= 1.0:
        raise ValueError(f"center_crop must be an area fraction in (0, 1], got {area}")
    h, w = hw
    ch, cw = max(1, round(h * math.sqrt(area))), max(1, round(w * math.sqrt(area)))
    top, left = (h - ch) // 2, (w - cw) // 2
    return slice(top, top + ch), slice(left, left + cw)


def resize_image(image: np.ndarray, size: int = 224, center_crop: float = 1.0) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (size, size, 3) uint8: the centre crop when center_crop < 1, then Pillow's
    Lanczos resize (module doc). An image already (size, size) without a crop is returned as it is."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got shape {image.shape} dtype {image.dtype}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image is too small: {image.shape[:2]}")
    if center_crop != 1.0:
        rows, cols = center_crop_box(image.shape[:2], center_crop)
        image = image[rows, cols]
    if image.shape[:2] == (size, size):
        return image
    return np.array(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.Resampling.LANCZOS))


def preprocess_image(image: np.ndarray, size: int = 224, center_crop: float = 1.0) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, size, size) float32 in [0, 1] (resize_image, then / 255)."""
    x = torch.from_numpy(np.ascontiguousarray(resize_image(image, size, center_crop)))
    return x.permute(2, 0, 1).to(torch.float32).div_(255.0)


def preprocess_mask(mask: Optional[np.ndarray], image_hw: tuple[int, int], size: int = 224,
                    center_crop: float = 1.0) -> torch.Tensor:
    """Target mask (H, W) bool/0-1 of the input image -> (size, size) float32 coverage in [0, 1], cropped as
    the image (center_crop). None -> all zeros (the network then uses its "no target" embedding)."""
    if mask is None:
        return torch.zeros(size, size)
    m = np.asarray(mask)
    if m.shape != tuple(image_hw):
        raise ValueError(f"target mask shape {m.shape} differs from the image's (H, W) = {tuple(image_hw)}")
    if center_crop != 1.0:
        rows, cols = center_crop_box(m.shape, center_crop)
        m = m[rows, cols]
    if m.dtype != bool and not np.issubdtype(m.dtype, np.number):
        raise ValueError(f"target mask must be bool or numeric, got dtype {m.dtype}")
    m = torch.from_numpy(m.astype(np.float32))
    if not torch.isfinite(m).all():
        raise ValueError("target mask contains NaN or inf")
    m = (m > 0.5).to(torch.float32)
    if m.shape != (size, size):
        m = F.interpolate(m[None, None], size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)[0, 0]
    return m.clamp_(0.0, 1.0)


def build_prompt(instruction: str) -> str:
    """OpenVLA's prompt; the instruction is stripped and lower-cased as in OpenVLA's data pipeline."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
    return PROMPT_TEMPLATE.format(instruction=instruction.strip().rstrip("?.").lower())


# ---------------------------------------------------------------------------------------------------
# norm stats
# ---------------------------------------------------------------------------------------------------
def resolve_unnorm_key(norm_stats: dict[str, Any], unnorm_key: Optional[str]) -> str:
    if not norm_stats:
        raise ValueError("this policy has no norm stats; load a checkpoint with norm_stats.json or pass norm_stats")
    if unnorm_key is None:
        if len(norm_stats) == 1:
            return next(iter(norm_stats))
        raise ValueError(f"this policy has norm stats for several datasets; pass unnorm_key, one of "
                         f"{sorted(norm_stats)}")
    if unnorm_key not in norm_stats:
        raise ValueError(f"unknown unnorm_key {unnorm_key!r}; known keys: {sorted(norm_stats)}")
    return unnorm_key


def unnormalize_actions(actions: np.ndarray, stats: dict[str, Any]) -> np.ndarray:
    """(..., 7) normalised in [-1, 1] -> robot units with q01/q99 (OpenVLA); mask-false dims pass through."""
    a = stats["action"]
    q01, q99 = np.asarray(a["q01"], np.float64), np.asarray(a["q99"], np.float64)
    mask = np.asarray(a.get("mask", [True] * (len(q01) - 1) + [False]), bool)
    actions = np.asarray(actions, np.float64)
    return np.where(mask, 0.5 * (actions + 1.0) * (q99 - q01) + q01, actions)


def normalize_proprio(state: np.ndarray, stats: dict[str, Any]) -> np.ndarray:
    """(..., P) raw robot state -> normalised with norm_stats[key]["proprio"] q01/q99, clipped to [-2, 2]."""
    p = stats["proprio"]
    q01, q99 = np.asarray(p["q01"], np.float64), np.asarray(p["q99"], np.float64)
    span = np.where(q99 - q01 > 1e-8, q99 - q01, 1.0)  # a constant dim maps to -1, never a division by zero
    return np.clip(2.0 * (np.asarray(state, np.float64) - q01) / span - 1.0, -2.0, 2.0).astype(np.float32)


def identity_norm_stats(action_dim: int = 7, key: str = "untrained", proprio_dim: int = 0) -> dict[str, Any]:
    """Stats that leave actions in [-1, 1] (for untrained / test policies); proprio likewise when asked."""
    entry: dict[str, Any] = {"action": {"q01": [-1.0] * action_dim, "q99": [1.0] * action_dim,
                                        "mask": [True] * (action_dim - 1) + [False]}}
    if proprio_dim:
        entry["proprio"] = {"q01": [-1.0] * proprio_dim, "q99": [1.0] * proprio_dim}
    return {key: entry}


# ---------------------------------------------------------------------------------------------------
# processor
# ---------------------------------------------------------------------------------------------------
class PixelVLAProcessor:
    """Inputs -> network tensors (keys = modeling.INPUT_NAMES), and normalised actions -> robot units.

    center_crop: the image area kept around the centre before the resize (1.0: none; OpenVLA's Bridge
    evaluation uses 0.9 for models trained with random crops). The target mask is cropped alike; visual
    prompts, in the uncropped image's pixels, are refused with a crop."""

    def __init__(self, config: PixelVLAConfig, tokenizer, norm_stats: Optional[dict[str, Any]] = None,
                 center_crop: float = 1.0):
        self.config, self.tokenizer = config, tokenizer
        center_crop_box((2, 2), center_crop)  # validates the fraction
        self.center_crop = float(center_crop)
        # A fast tokenizer changes its padding settings per call and is not safe to call from two threads at
        # once (a ROS node checks instructions in one thread while another runs the model).
        self.tokenizer_lock = threading.Lock()
        self.norm_stats = validate_norm_stats(norm_stats or {}, config.action_dim)
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token")
        if len(tokenizer) > config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the LLM vocab is {config.vocab_size}")
        if config.proprio_dim:
            for key, entry in self.norm_stats.items():
                p = entry.get("proprio")
                if not isinstance(p, dict) or len(p.get("q01", ())) != config.proprio_dim \
                        or len(p.get("q99", ())) != config.proprio_dim:
                    raise ValueError(f"the model takes {config.proprio_dim} robot-state values, but norm_stats[{key!r}] "
                                     f"has no 'proprio' entry with q01/q99 of that length; retrain or fix norm_stats.json")

    def __getstate__(self) -> dict[str, Any]:  # picklable (e.g. a collate_fn sent to DataLoader workers)
        return {k: v for k, v in self.__dict__.items() if k != "tokenizer_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.tokenizer_lock = threading.Lock()

    def normalize_proprio(self, state: np.ndarray, unnorm_key: Optional[str] = None) -> np.ndarray:
        """Raw robot state (P,) -> normalised (P,) float32; ValueError naming what is wrong with it."""
        state = np.asarray(state, np.float64)
        if state.shape != (self.config.proprio_dim,):
            raise ValueError(f"robot state must have {self.config.proprio_dim} values, got shape {state.shape}")
        if not np.all(np.isfinite(state)):
            raise ValueError("robot state contains NaN or inf")
        return normalize_proprio(state, self.norm_stats[resolve_unnorm_key(self.norm_stats, unnorm_key)])

    def __call__(self, images: Sequence[np.ndarray], instructions: Sequence[str],
                 prompts: Optional[Sequence[Optional[Sequence[Prompt]]]] = None,
                 masks: Optional[Sequence[Optional[np.ndarray]]] = None,
                 proprio: Optional[Sequence[np.ndarray]] = None,
                 click_to_tcp: Optional[Sequence[np.ndarray]] = None) -> dict[str, torch.Tensor]:
        """Lists of B images (H,W,3) uint8, instructions, prompt lists (or None), target masks (or None) and,
        for models with proprio_dim > 0, B normalised robot states (see normalize_proprio); for models with
        config.prompt_offsets, B (4, 3) maps from a click to the TCP (modeling.place_prompts;
        pixelvla_robots.camera.plane_click_map), all zeros where the camera is not calibrated."""
        b = len(images)
        if len(instructions) != b:
            raise ValueError(f"got {b} images but {len(instructions)} instructions")
        prompts = list(prompts) if prompts is not None else [None] * b
        masks = list(masks) if masks is not None else [None] * b
        if len(prompts) != b or len(masks) != b:
            raise ValueError(f"prompts and masks need one entry per image ({b})")
        s, crop = self.config.image_size, self.center_crop
        if crop != 1.0 and any(prompts):
            raise ValueError("visual prompts cannot be combined with center_crop < 1 (they are in the uncropped "
                             "image's pixels); use center_crop 1.0 for prompted models")
        hw = [tuple(np.asarray(im).shape[:2]) for im in images]
        pixel_values = torch.stack([preprocess_image(im, s, crop) for im in images])
        target = torch.stack([preprocess_mask(m, h, s, crop) for m, h in zip(masks, hw)])
        with self.tokenizer_lock:
            text = self.tokenizer([build_prompt(t) for t in instructions], padding=True, return_tensors="pt")
        ids = text["input_ids"]
        if self.tokenizer.bos_token_id is not None and not bool((ids[:, 0] == self.tokenizer.bos_token_id).all()):
            raise ValueError("the tokenizer must put BOS first (the network inserts its tokens after it)")
        out = {"pixel_values": pixel_values, "input_ids": ids.to(torch.long),
               "attention_mask": text["attention_mask"].to(torch.long), "target_mask": target,
               **batch_prompts(prompts, hw, self.config)}
        if self.config.proprio_dim:
            if proprio is None or len(proprio) != b:
                raise ValueError(f"this model takes the robot state ({self.config.proprio_dim} values) for each of "
                                 f"the {b} images; pass proprio")
            out["proprio"] = torch.as_tensor(np.stack([np.asarray(p, np.float32) for p in proprio]))
        if self.config.prompt_offsets:
            if click_to_tcp is None or len(click_to_tcp) != b:
                raise ValueError(f"this model places the prompts from the gripper for each of the {b} images "
                                 "(config.prompt_offsets); pass click_to_tcp, (4, 3) each")
            maps = np.stack([np.asarray(m, np.float32) for m in click_to_tcp])
            if maps.shape[1:] != (4, 3) or not np.all(np.isfinite(maps)):
                raise ValueError(f"click_to_tcp must be finite (4, 3) per image, got shape {maps.shape[1:]}")
            out["click_to_tcp"] = torch.from_numpy(maps)
        return out

    def text_tokens(self, instruction: str) -> int:
        """Tokens the network gets for `instruction` (in PROMPT_TEMPLATE); ValueError for an empty one."""
        with self.tokenizer_lock:
            return len(self.tokenizer(build_prompt(instruction))["input_ids"])

    def unnormalize(self, actions: np.ndarray, unnorm_key: Optional[str] = None) -> np.ndarray:
        return unnormalize_actions(actions, self.norm_stats[resolve_unnorm_key(self.norm_stats, unnorm_key)])
