"""A trained policy as the driver of DAgger episodes (see run_expert_episode).

The policy is prompted the way `pixelvla-eval --operator prompt --mask ground_truth` prompts it: one
point clicked on the target in the first frame, kept for the whole episode, plus the target's mask at
every step (or, with `prompted=False`, the instruction alone). Each call returns the first action of the
predicted chunk, the action the stack runs first.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pixelvla_training.sim.prompts import click_pixel


class PolicyDriver:
    """`driver(obs) -> (7,)` Bridge action from a checkpoint directory; `reset(obs)` at each episode start."""

    def __init__(self, model_dir: str | Path, unnorm_key: str = "bridge_orig", prompted: bool = True):
        from pixelvla_model import PixelVLAPolicy

        self.policy = PixelVLAPolicy.from_pretrained(model_dir)
        self.unnorm_key, self.prompted = unnorm_key, prompted
        self.point = None

    def reset(self, obs: dict) -> None:
        from pixelvla_model import Point

        u, v = click_pixel(obs)
        self.point = Point(u + 0.5, v + 0.5)  # pixel centre -> continuous image coordinates

    def __call__(self, obs: dict) -> np.ndarray:
        state = np.array([*obs["joint_positions"], obs["gripper_position"]], np.float32)
        prompt = dict(prompts=[self.point], mask=obs["masks"][obs["target_object"]]) if self.prompted else {}
        chunk = self.policy.predict(obs["rgb"], obs["instruction"], proprio=state, unnorm_key=self.unnorm_key, **prompt)
        return np.asarray(chunk[0], dtype=np.float64)
