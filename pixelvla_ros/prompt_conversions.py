"""VisualPrompt messages <-> the model's prompt objects (pixel coordinates of the prompted image).

Validation that needs the image (inside it, non-degenerate, non-empty mask) happens in
`pixelvla_model.validate_prompt`; this module checks what the message alone can get wrong.

`check_prompt` is the one validation the policy and the segmenter both apply when a prompt arrives, and
`PromptSlots` keeps the policy's target and place prompts: a refused prompt changes nothing, so both
nodes go on with the same (previous) target.
"""
from __future__ import annotations

import math

from geometry_msgs.msg import Point as PointMsg
from std_msgs.msg import Header

from pixelvla_model import PLACE, Box, Line, Mask, Point, validate_prompt
from pixelvla_ros.image_conversions import image_to_mono
from pixelvla_ros.msg import VisualPrompt

TYPE_NAMES = {VisualPrompt.POINT: "POINT", VisualPrompt.LINE: "LINE", VisualPrompt.BOX: "BOX", VisualPrompt.MASK: "MASK"}
MAX_POINTS = 64


class PromptError(ValueError):
    """A prompt that cannot be used; the message says why."""


def is_clear(msg: VisualPrompt) -> bool:
    """A POINT prompt without points and without a mask clears the current prompt."""
    return msg.type == VisualPrompt.POINT and not msg.points and msg.mask.width == 0


def prompt_count(msg: VisualPrompt) -> int:
    """Model prompts (slots of config.max_prompts) that `msg` makes: one per POINT point, else one."""
    return len(msg.points) if msg.type == VisualPrompt.POINT else 1


def prompt_from_msg(msg: VisualPrompt, image_hw: tuple[int, int] | None, place: bool = False) -> list:
    """The model prompts of `msg` for an image of (height, width) px; PromptError when unusable.

    place: `msg` came on /pixelvla/place_prompt: it marks where the target goes, and every prompt made from it
    carries the PLACE label. On the target topic POINT labels are 1 (foreground) or 0 (background).
    image_hw None (no frame seen yet): only what the message alone can get wrong is checked.
    """
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
        if image_hw is not None and mask.shape != tuple(image_hw):
            raise PromptError(f"{where}: mask is {mask.shape[1]}x{mask.shape[0]}, the image {image_hw[1]}x{image_hw[0]}")
        prompts = [Mask(mask > 0)]
    for index, prompt in enumerate(prompts):
        if place:
            prompt.label = PLACE
        if image_hw is None:
            continue
        try:
            validate_prompt(prompt, image_hw, index)
        except ValueError as exc:
            raise PromptError(f"{where} ({TYPE_NAMES[msg.type]}): {exc}") from None
    return prompts


def msg_from_prompt(prompt: Point | Box, header: Header, prompt_id: str) -> VisualPrompt:
    """The VisualPrompt of a model Point or Box drawn on the image of `header`: a BOX, or a POINT whose label is
    the point's (a PLACE point becomes a place prompt's point, label 1: it belongs on /pixelvla/place_prompt)."""
    if isinstance(prompt, Box):
        corners = [PointMsg(x=float(prompt.x0), y=float(prompt.y0)), PointMsg(x=float(prompt.x1), y=float(prompt.y1))]
        return VisualPrompt(header=header, type=VisualPrompt.BOX, points=corners, prompt_id=prompt_id)
    if isinstance(prompt, Point):
        return VisualPrompt(header=header, type=VisualPrompt.POINT, points=[PointMsg(x=float(prompt.x), y=float(prompt.y))],
                            labels=[1 if prompt.label == PLACE else int(prompt.label)], prompt_id=prompt_id)
    raise TypeError(f"{type(prompt).__name__}: only points and boxes are made into messages here")


