"""Label one episode: closure frame -> region proposal -> noun -> Grounding DINO box -> SAM 2 mask -> tracking
through the episode -> prompts sampled per frame -> Pixel-160K records (format.py).

    labeler = Labeler(segmenter, detector, nouns, LabelSettings())
    records = labeler.label(episode_input)          # raises EpisodeError(reason) for a skipped episode

Filters (LabelSettings): a detection must score >= `box_threshold`, cover between `min_box_frac` and
`max_box_frac` of the image (size), and lie no more than `max_gripper_overlap` on the gripper mask (overlap: the
gripper itself is not the target). The keyframe mask is SAM 2's mask inside the detector box grown by
`mask_box_slack`; a tracked mask larger than `max_mask_frac` of the image counts as lost (empty).
Scores: see FORMAT.md. Prompts (coordinates: FORMAT.md): `num_points` foreground points (mask pixel centres),
`num_negative` background points (pixel centres just outside the mask, within its box grown by 50 %), one line
along the mask's principal axis (3 mask pixel centres), the tight box. Sampling is seeded by (episode id,
frame): the same inputs always give the same records.
"""
from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import numpy as np

from pixelvla_model import Box
from pixelvla_robots.camera import image_xy

from pixelvla_training.labeling.format import make_record
from pixelvla_training.labeling.proposal import (ProposalSettings, box_iou, box_mask_fraction, expand_box,
                                                 find_closure, mask_box, propose_region)
from pixelvla_training.labeling.sources import EpisodeError, EpisodeInput


@dataclass
class LabelSettings:
    box_threshold: float = 0.3
    min_box_frac: float = 0.0005
    max_box_frac: float = 0.5
    max_gripper_overlap: float = 0.8
    mask_box_slack: float = 1.1
    max_mask_frac: float = 0.5
    num_points: int = 3
    num_negative: int = 2
    frame_stride: int = 1
    use_gripper_mask: bool = True
    empty_mask_fallback: str = "skip"   # "skip" | "box": the detector box becomes the keyframe mask (untrained SAM 2)
    proposal: ProposalSettings = None

    def __post_init__(self):
        if self.proposal is None:
            self.proposal = ProposalSettings()
        elif isinstance(self.proposal, dict):
            self.proposal = ProposalSettings(**self.proposal)
        if self.frame_stride < 1:
            raise ValueError("frame_stride must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def check_frames(images: np.ndarray) -> None:
    """EpisodeError("corrupt_frame") for a wrong shape / dtype or a blank frame (one value everywhere)."""
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise EpisodeError("corrupt_frame", f"images must be (T, H, W, 3) uint8, got {getattr(images, 'shape', None)} "
                           f"{getattr(images, 'dtype', None)}")
    if len(images) == 0:
        raise EpisodeError("corrupt_frame", "no frames")
    flat = images.reshape(len(images), -1)
    blank = np.flatnonzero(flat.min(axis=1) == flat.max(axis=1))
    if blank.size:
        raise EpisodeError("corrupt_frame", f"frame {int(blank[0])} is blank (every pixel {int(flat[blank[0], 0])})"
                           + (f", {blank.size} blank frames" if blank.size > 1 else ""))


def _rng(episode_id: str, frame: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(episode_id.encode()), int(frame)])


