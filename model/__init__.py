"""pixelvla_model: the PixelVLA network, its configs, checkpoint I/O and inference runtimes (no ROS).

Public API:
    PixelVLAConfig                 configuration.py  (presets "tiny", "small", "prismatic-7b")
    Point, Line, Box, Mask         prompts.py        (visual prompts; batch_prompts -> fixed-shape tensors)
    PixelVLA, example_inputs       modeling.py       (the network; input_names(config) = its tensor inputs)
    save_pretrained, load_model    checkpoint.py, modeling.py
    PixelVLAProcessor              processing.py     (pre/post-processing shared by every runtime)
    PixelVLAPolicy                 runtime/policy.py (processor + the torch runtime)
    from_openvla                   openvla_import.py
    build_byte_tokenizer, add_words, load_tokenizer   tokenizer.py

The configuration and the prompt types load with the package; everything that needs torch or transformers
loads on first use of its name, so `from pixelvla_model import Point` stays fast (ROS nodes, tools).

Modules import each other one way only (test/model/test_imports.py checks it), bottom to top:
configuration, prompts, files, tokenizer -> checkpoint -> modeling -> openvla_import, processing ->
runtime (policy on top) -> export, runtime.bench.
"""
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from .configuration import PRESETS, PROMPT_TYPE_IDS, PixelVLAConfig
from .prompts import (BACKGROUND, FOREGROUND, PLACE, Box, Line, Mask, Point, batch_prompts, empty_prompt_tensors,
                      prompt_anchor, validate_prompt)

if TYPE_CHECKING:
    from .checkpoint import save_pretrained
    from .modeling import INPUT_NAMES, PixelVLA, PixelVLAOutput, example_inputs, input_names, load_model
    from .openvla_import import from_openvla
    from .processing import PROMPT_TEMPLATE, PixelVLAProcessor, unnormalize_actions
    from .runtime.policy import PixelVLAPolicy
    from .tokenizer import add_words, build_byte_tokenizer, load_tokenizer

# The project's own small checkpoint, trained in the simulator on a CPU (docs/results.md): the default
# model of the policy node. It reads the robot state (/joint_states) and places its prompts from the gripper
# through the camera's calibration (/camera/camera_info, /camera/pose); prompted it completes about nine
# episodes in ten, text-only more than half of the colour tasks; DEFAULT_CHECKPOINT_NOTE is what the node and
# the demo tell the user.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "pixelvla-sim-tiny"
DEFAULT_CHECKPOINT_NOTE = ("trained in simulation on a CPU; through the stack it completes 89 % of the "
                           "episodes with a target and a place prompt (91 % of the disambiguation ones) and 58 % of "
                           "the colour tasks from the words' prompts (docs/results.md) - pass a model directory or "
                           "engine bundle for a real policy")

# name -> the module (relative to this package) that defines it, imported on first access (PEP 562)
_LAZY = {
    "PixelVLA": "modeling", "PixelVLAOutput": "modeling", "INPUT_NAMES": "modeling", "input_names": "modeling",
    "example_inputs": "modeling", "load_model": "modeling",
    "save_pretrained": "checkpoint",
    "PixelVLAProcessor": "processing", "PROMPT_TEMPLATE": "processing", "unnormalize_actions": "processing",
    "PixelVLAPolicy": "runtime.policy",
    "from_openvla": "openvla_import",
    "build_byte_tokenizer": "tokenizer", "add_words": "tokenizer", "load_tokenizer": "tokenizer",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "PixelVLAConfig", "PRESETS", "PROMPT_TYPE_IDS", "PixelVLA", "PixelVLAOutput", "INPUT_NAMES", "input_names", "example_inputs",
    "Point", "Line", "Box", "Mask", "FOREGROUND", "BACKGROUND", "PLACE", "batch_prompts", "empty_prompt_tensors",
    "prompt_anchor",
    "validate_prompt",
    "PixelVLAProcessor", "PixelVLAPolicy", "PROMPT_TEMPLATE", "unnormalize_actions",
    "save_pretrained", "load_model", "from_openvla", "build_byte_tokenizer", "add_words", "load_tokenizer", "DEFAULT_CHECKPOINT",
    "DEFAULT_CHECKPOINT_NOTE",
]
