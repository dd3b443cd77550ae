"""Visual prompts from the operator's gestures on the console's image, checked before anything is published.

The page reports a gesture in image pixels of the frame it shows (x = column, y = row, origin at the top-left
pixel's corner: VisualPrompt's convention, so a click in the middle of pixel (c, r) is (c + 0.5, r + 0.5)):
- a click -> POINT (one point, label 1: on the target, or the place);
- a drag -> BOX (its two corners, ordered top-left then bottom-right, clamped to the image);
- the line tool's clicks -> LINE (the vertices in order, clamped to the image).
`marks` says what the prompt marks: "target" (the object, pixelvla/prompt) or "place" (where it goes,
pixelvla/place_prompt). Which movement is a click and which a drag is the page's call (a few screen pixels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MARKS = ("target", "place")
KINDS = ("point", "box", "line")
MAX_POINTS = 64  # a LINE's vertices at most; the policy refuses more (prompt_conversions.MAX_POINTS)
MIN_BOX_SIDE = 1.0  # px: a thinner box is a slip of the mouse, not a box


class GestureError(ValueError):
    """A gesture that makes no prompt; the message says why, for the operator."""


@dataclass(frozen=True)
class PromptSpec:
    """A VisualPrompt's content: the node adds the header (the shown frame's) and the prompt id."""

    marks: str                                  # "target" or "place"
    kind: str                                   # "point", "box" or "line"
    points: tuple[tuple[float, float], ...]     # image pixels, corner origin
    labels: tuple[int, ...] = ()                # POINT: one 1 per point; empty otherwise

    def to_json(self) -> dict:
        return {"marks": self.marks, "kind": self.kind, "points": [list(p) for p in self.points]}


def build_prompt(marks: str, kind: str, points, width: int, height: int) -> PromptSpec:
    """The prompt the gesture `kind` through `points` ([[x, y], ...] image px) makes on a width x height image."""
    if marks not in MARKS:
        raise GestureError(f"marks must be one of {MARKS}, got {marks!r}")
    if kind not in KINDS:
        raise GestureError(f"kind must be one of {KINDS}, got {kind!r}")
    try:
        xy = [(float(x), float(y)) for x, y in points]
    except (TypeError, ValueError):
        raise GestureError("points must be [[x, y], ...] numbers") from None
    if not all(math.isfinite(x) and math.isfinite(y) for x, y in xy):
        raise GestureError("a point is not a finite number")

    def clamp(x: float, y: float) -> tuple[float, float]:
        return min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))

    if kind == "point":
        if len(xy) != 1:
            raise GestureError(f"a point prompt is one click, got {len(xy)} points")
        (x, y), = xy
        if not (0 <= x < width and 0 <= y < height):
            raise GestureError(f"click ({x:.1f}, {y:.1f}) is outside the {width}x{height} image")
        return PromptSpec(marks, kind, ((x, y),), (1,))
    if kind == "box":
        if len(xy) != 2:
            raise GestureError(f"a box is two corners, got {len(xy)} points")
        (xa, ya), (xb, yb) = clamp(*xy[0]), clamp(*xy[1])
        x0, y0, x1, y1 = min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)
        if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
            raise GestureError("the box is thinner than a pixel: drag across the object, or click for a point")
        return PromptSpec(marks, kind, ((x0, y0), (x1, y1)))
    vertices: list[tuple[float, float]] = []
    for point in map(lambda p: clamp(*p), xy):
        if not vertices or point != vertices[-1]:  # a double click repeats its last vertex
            vertices.append(point)
    if len(vertices) < 2:
        raise GestureError("a line needs at least two different points")
    if len(vertices) > MAX_POINTS:
        raise GestureError(f"a line has at most {MAX_POINTS} points, got {len(vertices)}")
    return PromptSpec(marks, kind, tuple(vertices))