def sample_prompts(mask: np.ndarray, rng: np.random.Generator, num_points: int = 3, num_negative: int = 2) -> dict:
    """Points (fg + bg), one line and the tight box of `mask` in pixels (corner convention); empty lists for an
    empty mask."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return {"points": [], "lines": [], "boxes": []}
    h, w = mask.shape
    pick = rng.choice(rows.size, size=min(num_points, rows.size), replace=False)
    points = [dict(zip("xy", image_xy((cols[i], rows[i])).tolist()), label=1) for i in sorted(pick.tolist())]
    box = mask_box(mask)
    gx0, gy0, gx1, gy1 = expand_box(box, 1.5, 1.0)
    r0, r1 = max(0, int(gy0)), min(h, int(np.ceil(gy1)))
    c0, c1 = max(0, int(gx0)), min(w, int(np.ceil(gx1)))
    ring_r, ring_c = np.nonzero(~mask[r0:r1, c0:c1])
    if ring_r.size:
        neg = rng.choice(ring_r.size, size=min(num_negative, ring_r.size), replace=False)
        points += [dict(zip("xy", image_xy((ring_c[i] + c0, ring_r[i] + r0)).tolist()), label=0)
                   for i in sorted(neg.tolist())]
    xy = image_xy(np.stack([cols, rows], axis=1))
    lines = []
    centre = xy.mean(axis=0)
    if len(xy) >= 2:
        cov = np.cov((xy - centre).T) if len(xy) > 2 else np.outer(xy[1] - xy[0], xy[1] - xy[0])
        axis = np.linalg.eigh(cov)[1][:, -1]
        proj = (xy - centre) @ axis
        ends = [int(np.argmin(proj)), int(np.argmin(np.abs(proj))), int(np.argmax(proj))]
        pts = [xy[i].tolist() for i in ends]
        if np.linalg.norm(xy[ends[0]] - xy[ends[2]]) > 0:
            lines.append({"points": pts, "label": 1})
    boxes = [{"x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3], "label": 1}]
    return {"points": points, "lines": lines, "boxes": boxes}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


class Labeler:
    """segmenter: pixelvla_model Sam2Segmenter; detector: GroundingDino; nouns: callable instruction -> noun."""

    def __init__(self, segmenter, detector, nouns, settings: LabelSettings | None = None) -> None:
        self.segmenter, self.detector, self.nouns = segmenter, detector, nouns
        self.settings = settings or LabelSettings()

    # ------------------------------------------------------------------------------------ stage 1
    def proposal(self, ep: EpisodeInput, closure: int):
        s = self.settings
        image = ep.images[closure]
        tcp = ep.tcp_poses[closure] if ep.tcp_poses is not None else None
        finger = float(ep.finger_positions[closure]) if ep.finger_positions is not None else None
        return propose_region(image, closure, camera=ep.camera, tcp_pose=tcp, finger=finger,
                              segmenter=self.segmenter if s.use_gripper_mask else None, detector=self.detector,
                              settings=s.proposal)

    # ------------------------------------------------------------------------------------ everything
    def label(self, ep: EpisodeInput) -> list[dict]:
        """Records of every labelled frame of `ep` (every `frame_stride`-th frame, the closure frame always);
        EpisodeError with a FORMAT.md reason when the episode is skipped."""
        s = self.settings
        if not str(ep.instruction or "").strip():
            raise EpisodeError("empty_instruction", "the episode has no instruction")
        check_frames(ep.images)
        T, H, W = ep.images.shape[:3]
        closure = find_closure(ep.gripper_actions, ep.gripper_state) if (
            ep.gripper_actions is not None or ep.gripper_state is not None) else None
        if closure is None:
            raise EpisodeError("no_closure", "the gripper never closes" if (
                ep.gripper_actions is not None or ep.gripper_state is not None) else "no gripper signal")
        noun = self.nouns(ep.instruction)
        if not noun:
            raise EpisodeError("no_noun", f"no target noun in {ep.instruction!r}")
        prop = self.proposal(ep, closure)
        if prop is None or prop.box is None:
            raise EpisodeError("no_proposal", "no gripper region in the closure frame")
        image = ep.images[closure]
        dets = self.detector.detect(image, noun, region=prop.box)
        if not dets:
            raise EpisodeError("no_detection", f"no box for {noun!r} in the proposal")
        passing = [d for d in dets if d.score >= s.box_threshold]
        if not passing:
            raise EpisodeError("no_detection", f"best {noun!r} score {dets[0].score:.3f} < {s.box_threshold}")
        sized = [d for d in passing if s.min_box_frac <= d.area / (H * W) <= s.max_box_frac]
        if not sized:
            raise EpisodeError("filtered_size", f"{len(passing)} boxes outside {s.min_box_frac}..{s.max_box_frac} of the image")
        gmask = prop.gripper_mask if prop.method.endswith("mask") else None
        kept = [d for d in sized if gmask is None or box_mask_fraction(d.box, gmask) <= s.max_gripper_overlap]
        if not kept:
            raise EpisodeError("filtered_overlap", f"every {noun!r} box lies on the gripper mask")
        det = kept[0]
        prompt = [Box(*det.box)]
        limit = _box_limit(det.box, s.mask_box_slack, H, W)

        key_mask = self.segmenter.start_tracking(image, prompt) & limit
        mask_source = "sam2"
        if not key_mask.any():
            if s.empty_mask_fallback != "box":
                self.segmenter.stop_tracking()
                raise EpisodeError("empty_mask", f"SAM 2 gave no mask inside the {noun!r} box")
            key_mask, mask_source = _box_limit(det.box, 1.0, H, W), "box"
        key_score = box_iou(mask_box(key_mask), det.box)
        frames = sorted(set(range(closure % s.frame_stride, T, s.frame_stride)) | {closure})
        masks = {closure: key_mask}
        scores = {closure: key_score}
        try:
            for order in ([f for f in frames if f > closure], [f for f in reversed(frames) if f < closure]):
                if not order:
                    continue
                if order[0] < closure:  # backwards: a fresh track from the keyframe, fed frames in reverse
                    self.segmenter.start_tracking(image, prompt)
                prev, prev_score = key_mask, key_score
                for f in order:
                    m = self.segmenter.track(ep.images[f])
                    if m.mean() > s.max_mask_frac:
                        m = np.zeros_like(m)
                    score = mask_iou(m, prev) * prev_score if m.any() else 0.0
                    masks[f], scores[f] = m, score
                    if m.any():
                        prev, prev_score = m, max(score, 1e-6)
        finally:
            self.segmenter.stop_tracking()
        proposal_frac = float(_box_limit(prop.box, 1.0, H, W)[key_mask].mean())
        records = []
        for f in frames:
            m = masks[f]
            records.append(make_record(
                episode_id=ep.episode_id, frame_index=f, num_frames=T, instruction=ep.instruction, noun=noun, mask=m,
                prompts=sample_prompts(m, _rng(ep.episode_id, f), s.num_points, s.num_negative),
                scores={"detector": det.score, "mask": float(np.clip(scores[f], 0, 1)), "proposal": proposal_frac},
                keyframe=f == closure, source={**ep.source, "frame": f},
                extra={"closure_frame": int(closure), "proposal": [round(v, 3) for v in prop.box],
                       "proposal_method": prop.method, "mask_source": mask_source if f == closure else "sam2-track"},
            ))
        return records


def _box_limit(box, factor: float, h: int, w: int) -> np.ndarray:
    """(H, W) bool of the pixels whose centres lie in `box` scaled by `factor`."""
    x0, y0, x1, y1 = expand_box(box, factor)
    xs, ys = image_xy(np.arange(w)), image_xy(np.arange(h))  # pixel centres
    return ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]


__all__ = ["Labeler", "LabelSettings", "sample_prompts", "check_frames", "mask_iou"]
