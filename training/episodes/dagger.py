"""A trained policy as the driver of in-process episodes: rollouts and DAgger (see run_expert_episode).

How it is prompted:
- prompted (default): as `pixelvla-eval --operator prompt --mask ground_truth` prompts it, one point clicked on
  the target in the first frame, kept for the whole episode, plus the target's mask at every step; with
  `place=True` (`--place-prompt`) also a place point clicked on the destination in the first frame;
- `prompted=False`: the instruction alone;
- `words=True` (`--words-prompt`): no operator. The model's words point in the first frame
  (PixelVLAPolicy.words_prompts); the simulator's masks stand in for a segmenter given the target's box (the
  object with the most pixels in it: pixelvla_sim.prompts.segment_box); the policy then runs as if prompted,
  with a click on that object, its mask at every step (the segmenter's tracking) and the words' place point.
A model that places the prompts from the TCP (config.prompt_offsets) gets the episode's calibrated camera's
map from a click to the TCP, on the plane a cube's centre rests at.

How it acts: `chunk(obs)` predicts the whole chunk (in-process rollouts execute it through the chunk
executor). A call `driver(obs)` returns the action of control step obs["step"] as the stack runs them: a new
chunk every `steps_per_inference` steps (the robot file's), its actions in turn. DAgger episodes execute it
with `TabletopEnv.step_ee_delta`, through the same executor; a step the expert drives does not reset the
count, and the first call past the chunk's last due action asks the policy again.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pixelvla_model import PLACE, Point
from pixelvla_robots.camera import image_xy, plane_click_map
from pixelvla_sim.prompts import click_pixel, segment_box
from pixelvla_sim.tasks import CUBE_HALF


class PolicyDriver:
    """`driver(obs) -> (7,)` Bridge action from a checkpoint directory; `reset(obs)` at each episode start."""

    def __init__(self, model_dir: str | Path, unnorm_key: str = "bridge_orig", prompted: bool = True,
                 place: bool = False, steps_per_inference: int = 1, words: bool = False):
        from pixelvla_model import PixelVLAPolicy

        self.policy = PixelVLAPolicy.from_pretrained(model_dir)
        if place and not self.policy.config.place_prompts:
            raise ValueError(f"{model_dir}: this model was not trained with place prompts (config.place_prompts)")
        if not 1 <= steps_per_inference <= self.policy.config.chunk_size:
            raise ValueError(f"steps_per_inference {steps_per_inference}: the model's chunks hold 1 to "
                             f"{self.policy.config.chunk_size} actions")
        if words and not self.policy.config.text_grounding:
            raise ValueError(f"{model_dir}: this model has no text grounding (config.text_grounding) to prompt from")
        self.unnorm_key, self.words = unnorm_key, words
        self.prompted, self.place = prompted or words, place and prompted and not words
        self.steps_per_inference = steps_per_inference
        self.prompts: list = []
        self.target: str | None = None  # the object whose mask the policy gets
        self.plan: tuple[int, np.ndarray] | None = None  # (the step it was asked at, its chunk)

    def reset(self, obs: dict) -> None:
        self.plan = None
        if self.words:
            box, *place = self.policy.words_prompts(obs["rgb"], obs["instruction"])
            self.target = segment_box(obs, box)
            self.prompts = [Point(*image_xy(click_pixel(obs, self.target)).tolist()) if self.target else box, *place]
            return
        self.target = obs["target_object"]
        self.prompts = [Point(*image_xy(click_pixel(obs)).tolist())]
        if self.place:
            self.prompts.append(Point(*image_xy(click_pixel(obs, obs["destination"])).tolist(), PLACE))

    def chunk(self, obs: dict) -> np.ndarray:
        """(N, 7) float64 action chunk predicted from `obs` (Bridge units)."""
        state = np.array([*obs["joint_positions"], obs["gripper_position"]], np.float32)
        prompt = {}
        if self.prompted:
            prompt = dict(prompts=self.prompts, mask=obs["masks"][self.target] if self.target else None)
        if self.policy.config.prompt_offsets:
            prompt["click_to_tcp"] = plane_click_map(obs["camera"], CUBE_HALF, obs["tcp_position"])
        chunk = self.policy.predict(obs["rgb"], obs["instruction"], proprio=state, unnorm_key=self.unnorm_key, **prompt)
        return np.asarray(chunk, dtype=np.float64).reshape(-1, 7)

    def __call__(self, obs: dict) -> np.ndarray:
        """(7,) the action of control step obs["step"]."""
        step = int(obs["step"])
        if self.plan is None or not 0 <= step - self.plan[0] < self.steps_per_inference:
            self.plan = (step, self.chunk(obs))
        return self.plan[1][step - self.plan[0]]
