"""Visual prompts sampled from a target mask, as PixelVLA's training data (points, lines, boxes, masks),
plus text-only samples so the policy also acts without any prompt.

Per sample, with a generator seeded from (seed, epoch, index) by the dataset:
- with probability ``text_only``: no prompt and no target mask (the pixel encoder sees its "no target"
  embedding, the prompt encoder empty slots) - the instruction alone must do;
- otherwise 1 .. ``max_prompts`` prompts, each of a type drawn with ``type_weights``:
  point: a pixel inside the mask (jittered within the mask); line: a polyline of 2-4 mask pixels ordered
  along the mask's main axis (a scribble over the object); box: the mask's bounding box, each side moved by
  up to ``box_jitter`` of its size; mask: the mask itself;
  each prompt is drawn from the mask of the *first* frame of the episode with probability ``first_frame``
  (an operator clicks once, at the start, and the click stays while the object moves), else from the
  current frame's mask;
- the target mask (current frame, as a tracking segmenter delivers it) is shown with probability
  ``show_mask`` when prompted;
- where the episode has a place mask (where the target goes, e.g. the plate, in the first frame), one more
  prompt of a type drawn the same way is sampled from it with probability ``place`` when prompted, labelled
  PLACE (2); the model must have ``config.place_prompts`` and ``max_prompts + 1`` slots.
An empty mask (the target hidden) gives no prompt from that mask; a sample whose masks are all empty is
text-only. Fixed prompts (annotations that come with their own prompts) are used as given.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from pixelvla_model import FOREGROUND, PLACE, Box, Line, Mask, Point
from pixelvla_robots.camera import image_xy


@dataclass
class PromptSampler:
    text_only: float = 0.3
    max_prompts: int = 1
    type_weights: dict = field(default_factory=lambda: {"point": 0.4, "line": 0.15, "box": 0.25, "mask": 0.2})
    first_frame: float = 0.0
    show_mask: float = 1.0
    box_jitter: float = 0.1
    place: float = 0.0

    def __post_init__(self):
        bad = set(self.type_weights) - {"point", "line", "box", "mask"}
        if bad:
            raise ValueError(f"unknown prompt types {sorted(bad)}; use point, line, box, mask")
        if not all(0.0 <= p <= 1.0 for p in (self.text_only, self.first_frame, self.show_mask, self.place)):
            raise ValueError("text_only, first_frame, show_mask and place are probabilities in [0, 1]")
        if self.max_prompts < 1:
            raise ValueError("max_prompts must be >= 1")
        w = np.array([max(0.0, float(self.type_weights.get(k, 0.0))) for k in ("point", "line", "box", "mask")])
        if w.sum() <= 0:
            raise ValueError("type_weights must give some prompt type a positive weight")
        self._p = w / w.sum()

    def __call__(self, rng: np.random.Generator, mask: Optional[np.ndarray], first_mask: Optional[np.ndarray] = None,
                 fixed_prompts: Optional[list] = None,
                 place_mask: Optional[np.ndarray] = None) -> tuple[list, Optional[np.ndarray]]:
        """-> (prompts, target mask to show or None)."""
        text_only = rng.random() < self.text_only
        n = int(rng.integers(1, self.max_prompts + 1))
        use_first = [rng.random() < self.first_frame for _ in range(n)]
        types = rng.choice(4, size=n, p=self._p)
        show = rng.random() < self.show_mask
        # drawn after the draws above, so that `place` = 0 reproduces the samples of datasets without places
        with_place = self.place > 0 and place_mask is not None and np.any(place_mask) and rng.random() < self.place
        if text_only:
            return [], None
        has_mask = mask is not None and bool(np.any(mask))
        if fixed_prompts:  # annotations: a random subset of the labelled prompts
            pick = sorted(rng.choice(len(fixed_prompts), size=min(n, len(fixed_prompts)), replace=False).tolist())
            return [fixed_prompts[i] for i in pick], (mask if show and has_mask else None)
        prompts = []
        for k in range(n):
            m = first_mask if (use_first[k] and first_mask is not None) else mask
            if m is None or not np.any(m):
                continue
            prompts.append(sample_prompt(rng, np.asarray(m, bool), ("point", "line", "box", "mask")[types[k]],
                                         self.box_jitter))
        if with_place:
            kind = ("point", "line", "box", "mask")[rng.choice(4, p=self._p)]
            prompts.append(sample_prompt(rng, np.asarray(place_mask, bool), kind, self.box_jitter, label=PLACE))
        shown = mask if (show and has_mask) else None
        return prompts, shown


def sample_prompt(rng: np.random.Generator, mask: np.ndarray, kind: str, box_jitter: float = 0.1,
                  label: int = FOREGROUND):
    """One prompt of `kind` from a non-empty (H, W) bool mask, pixel coordinates (module doc)."""
    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    if kind == "point":
        k = int(rng.integers(len(rows)))
        return Point(*image_xy((cols[k], rows[k])).tolist(), label)
    if kind == "line":
        n = int(rng.integers(2, 5))
        ks = rng.integers(len(rows), size=n)
        pts = image_xy(np.stack([cols[ks], rows[ks]], 1))
        centred = np.stack([cols, rows], 1) - np.array([cols.mean(), rows.mean()])
        axis = np.linalg.svd(centred, full_matrices=False)[2][0] if len(rows) > 1 else np.array([1.0, 0.0])
        pts = pts[np.argsort(pts @ axis)]
        if np.all(np.linalg.norm(np.diff(pts, axis=0), axis=1) == 0):  # one-pixel mask: a tiny stroke
            pts = np.array([[pts[0, 0] - 0.5, pts[0, 1]], [min(pts[0, 0] + 0.5, w), pts[0, 1]]])
        return Line(pts.tolist(), label)
    if kind == "box":
        x0, x1, y0, y1 = cols.min(), cols.max() + 1.0, rows.min(), rows.max() + 1.0
        bw, bh = x1 - x0, y1 - y0
        j = rng.uniform(-box_jitter, box_jitter, 4) * np.array([bw, bh, bw, bh])
        x0, y0 = np.clip(x0 + j[0], 0, w - 1), np.clip(y0 + j[1], 0, h - 1)
        x1, y1 = np.clip(x1 + j[2], x0 + 1, w), np.clip(y1 + j[3], y0 + 1, h)
        return Box(float(x0), float(y0), float(x1), float(y1), label)
    if kind == "mask":
        return Mask(mask.copy(), label)
    raise ValueError(f"unknown prompt type {kind!r}")