def words_to_accept(target: VisualPrompt | None, place: VisualPrompt | None) -> list[tuple[bool, VisualPrompt]]:
    """What accepting the policy's words' prompts publishes, in order, as (on the place topic, message): the
    place first, and only when it was proposed on the target's frame, then the target; nothing without one."""
    if target is None:
        return []
    same_frame = place is not None and place.header.stamp == target.header.stamp
    return [(True, place)] * same_frame + [(False, target)]


def check_prompt(msg: VisualPrompt, image_hw: tuple[int, int] | None, place: bool = False, *, max_prompts: int = 0,
                 in_use: int = 0, place_prompts: bool = True) -> list:
    """The model prompts of a non-clearing `msg` if the model can take it, else PromptError saying why.

    The message's own checks, `prompt_count(msg) + in_use` (the other topic's prompts in force) against
    `max_prompts` (the model's config.max_prompts; 0 = no limit), place prompts only for a model trained with
    them (`place_prompts`), and, where the frame size `image_hw` (H, W) is known, the coordinates.
    """
    where = f"{'place prompt' if place else 'prompt'} {msg.prompt_id or '(no id)'}"
    if place and not place_prompts:
        raise PromptError(f"{where}: this model was not trained with place prompts (config.place_prompts is false)")
    count = prompt_count(msg)
    if max_prompts and count + in_use > max_prompts:
        other = f" with the {in_use} of the {'target' if place else 'place'} prompt in force" if in_use else ""
        raise PromptError(f"{where}: {count} prompts (one per point){other}, but the model takes at most "
                          f"{max_prompts} (config.max_prompts)")
    return prompt_from_msg(msg, image_hw, place=place)


class PromptSlots:
    """The target and place prompts in force (the policy's): a refused prompt changes nothing.

    A prompt is checked when it arrives (`offer`, check_prompt) against the latest frame size; one that came
    before any frame is checked against the first one (`set_image_size`), and if refused then, the prompt it
    replaced is back in force. A clearing message (is_clear) empties its slot. `prompts()` lists the model
    prompts for the current frame size, target first.
    """

    def __init__(self, max_prompts: int = 0, place_prompts: bool = True) -> None:
        self.max_prompts, self.place_prompts = max_prompts, place_prompts
        self.image_hw: tuple[int, int] | None = None
        self.msg: dict[bool, VisualPrompt | None] = {False: None, True: None}  # place? -> message in force
        self.converted: dict[bool, list] = {False: [], True: []}  # its model prompts for image_hw
        self.previous: dict[bool, VisualPrompt | None] = {False: None, True: None}  # replaced by an unchecked one

    def count(self, place: bool) -> int:
        msg = self.msg[place]
        return prompt_count(msg) if msg is not None else 0

    def offer(self, msg: VisualPrompt, place: bool = False) -> None:
        """Put `msg` in force on its slot, or raise PromptError and change nothing."""
        if is_clear(msg):
            self.msg[place], self.converted[place], self.previous[place] = None, [], None
            return
        converted = self._check(msg, place)
        self.previous[place] = self.msg[place] if self.image_hw is None else None
        self.msg[place], self.converted[place] = msg, converted

    def set_image_size(self, image_hw: tuple[int, int]) -> list[str]:
        """Frames are (H, W) from now on: re-check the prompts in force; the reasons of those refused."""
        if tuple(image_hw) == self.image_hw:
            return []
        self.image_hw = tuple(image_hw)
        errors = []
        for place in (False, True):
            for msg in (self.msg[place], self.previous[place]):
                self.msg[place], self.converted[place] = None, []
                if msg is None:
                    continue
                try:
                    self.msg[place], self.converted[place] = msg, self._check(msg, place)
                    break
                except PromptError as exc:
                    errors.append(str(exc))
            self.previous[place] = None
        return errors

    def prompts(self) -> list:
        return self.converted[False] + self.converted[True]

    def _check(self, msg: VisualPrompt, place: bool) -> list:
        converted = check_prompt(msg, self.image_hw, place, max_prompts=self.max_prompts,
                                 in_use=self.count(not place), place_prompts=self.place_prompts)
        return converted if self.image_hw is not None else []
