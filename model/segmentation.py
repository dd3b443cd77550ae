"""SAM 2 target segmentation and video tracking (transformers `Sam2VideoModel`), no ROS.

`Sam2Segmenter` turns visual prompts on a camera image into a target mask, and then follows that
target from frame to frame while the arm moves:

    seg = Sam2Segmenter.from_pretrained("/models/sam2.1-hiera-tiny")   # local files only
    mask = seg.segment(image, [Box(40, 30, 90, 80)])                   # one image
    mask = seg.start_tracking(image, [Point(60, 50)])                  # first frame of a track
    mask = seg.track(next_image)                                       # every later frame

Images: (H, W, 3) uint8 RGB, any size >= 2x2. Masks: (H, W) bool of the same image, True = target.

Prompts: `pixelvla_model.Point / Line / Box / Mask` in pixel coordinates of the image they are drawn
on: x = column, y = row, origin at the top-left corner of the top-left pixel, pixel (col, row) spans
[col, col + 1) x [row, row + 1) (the convention of `pixelvla_model.prompts`). One call describes ONE
target object:
- Points (label 1 foreground / 0 background) go to SAM as clicks.
- A Line is sampled at `line_points` points uniformly by arc length (both ends kept), each with the
  line's label.
- At most one Box, foreground only (SAM has no background box); it can be combined with clicks/lines.
- A Mask (foreground, non-empty) stands alone: `segment` returns it unchanged (pass-through);
  `start_tracking` hands it to SAM 2 as the mask input of the first frame and returns it unchanged.

Model input (what `Sam2ImageProcessor` / `Sam2VideoVideoProcessor` would do; they need torchvision,
which this project does not use): the image is resized to (S, S) (S = `config.image_size`, 1024 for the
released checkpoints) bilinearly with antialiasing, without keeping the aspect ratio, scaled to [0, 1]
and normalised with the ImageNet mean/std. A prompt coordinate x (our corner convention) becomes
x * S / W - 0.5 in SAM's input frame, because SAM's prompt encoder adds 0.5 to move integer pixel
indices to pixel centres (likewise y with H). The model's low-resolution mask logits (S/4 x S/4) are
resized bilinearly to (H, W) and thresholded at 0.

One model serves both uses: `Sam2VideoModel` holds the SAM 2 image path (vision encoder, prompt
encoder, mask decoder; the weights `Sam2Model` loads) plus the memory modules used for tracking;
`segment` runs the image path on a one-frame session without memory.

Tracking: a streaming `Sam2VideoInferenceSession` (transformers 5.x). The prompted frame is the
session's conditioning frame and is kept for the whole track; each `track(image)` adds one frame,
which SAM 2 conditions on the prompted frame's memory plus the memories of the last
`num_maskmem - 1` tracked frames and the object pointers of the last `max_object_pointers_in_encoder
- 1` frames. Older frames are never read again, so after every step the segmenter drops them from
the session (pixels, per-frame outputs and bookkeeping): memory stays bounded by `memory_window`
frames (default: exactly what the model reads) however long the track runs.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .prompts import BACKGROUND, FOREGROUND, Box, Line, Mask, Point, Prompt, _resample_polyline, validate_prompt

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OBJECT_ID = 1            # the one target object of a session
BOX_LABELS = (2, 3)      # SAM's point labels for a box's top-left / bottom-right corners
TINY_IMAGE_SIZE = 128    # input size (px) of the tiny test model
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def tiny_config(image_size: int = TINY_IMAGE_SIZE):
    """A Sam2VideoConfig small enough for CPU tests (~1.3 M parameters, image_size px input).

    Constraints of the transformers implementation that fix some sizes: the memory attention's
    key/value width is 64, so `memory_encoder_output_channels` = 64; the object pointers are split
    into chunks of that width, which the implementation only does when the hidden size is larger than
    it, so the FPN / prompt / decoder / memory-attention width is 128.
    """
    from transformers import Sam2VideoConfig

    s = int(image_size)
    if s % 32 != 0:
        raise ValueError(f"image_size must be a multiple of 32, got {s}")
    hidden = 128
    return Sam2VideoConfig(
        vision_config=dict(
            model_type="sam2_vision_model",
            backbone_config=dict(
                model_type="sam2_hiera_det_model", hidden_size=16, num_attention_heads=1, image_size=[s, s],
                embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 2, 2],
                blocks_per_stage=[1, 1, 2, 1], window_size_per_stage=[8, 4, 4, 2], global_attention_blocks=[3],
            ),
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
            fpn_hidden_size=hidden,
        ),
        prompt_encoder_config=dict(hidden_size=hidden, image_size=s, patch_size=16, mask_input_channels=16),
        mask_decoder_config=dict(hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
        image_size=s,
        memory_attention_hidden_size=hidden, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[s // 16, s // 16],
        memory_encoder_hidden_size=hidden, memory_encoder_output_channels=64, mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden, memory_fuser_intermediate_dim=64, memory_fuser_num_layers=1,
    )


class Sam2Segmenter:
    """SAM 2 prompt -> mask, and mask tracking over a stream of frames (module doc for conventions).

    model: a `transformers.Sam2VideoModel` (eval mode is set here). device: torch device string. dtype: what the
    model runs in, "float32", "bfloat16" or "float16" (reduced precision is for GPUs; masks are returned as bool
    whatever it is). line_points: points a Line is sampled at. memory_window: tracked frames kept in the session
    (None = what the model reads: max(num_maskmem - 1, max_object_pointers_in_encoder - 1)).
    """

    def __init__(self, model, device: str = "cpu", *, dtype: str = "float32", trained: bool = True,
                 line_points: int = 5, memory_window: int | None = None, name: str = "sam2") -> None:
        if line_points < 2:
            raise ValueError(f"line_points must be >= 2, got {line_points}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype]
        self.model = model.to(self.device, self.dtype).eval()
        self.trained = trained
        self.name = name
        self.line_points = int(line_points)
        config = model.config
        self.image_size = int(config.image_size)  # S: the model's square input size (px)
        needed = max(int(config.num_maskmem) - 1, int(config.max_object_pointers_in_encoder) - 1, 1)
        self.memory_window = needed if memory_window is None else int(memory_window)
        if self.memory_window < 1:
            raise ValueError(f"memory_window must be >= 1 frame, got {memory_window}")
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(3, 1, 1)
        self._session = None
        self._frame_idx = -1

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu", **kwargs) -> "Sam2Segmenter":
        """Load a SAM 2 checkpoint directory (transformers layout: config.json + *.safetensors).

        Local files only (nothing is downloaded). Raises FileNotFoundError naming the directory when it
        or its files are missing, ValueError when it holds something other than a SAM 2 video model.
        """
        from transformers import AutoConfig, Sam2VideoModel

        path = Path(directory).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"SAM 2 checkpoint directory {path} does not exist")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no config.json in {path}: a SAM 2 checkpoint directory needs config.json "
                                    "and model.safetensors (transformers layout, e.g. facebook/sam2.1-hiera-tiny)")
        if not any(path.glob("*.safetensors")):
            raise FileNotFoundError(f"no *.safetensors weights in {path} (only safetensors checkpoints are loaded)")
        try:
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}/config.json is not a readable transformers config: {exc}") from None
        if config.model_type != "sam2_video":
            raise ValueError(f"{path} holds a {config.model_type!r} model; tracking needs a SAM 2 video checkpoint "
                             "(config.json model_type 'sam2_video', as facebook/sam2.1-hiera-* in transformers layout)")
        try:
            model, info = Sam2VideoModel.from_pretrained(str(path), config=config, local_files_only=True,
                                                         use_safetensors=True, output_loading_info=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ValueError(f"could not load the SAM 2 weights in {path}: {exc}") from None
        missing = sorted(info.get("missing_keys", []))
        if missing:
            raise ValueError(f"{path} lacks {len(missing)} SAM 2 weights (e.g. {missing[:3]}): "
                             "tracking needs a SAM 2 video checkpoint with its memory modules")
        return cls(model, device, trained=True, name=path.resolve().name, **kwargs)

    @classmethod
    def from_config(cls, tiny: bool = True, seed: int = 0, device: str = "cpu", config=None,
                    **kwargs) -> "Sam2Segmenter":
        """A random-weight model: `config`, else the tiny test config (tiny=True) or the SAM 2 default
        sizes (tiny=False). Same seed -> same weights -> same masks. UNTRAINED: masks are meaningless."""
        from transformers import Sam2VideoConfig, Sam2VideoModel

        if config is None:
            config = tiny_config() if tiny else Sam2VideoConfig()
        logger.warning("!!! Sam2Segmenter.from_config: the SAM 2 model is UNTRAINED (random weights, seed %d); "
                       "its masks are meaningless - load a real checkpoint with from_pretrained(<dir>) !!!", seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Sam2VideoModel(config)
        return cls(model, device, trained=False, name=f"untrained-sam2{'-tiny' if tiny else ''}", **kwargs)

    # ------------------------------------------------------------------------------ single image
    def segment(self, image: np.ndarray, prompts: Sequence[Prompt]) -> np.ndarray:
        """(H, W, 3) uint8 RGB + prompts for one target -> (H, W) bool mask. Tracking is not touched."""
        rgb = self._check_image(image)
        hw = rgb.shape[:2]
        points, labels, mask = self._prompt_inputs(prompts, hw)
        if mask is not None:
            return mask.copy()
        session = self._new_session(hw)
        self._add_points(session, points, labels)
        with torch.inference_mode():
            out = self.model(session, frame=self._pixels(rgb), run_mem_encoder=False)
        return self._to_mask(out.pred_masks, hw)

    # ------------------------------------------------------------------------------ tracking
    @property
    def tracking(self) -> bool:
        """True between start_tracking and stop_tracking."""
        return self._session is not None

    def start_tracking(self, image: np.ndarray, prompts: Sequence[Prompt]) -> np.ndarray:
        """Begin a new track (any previous one ends) with prompts on this image -> its (H, W) bool mask."""
        rgb = self._check_image(image)
        hw = rgb.shape[:2]
        points, labels, mask = self._prompt_inputs(prompts, hw)  # raises before the old track ends
        self.stop_tracking()
        session = self._new_session(hw)
        if mask is not None:
            obj_idx = session.obj_id_to_idx(OBJECT_ID)
            session.add_mask_inputs(obj_idx, 0, self._mask_input(mask))
            session.obj_with_new_inputs = [OBJECT_ID]
        else:
            self._add_points(session, points, labels)
        with torch.inference_mode():
            out = self.model(session, frame=self._pixels(rgb), frame_idx=0)
        self._session, self._frame_idx = session, 0
        self._prune()
        return mask.copy() if mask is not None else self._to_mask(out.pred_masks, hw)

    def track(self, image: np.ndarray) -> np.ndarray:
        """The next frame of the track -> (H, W) bool mask of the target in it (all False if SAM 2
        thinks the target is not visible). RuntimeError if no track was started."""
        if self._session is None:
            raise RuntimeError("track() before start_tracking(): no target to follow")
        rgb = self._check_image(image)
        self._frame_idx += 1
        with torch.inference_mode():
            out = self.model(self._session, frame=self._pixels(rgb), frame_idx=self._frame_idx)
        self._prune()
        return self._to_mask(out.pred_masks, rgb.shape[:2])

    def stop_tracking(self) -> None:
        """End the track and free its memory."""
        if self._session is not None:
            self._session.reset_inference_session()
        self._session, self._frame_idx = None, -1

    def session_frames(self) -> int:
        """Frames whose outputs the session holds now (conditioning + tracked): <= memory_window + 1."""
        if self._session is None:
            return 0
        outputs = self._session.output_dict_per_obj.get(0, {})
        return sum(len(v) for v in outputs.values())

    def _prune(self) -> None:
        """Drop every frame older than the memory window from the session (the conditioning frame stays)."""
        session, now = self._session, self._frame_idx
        oldest = now - self.memory_window + 1  # the current frame counts: the next one reads it
        for idx in [i for i in session.processed_frames if i != now]:
            del session.processed_frames[idx]  # pixels: features of the current frame are cached
        for obj_idx in list(session.output_dict_per_obj):
            tracked = session.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"]
            for idx in [i for i in tracked if i < oldest]:
                del tracked[idx]
            done = session.frames_tracked_per_obj[obj_idx]
            for idx in [i for i in done if i < oldest]:
                del done[idx]

    # ------------------------------------------------------------------------------ helpers
    @staticmethod
    def _check_image(image: np.ndarray) -> np.ndarray:
        rgb = np.asarray(image)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
        if rgb.shape[0] < 2 or rgb.shape[1] < 2:
            raise ValueError(f"image is too small: {rgb.shape[1]}x{rgb.shape[0]}")
        return rgb

    def _pixels(self, rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, S, S) float32, resized (bilinear, antialiased) and ImageNet-normalised."""
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(2, 0, 1).float().div_(255.0)
        s = self.image_size
        if x.shape[1:] != (s, s):
            x = F.interpolate(x[None], size=(s, s), mode="bilinear", antialias=True, align_corners=False)[0]
        return ((x - self._mean) / self._std).to(self.dtype)

    def _new_session(self, hw: tuple[int, int]):
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        return Sam2VideoInferenceSession(video_height=int(hw[0]), video_width=int(hw[1]),
                                         inference_device=self.device, inference_state_device=self.device,
                                         video_storage_device=self.device, dtype=self.dtype)

    def _add_points(self, session, points: np.ndarray, labels: np.ndarray) -> None:
        """(N, 2) SAM-frame points + (N,) SAM labels -> the session's inputs for frame 0."""
        obj_idx = session.obj_id_to_idx(OBJECT_ID)
        session.add_point_inputs(obj_idx, 0, {
            "point_coords": torch.from_numpy(points.astype(np.float32)).view(1, 1, -1, 2),
            "point_labels": torch.from_numpy(labels.astype(np.int32)).view(1, 1, -1),
        })
        session.obj_with_new_inputs = [OBJECT_ID]

    def _mask_input(self, mask: np.ndarray) -> torch.Tensor:
        """(H, W) bool -> (1, 1, S, S) float {0, 1}, as SAM 2's processor prepares mask inputs."""
        m = torch.from_numpy(mask.astype(np.float32))[None, None].to(self.device)
        s = self.image_size
        resized = F.interpolate(m, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        binary = resized >= 0.5
        if not binary.any():  # a target thinner than a model pixel must not vanish
            binary = resized > 0
        return binary.to(self.dtype)

    def _to_mask(self, logits: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
        """(1, 1, S/4, S/4) mask logits -> (H, W) bool at the input image's size."""
        up = F.interpolate(logits.float().reshape(1, 1, *logits.shape[-2:]), size=tuple(int(v) for v in hw),
                           mode="bilinear", align_corners=False)
        mask = (up[0, 0] > 0.0).cpu().numpy()
        assert mask.shape == tuple(hw), (mask.shape, hw)
        return mask

    def _prompt_inputs(self, prompts: Sequence[Prompt], hw: tuple[int, int]):
        """Validate prompts for one target -> (points (N, 2) in SAM's input frame, labels (N,), None)
        or (None, None, mask (H, W) bool). ValueError names the offending prompt."""
        if isinstance(prompts, (Point, Line, Box, Mask)):
            prompts = [prompts]
        prompts = list(prompts or [])
        if not prompts:
            raise ValueError("no prompts: give at least one Point, Line, Box or Mask for the target")
        for index, p in enumerate(prompts):
            validate_prompt(p, hw, index)
        boxes = [(i, p) for i, p in enumerate(prompts) if isinstance(p, Box)]
        masks = [(i, p) for i, p in enumerate(prompts) if isinstance(p, Mask)]
        if masks:
            i, p = masks[0]
            if len(prompts) > 1:
                raise ValueError(f"prompt {i} (Mask): a Mask prompt stands alone; got {len(prompts)} prompts")
            if p.label != FOREGROUND:
                raise ValueError(f"prompt {i} (Mask): must be foreground (label 1); SAM 2 takes no background mask")
            return None, None, np.asarray(p.mask).astype(bool)
        if len(boxes) > 1:
            raise ValueError(f"prompt {boxes[1][0]} (Box): SAM 2 takes at most one box per target, got {len(boxes)}")
        if boxes and boxes[0][1].label != FOREGROUND:
            raise ValueError(f"prompt {boxes[0][0]} (Box): must be foreground (label 1); SAM 2 has no background box")
        h, w = int(hw[0]), int(hw[1])
        scale = np.array([self.image_size / w, self.image_size / h])
        coords: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for p in [b for _, b in boxes] + [p for p in prompts if not isinstance(p, Box)]:  # the box first (SAM 2)
            if isinstance(p, Box):
                xy, lab = np.array([[p.x0, p.y0], [p.x1, p.y1]], float), np.array(BOX_LABELS)
            elif isinstance(p, Line):
                xy = _resample_polyline(np.asarray(p.points, dtype=np.float64), self.line_points)
                lab = np.full(len(xy), int(p.label))
            else:
                xy, lab = np.array([[p.x, p.y]], float), np.array([int(p.label)])
            coords.append(xy * scale - 0.5)  # corner convention -> SAM's pixel-index convention
            labels.append(lab)
        points = np.concatenate(coords)
        if not np.all(np.isfinite(points)):  # validate_prompt already refuses NaN/inf; belt and braces
            raise ValueError("prompt coordinates are not finite")
        assert set(np.concatenate(labels).tolist()) <= {BACKGROUND, FOREGROUND, *BOX_LABELS}
        return points, np.concatenate(labels), None

    def __repr__(self) -> str:
        return (f"Sam2Segmenter({self.name}, image_size={self.image_size}, device={self.device}, "
                f"dtype={str(self.dtype).removeprefix('torch.')}, "
                f"memory_window={self.memory_window}, trained={self.trained})")


__all__ = ["Sam2Segmenter", "tiny_config"]
