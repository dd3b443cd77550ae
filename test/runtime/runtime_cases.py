"""Test inputs shared by the runtime tests: one prompt case per type, and the parity tolerances."""
from __future__ import annotations

import numpy as np
import torch

from pixelvla_model.modeling import example_inputs
from pixelvla_model.prompts import Box, Line, Mask, Point, batch_prompts, empty_prompt_tensors

# ONNX Runtime vs torch, fp32, same weights (measured: ~2e-8 on tiny, ~2e-7 on small).
PARITY_ATOL = {"tiny": 1e-5, "small": 1e-4}

S = 224


def _mask() -> np.ndarray:
    m = np.zeros((S, S), bool)
    m[30:120, 90:200] = True
    return m


PROMPT_CASES = {
    "none": None,
    "point": [Point(50.0, 60.0)],
    "point-background": [Point(180.0, 20.0, label=0)],
    "line": [Line([(10.0, 10.0), (100.0, 40.0), (150.0, 200.0)])],
    "box": [Box(30.0, 40.0, 120.0, 160.0)],
    "mask": [Mask(_mask())],
    "all-types": [Point(50.0, 60.0), Line([(10.0, 10.0), (200.0, 100.0)]), Box(30.0, 40.0, 120.0, 160.0),
                  Mask(_mask())],
}


def make_batch(config, case: str, text_len: int = 40, seed: int = 0) -> dict[str, torch.Tensor]:
    batch = example_inputs(config, batch_size=1, text_len=text_len, seed=seed)
    prompts = PROMPT_CASES[case]
    if prompts is None:  # no prompt and no target mask: the network's "nothing given" path
        batch.update(empty_prompt_tensors(config, 1))
        batch["target_mask"] = torch.zeros(1, S, S)
    else:
        batch.update(batch_prompts([prompts], (S, S), config))
    return batch
