"""VisualPrompt messages -> the model's prompt objects (pixel coordinates of the prompted image).

Validation that needs the image (inside it, non-degenerate, non-empty mask) happens in
`pixelvla_model.validate_prompt`; this module checks what the message alone can get wrong.
"""
from __future__ import annotations

import math

from pixelvla_ros.image_conversions import image_to_mono
from pixelvla_ros.msg import VisualPrompt

TYPE_NAMES = {VisualPrompt.POINT: "POINT", VisualPrompt.LINE: "LINE", VisualPrompt.BOX: "BOX", VisualPrompt.MASK: "MASK"}
MAX_POINTS = 64


class PromptError(ValueError):
    """A prompt that cannot be used; the message says why."""


def is_clear(msg: VisualPrompt) -> bool:
    """A POINT prompt without points and without a mask clears the current prompt."""
    return msg.type == VisualPrompt.POINT and not msg.points and msg.mask.width == 0


def prompt_from_msg(msg: VisualPrompt, image_hw: tuple[int, int], place: bool = False) -> list:
    """The model prompts of `msg` for an image of (height, width) px; PromptError when unusable.

    place: `msg` came on /pixelvla/place_prompt: it marks where the target goes, and every prompt made from it
    carries the PLACE label. On the target topic POINT labels are 1 (foreground) or 0 (background).
    """
    from pixelvla_model import PLACE, Box, Line, Mask, Point, validate_prompt  # torch: a slow import

    where = f"prompt {msg.prompt_id or '(no id)'}"
    if msg.type not in TYPE_NAMES:
        raise PromptError(f"{where}: unknown type {msg.type}; use POINT, LINE, BOX or MASK")
    if len(msg.points) > MAX_POINTS:
        raise PromptError(f"{where}: {len(msg.points)} points, at most {MAX_POINTS}")
    xy = [(float(p.x), float(p.y)) for p in msg.points]
    if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in xy):
        raise PromptError(f"{where}: a point is NaN or infinite")
    labels = list(msg.labels) or [1] * len(xy)
    if msg.type == VisualPrompt.POINT and len(labels) != len(xy):
        raise PromptError(f"{where}: {len(labels)} labels for {len(xy)} points")
    if msg.type == VisualPrompt.POINT:
        allowed = {1} if place else {0, 1}
        if set(labels) - allowed:
            raise PromptError(f"{where}: labels {sorted(set(labels) - allowed)}; " + (
                "a place prompt's points are all places (label 1 or no labels)" if place else
                "use 1 (foreground) or 0 (background); where the target goes belongs on /pixelvla/place_prompt"))
        if not xy:
            raise PromptError(f"{where}: a POINT prompt needs at least one point")
        prompts = [Point(x, y, int(label)) for (x, y), label in zip(xy, labels)]
    elif msg.type == VisualPrompt.LINE:
        if len(xy) < 2:
            raise PromptError(f"{where}: a LINE needs at least 2 points, got {len(xy)}")
        prompts = [Line(xy)]
    elif msg.type == VisualPrompt.BOX:
        if len(xy) != 2:
            raise PromptError(f"{where}: a BOX needs exactly 2 corner points, got {len(xy)}")
        (xa, ya), (xb, yb) = xy
        prompts = [Box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))]
    else:
        try:
            mask = image_to_mono(msg.mask)
        except ValueError as exc:
            raise PromptError(f"{where}: {exc}") from None
        if mask.shape != tuple(image_hw):
            raise PromptError(f"{where}: mask is {mask.shape[1]}x{mask.shape[0]}, the image {image_hw[1]}x{image_hw[0]}")
        prompts = [Mask(mask > 0)]
    for index, prompt in enumerate(prompts):
        if place:
            prompt.label = PLACE
        try:
            validate_prompt(prompt, image_hw, index)
        except ValueError as exc:
            raise PromptError(f"{where} ({TYPE_NAMES[msg.type]}): {exc}") from None
    return prompts
