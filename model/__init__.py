"""pixelvla_model: the PixelVLA network, its configs, checkpoint I/O and inference runtimes (no ROS).

Public API:
    PixelVLAConfig                 configuration.py  (presets "tiny", "small", "prismatic-7b")
    PixelVLA, example_inputs       modeling.py       (the network; input_names(config) = its tensor inputs)
    Point, Line, Box, Mask         prompts.py        (visual prompts; batch_prompts -> fixed-shape tensors)
    PixelVLAProcessor, PixelVLAPolicy   processing.py
    save_pretrained, load_model    checkpoint.py
    from_openvla                   openvla_import.py
    build_byte_tokenizer, load_tokenizer   tokenizer.py
"""
from pathlib import Path

from .checkpoint import load_model, save_pretrained
from .configuration import PRESETS, PROMPT_TYPE_IDS, PixelVLAConfig
from .modeling import INPUT_NAMES, PixelVLA, PixelVLAOutput, example_inputs, input_names
from .processing import PROMPT_TEMPLATE, PixelVLAPolicy, PixelVLAProcessor, unnormalize_actions
from .prompts import (BACKGROUND, FOREGROUND, PLACE, Box, Line, Mask, Point, batch_prompts, empty_prompt_tensors,
                      validate_prompt)
from .tokenizer import build_byte_tokenizer, load_tokenizer

# The project's own small checkpoint, trained in the simulator on a CPU (docs/results.md): the default
# model of the policy node. It reads the robot state (/joint_states), runs the whole stack and completes
# about 12 % of the simulated episodes when prompted; DEFAULT_CHECKPOINT_NOTE is what the node and the demo
# tell the user.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "pixelvla-sim-tiny"
DEFAULT_CHECKPOINT_NOTE = ("trained in simulation on a CPU; it completes about 12 % of the simulated tasks with a "
                           "target and a place prompt (docs/results.md) - pass a model directory or engine bundle "
                           "for a real policy")


def from_openvla(directory, config=None, dtype=None):
    """Import an OpenVLA/Prismatic checkpoint directory -> (PixelVLA, norm_stats). See openvla_import."""
    from .openvla_import import from_openvla as _from_openvla

    import torch

    return _from_openvla(directory, config=config, dtype=dtype or torch.float32)


__all__ = [
    "PixelVLAConfig", "PRESETS", "PROMPT_TYPE_IDS", "PixelVLA", "PixelVLAOutput", "INPUT_NAMES", "input_names", "example_inputs",
    "Point", "Line", "Box", "Mask", "FOREGROUND", "BACKGROUND", "PLACE", "batch_prompts", "empty_prompt_tensors",
    "validate_prompt",
    "PixelVLAProcessor", "PixelVLAPolicy", "PROMPT_TEMPLATE", "unnormalize_actions",
    "save_pretrained", "load_model", "from_openvla", "build_byte_tokenizer", "load_tokenizer", "DEFAULT_CHECKPOINT",
    "DEFAULT_CHECKPOINT_NOTE",
]
