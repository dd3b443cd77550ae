"""Policies: PixelVLAProcessor (the model package's pre/post-processing) around a PolicyRuntime (the network).

    policy = load_policy("/models/pixelvla-bundle")            # bundle -> TensorRT or onnxruntime
    actions = policy.predict(image, "pick up the red cube", prompts=[Point(120, 80)])   # (N_c, 7)

    policy = PixelVLAPolicy.from_pretrained("/models/pixelvla")   # or PixelVLAPolicy(model, tokenizer, stats)

RuntimePolicy is processor + any runtime, with the predict() every policy shares. PixelVLAPolicy is a
RuntimePolicy whose runtime is a TorchRuntime over a PixelVLA in memory, plus the constructors and
save_pretrained that need the torch model.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..configuration import PixelVLAConfig
from ..files import CONFIG_FILE, load_norm_stats
from ..modeling import PixelVLA
from ..openvla_import import from_openvla
from ..processing import PixelVLAProcessor, identity_norm_stats, resolve_unnorm_key
from ..prompts import PLACE, Box, Point, Prompt
from ..tokenizer import build_byte_tokenizer, load_tokenizer
from .base import PolicyRuntime
from .bundle import BundleError
from .factory import load_runtime
from .torch_runtime import TorchRuntime

logger = logging.getLogger(__name__)


class RuntimePolicy:
    """predict(image, instruction, prompts, mask, unnorm_key) -> (N_c, 7) actions in robot units, the
    network run by ``runtime`` (torch, onnxruntime or TensorRT)."""

    def __init__(self, runtime: PolicyRuntime, processor: PixelVLAProcessor):
        self.runtime, self.processor = runtime, processor

    @property
    def config(self) -> PixelVLAConfig:
        return self.processor.config

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.processor.norm_stats

    @property
    def text_len_range(self) -> tuple[int, int]:
        """(min, max) text tokens the network takes: for torch, the positions left after the prefix (image,
        pixel, prompt and state tokens); a bundle may accept fewer than the config allows."""
        return self.runtime.text_len_range

    def check_instruction(self, instruction: str) -> int:
        """The token count of `instruction` in the prompt template; ValueError saying why this model cannot
        take it (empty, or longer than text_len_range allows), before any frame is run with it."""
        n = self.processor.text_tokens(instruction)
        low, high = self.text_len_range
        if not low <= n <= high:
            raise ValueError(f"{n} tokens with the prompt template; this model takes {low}..{high}")
        return n

    def infer(self, inputs: dict) -> np.ndarray:
        """The network on a processed batch (keys = modeling.input_names(config)) -> (B, N_c, 7) float32,
        normalised."""
        return self.runtime.infer(inputs)

    def predict(self, image: np.ndarray, instruction: str, prompts: Optional[Sequence[Prompt]] = None,
                mask: Optional[np.ndarray] = None, unnorm_key: Optional[str] = None,
                proprio: Optional[np.ndarray] = None, click_to_tcp: Optional[np.ndarray] = None) -> np.ndarray:
        """image (H, W, 3) uint8 RGB; prompts in pixel coordinates of `image`; mask (H, W) target mask;
        proprio: the raw robot state (P,), required when config.proprio_dim > 0 (see processing.py);
        click_to_tcp: (4, 3) the camera's map from a click to the TCP (pixelvla_robots.camera.plane_click_map),
        required when config.prompt_offsets.
        Returns (N_c, 7) float64 actions in robot units (see processing.py)."""
        key = resolve_unnorm_key(self.norm_stats, unnorm_key)  # fail before running the network
        state = None
        if self.config.proprio_dim:
            if proprio is None:
                raise ValueError(f"this model takes the robot state ({self.config.proprio_dim} values); pass proprio")
            state = [self.processor.normalize_proprio(proprio, key)]
        maps = None if click_to_tcp is None else [click_to_tcp]
        actions = self.infer(self.processor([image], [instruction], [prompts], [mask], state, maps))[0]
        return self.processor.unnormalize(actions, key)

    def words_unavailable(self) -> str:
        """Why this policy cannot say where its words point ("": it can): a model without text grounding
        (config.text_grounding), or one not run by torch (a bundle's network outputs actions only)."""
        if not self.config.text_grounding:
            return "this model has no text grounding (config.text_grounding): its words point nowhere"
        if not isinstance(self.runtime, TorchRuntime):
            return f"the words' prompts come from the torch model; this policy runs {self.runtime.backend}"
        return ""

    @torch.inference_mode()
    def words_prompts(self, image: np.ndarray, instruction: str) -> list[Prompt]:
        """What the words of `instruction` point at in `image` (H, W, 3) uint8 RGB when no operator prompts,
        as prompts in its pixels: a Box over the patch the target map picks (for a segmenter: the object
        inside it) and, for a model with a place map, a PLACE Point. ValueError saying why when the policy cannot
        (`words_unavailable`)."""
        c = self.config
        reason = self.words_unavailable()
        if reason:
            raise ValueError(reason)
        state = [np.zeros(c.proprio_dim, np.float32)] if c.proprio_dim else None  # the maps read neither
        maps = [np.zeros((4, 3), np.float32)] if c.prompt_offsets else None
        inputs = self.processor([image], [instruction], proprio=state, click_to_tcp=maps)
        device, dtype = self.runtime.device, self.runtime.torch_dtype
        clicks = self.runtime.model.words_clicks(inputs["pixel_values"].to(device, dtype),
                                                 inputs["input_ids"].to(device), inputs["attention_mask"].to(device))
        h, w = np.asarray(image).shape[:2]
        (x, y), *place = clicks[0].float().cpu().numpy() * [w, h]
        half = np.array([w, h]) / (2 * c.grid_size)  # half a patch
        x0, y0, x1, y1 = np.clip([x - half[0], y - half[1], x + half[0], y + half[1]], 0, [w, h, w, h]).tolist()
        prompts: list[Prompt] = [Box(x0, y0, x1, y1)]
        return prompts + [Point(float(px), float(py), PLACE) for px, py in place]


class PixelVLAPolicy(RuntimePolicy):
    """A PixelVLA in memory, run by a TorchRuntime on ``device`` in the model's own dtype."""

    def __init__(self, model: PixelVLA, tokenizer, norm_stats: Optional[dict[str, Any]] = None,
                 device: str | torch.device = "cpu"):
        super().__init__(TorchRuntime(model, device=str(device), dtype=None),
                         PixelVLAProcessor(model.config, tokenizer, norm_stats))

    @property
    def model(self) -> PixelVLA:
        return self.runtime.model

    @property
    def device(self) -> torch.device:
        return torch.device(self.runtime.device)

    # ------------------------------------------------------------------ construction / checkpoints
    @classmethod
    def from_config(cls, config: PixelVLAConfig, seed: int = 0, norm_stats: Optional[dict[str, Any]] = None,
                    device: str = "cpu") -> "PixelVLAPolicy":
        """An UNTRAINED policy with random weights (deterministic for a seed) and the byte tokenizer."""
        logger.warning("!!! PixelVLAPolicy.from_config: the model is UNTRAINED (random weights, seed %d); "
                       "its actions are meaningless - never drive a real robot with it !!!", seed)
        torch.manual_seed(seed)
        model = PixelVLA(config)
        return cls(model, build_byte_tokenizer(),
                   norm_stats or identity_norm_stats(config.action_dim, proprio_dim=config.proprio_dim), device)

    def save_pretrained(self, directory: str | Path, **kwargs) -> None:
        self.model.save_pretrained(directory, norm_stats=self.norm_stats, tokenizer=self.tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> "PixelVLAPolicy":
        model = PixelVLA.from_pretrained(directory)
        return cls(model, load_tokenizer(directory), load_norm_stats(directory), device)

    @classmethod
    def from_openvla(cls, directory: str | Path, config: Optional[PixelVLAConfig] = None,
                     device: str = "cpu", dtype: torch.dtype = torch.float32) -> "PixelVLAPolicy":
        """Import an OpenVLA / Prismatic checkpoint directory (its tokenizer and norm stats included)."""
        model, norm_stats = from_openvla(directory, config=config, dtype=dtype)
        return cls(model, load_tokenizer(directory), norm_stats, device)


def load_policy(path: str | os.PathLike, backend: Optional[str] = None, device: Optional[str] = None,
                dtype: Optional[str] = None, **runtime_kwargs) -> RuntimePolicy:
    """A checkpoint or bundle directory -> RuntimePolicy (config, tokenizer and norm stats from the same
    directory; the runtime from load_runtime with the same arguments)."""
    path = Path(path)
    runtime = load_runtime(path, backend=backend, device=device, dtype=dtype, **runtime_kwargs)
    try:
        # the torch runtime built its model from config.json: use that config rather than read it again
        config = runtime.config if runtime.config is not None else PixelVLAConfig.from_json_file(path / CONFIG_FILE)
        tokenizer = load_tokenizer(path)
        norm_stats = load_norm_stats(path)
    except (FileNotFoundError, ValueError) as e:
        raise BundleError(path, f"cannot build the pre/post-processing: {e}") from e
    return RuntimePolicy(runtime, PixelVLAProcessor(config, tokenizer, norm_stats))
