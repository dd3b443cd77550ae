"""Small datasets written by the tests themselves (synthetic simulator episodes in the npz format)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_episode(rng: np.random.Generator, steps: int = 12, size: int = 32, instruction: str = "put the red cube on the plate"):
    """An episode in the simulator's format: a red square moving right, actions that follow it, and a grey
    plate (the destination) in the bottom-right corner."""
    from pixelvla_training.episodes.dataset import FORMAT, VERSION, Episode
    from pixelvla_sim.prompts import mask_box, mask_point

    images = np.full((steps, size, size, 3), 90, np.uint8)
    masks = np.zeros((steps, size, size), bool)
    x0, y0 = int(rng.integers(2, size // 2)), int(rng.integers(2, size - 8))
    for t in range(steps):
        x = min(size - 6, x0 + t)
        masks[t, y0:y0 + 5, x:x + 5] = True
        images[t][masks[t]] = (200, 30, 30)
    plate = np.zeros((size, size), bool)
    plate[size - 7:size - 1, size - 9:size - 1] = True
    images[:, plate] = (220, 220, 220)
    actions = np.zeros((steps, 7), np.float32)
    actions[:, 0] = rng.normal(0.01, 0.01, steps)
    actions[:, 2] = rng.normal(0.0, 0.02, steps)
    actions[:, 6] = (np.arange(steps) < steps // 2).astype(np.float32)
    arrays = {
        "images": images, "actions": actions,
        "joint_positions": np.zeros((steps, 6), np.float32), "gripper_positions": np.full(steps, 0.03, np.float32),
        "tcp_poses": np.tile(np.array([0.3, 0, 0.2, 1, 0, 0, 0], np.float32), (steps, 1)),
        "target_masks": masks,
        "prompt_points": np.stack([mask_point(m) for m in masks]).astype(np.float32),
        "prompt_boxes": np.stack([mask_box(m) for m in masks]).astype(np.float32),
        "step_success": np.zeros(steps, bool),
        "camera_intrinsics": np.array([30, 30, 16, 16], np.float32),
        "camera_pose": np.array([0, 0, 1, 1, 0, 0, 0], np.float32),
        "destination_mask": plate,
    }
    meta = {"format": FORMAT, "version": VERSION, "task": "put_red_cube_on_plate", "seed": int(rng.integers(1e6)),
            "instruction": instruction, "target_object": "cube_0", "destination": "plate", "prompted": False,
            "success": True, "num_steps": steps, "image_size": [size, size], "camera": "third_person",
            "control_period": 0.2}
    return Episode(arrays, meta)


def write_sim_dataset(root: Path, episodes: int = 4, steps: int = 12, size: int = 32, seed: int = 0) -> Path:
    from pixelvla_training.episodes.dataset import DatasetWriter

    rng = np.random.default_rng(seed)
    writer = DatasetWriter(root)
    for i in range(episodes):
        writer.add(synthetic_episode(rng, steps, size, "put the red cube on the plate" if i % 2 else "put this cube in the bowl"))
    return root




def tiny_train_config(data_dir: Path, out: Path, stage: str = "cat", **kw) -> dict:
    """A training config dict for a very small model (a step takes tens of ms)."""
    cfg = {
        "stage": stage, "output_dir": str(out), "lora_r": 4,
        "model": {"preset": "tiny", "overrides": {"image_size": 28, "llm_layers": 1, "dino_layers": 2,
                                                  "siglip_layers": 3, "pixel_layers": [1, 2]}, "seed": 0},
        "data": {"sources": [{"type": "sim", "path": str(data_dir)}], "unnorm_key": "bridge_orig",
                 "prompts": {"text_only": 0.3, "first_frame": 0.5} if stage == "pue" else None},
        "optim": {"lr": 1e-2, "warmup_steps": 2}, "steps": 6, "batch_size": 4, "grad_accum": 1,
        "checkpoint_every": 2, "log_every": 1, "seed": 0,
    }
    cfg.update(kw)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path
