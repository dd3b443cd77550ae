"""Open-vocabulary box detection with Grounding DINO (transformers `GroundingDinoForObjectDetection`).

    det = GroundingDino.from_pretrained("/models/grounding-dino-tiny")     # local files only
    dets = det.detect(image, "red cube", region=(x0, y0, x1, y1))          # -> [Detection], best first

Images: (H, W, 3) uint8 RGB. Boxes: pixels (x0, y0, x1, y1), corner origin (pixelvla_model.prompts).

Pre-processing is done here in torch (`GroundingDinoImageProcessor` needs torchvision): the image (or the
`region` crop of it) is resized bilinearly with antialiasing, keeping the aspect ratio, so that its short
side is `shortest_edge` px and its long side at most `longest_edge` px (800 / 1333 for the released
checkpoints, read from preprocessor_config.json when present), scaled to [0, 1], normalised with the ImageNet
mean / std; `pixel_mask` is all ones (one image, no padding). Text: the noun lower-cased and ended with "."
(the model's caption convention), tokenised by the checkpoint's BERT tokenizer.

Post-processing: for each of the model's queries, the score is the largest sigmoid of its logits over the
noun's tokens (not [CLS], [SEP] or "."); boxes (cx, cy, w, h) normalised to the crop are mapped back to
pixels of the full image.

`GroundingDino.from_config(tiny=True)` builds a random-weight model and a character-level WordPiece
tokenizer (tests, benchmarks). Its boxes are meaningless.
"""
from __future__ import annotations

import json
import logging
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class Detection:
    """One box: pixels (x0, y0, x1, y1) of the full image, score in [0, 1] for `phrase`."""

    box: tuple[float, float, float, float]
    score: float
    phrase: str

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def char_vocab() -> list[str]:
    """WordPiece vocabulary of the tiny test tokenizer: specials, punctuation, letters, digits, ##-pieces."""
    chars = list(string.ascii_lowercase + string.digits) + list(".,;:!?'\"-()/")
    return list(SPECIAL_TOKENS) + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits]


def tiny_tokenizer():
    """A BertTokenizerFast over :func:`char_vocab` (every lower-case word tokenises, letter by letter)."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={token: i for i, token in enumerate(char_vocab())}, do_lower_case=True)


def tiny_config(vocab_size: int | None = None):
    """A GroundingDinoConfig small enough for CPU tests (~0.5 M parameters; Swin backbone, BERT text)."""
    from transformers import GroundingDinoConfig

    vocab_size = vocab_size or len(char_vocab())
    return GroundingDinoConfig(
        backbone_config=dict(model_type="swin", image_size=128, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1],
                             num_heads=[1, 1, 2, 2], window_size=4, out_features=["stage2", "stage3", "stage4"]),
        text_config=dict(model_type="bert", vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2,  # 2: the box heads of the layers are tied
        encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=30, max_text_len=32, num_feature_levels=4,
        encoder_n_points=2, decoder_n_points=2,
    )


class GroundingDino:
    """Grounding DINO detector: image (+ region) + noun -> scored boxes (module doc for conventions)."""

    def __init__(self, model, tokenizer, device: str = "cpu", *, shortest_edge: int = 800, longest_edge: int = 1333,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, trained: bool = True,
                 name: str = "grounding-dino") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.shortest_edge, self.longest_edge = int(shortest_edge), int(longest_edge)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(3, 1, 1)
        self.trained = trained
        self.name = name

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> "GroundingDino":
        """Load a local checkpoint directory (config.json, *.safetensors, tokenizer files; optional
        preprocessor_config.json for the resize sizes). Nothing is downloaded."""
        from transformers import AutoTokenizer, GroundingDinoForObjectDetection

        path = Path(directory).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no config.json in Grounding DINO directory {path}")
        if not any(path.glob("*.safetensors")):
            raise FileNotFoundError(f"no *.safetensors weights in {path} (only safetensors checkpoints are loaded)")
        model = GroundingDinoForObjectDetection.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        kwargs = {}
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            size = cfg.get("size") or {}
            kwargs.update(shortest_edge=size.get("shortest_edge", 800), longest_edge=size.get("longest_edge", 1333))
            if cfg.get("image_mean"):
                kwargs["mean"] = cfg["image_mean"]
            if cfg.get("image_std"):
                kwargs["std"] = cfg["image_std"]
        return cls(model, tokenizer, device, trained=True, name=path.resolve().name, **kwargs)

    @classmethod
    def from_config(cls, tiny: bool = True, seed: int = 0, device: str = "cpu") -> "GroundingDino":
        """Random weights (tiny: :func:`tiny_config` + the character tokenizer; else the default sizes with
        the tiny tokenizer's vocabulary). UNTRAINED: boxes and scores are meaningless."""
        from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

        tokenizer = tiny_tokenizer()
        if tiny:
            config = tiny_config(len(tokenizer))
        else:
            config = GroundingDinoConfig()
            config.text_config.vocab_size = len(tokenizer)
        logger.warning("!!! GroundingDino.from_config: the detector is UNTRAINED (random weights, seed %d); its boxes "
                       "are meaningless - load a real checkpoint with from_pretrained(<dir>) !!!", seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = GroundingDinoForObjectDetection(config)
        edge = 128 if tiny else 800
        return cls(model, tokenizer, device, shortest_edge=edge, longest_edge=edge * 5 // 3, trained=False,
                   name=f"untrained-grounding-dino{'-tiny' if tiny else ''}")

    # ------------------------------------------------------------------------------------------ inference
    def _pixels(self, rgb: np.ndarray) -> torch.Tensor:
        """(h, w, 3) uint8 -> (1, 3, h', w') normalised float, short side shortest_edge, long <= longest_edge."""
        h, w = rgb.shape[:2]
        scale = self.shortest_edge / min(h, w)
        if max(h, w) * scale > self.longest_edge:
            scale = self.longest_edge / max(h, w)
        size = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(2, 0, 1).float().div_(255.0)[None]
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def detect(self, image: np.ndarray, phrase: str, region: Sequence[float] | None = None,
               top_k: int = 10) -> list[Detection]:
        """Boxes for `phrase` in `image` (or only in `region` (x0, y0, x1, y1) px, which is cropped and
        detected at full detector resolution), best first, at most `top_k`."""
        rgb = np.asarray(image)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        phrase = " ".join(phrase.lower().split())
        if not phrase:
            raise ValueError("empty phrase")
        H, W = rgb.shape[:2]
        if region is None:
            c0, r0, c1, r1 = 0, 0, W, H
        else:
            c0, r0 = max(0, int(np.floor(region[0]))), max(0, int(np.floor(region[1])))
            c1, r1 = min(W, int(np.ceil(region[2]))), min(H, int(np.ceil(region[3])))
            if c1 - c0 < 2 or r1 - r0 < 2:
                return []
        crop = rgb[r0:r1, c0:c1]
        pixels = self._pixels(crop)
        text = self.tokenizer([phrase + "."], return_tensors="pt")
        text = {k: v.to(self.device) for k, v in text.items()}
        out = self.model(pixel_values=pixels, pixel_mask=torch.ones_like(pixels[:, 0], dtype=torch.long), **text)
        ids = text["input_ids"][0].tolist()
        skip = set(self.tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", ".", "[PAD]"]))
        cols = [i for i, t in enumerate(ids) if t not in skip and i < out.logits.shape[-1]]
        if not cols:
            return []
        scores = out.logits[0][:, cols].float().sigmoid().amax(dim=-1)            # (Q,)
        boxes = out.pred_boxes[0].float()                                       # (Q, 4) cx, cy, w, h in [0, 1]
        order = torch.argsort(scores, descending=True)[:top_k]
        cw, ch = c1 - c0, r1 - r0
        result = []
        for q in order.tolist():
            cx, cy, bw, bh = boxes[q].tolist()
            x0 = float(np.clip(c0 + (cx - bw / 2) * cw, 0, W))
            x1 = float(np.clip(c0 + (cx + bw / 2) * cw, 0, W))
            y0 = float(np.clip(r0 + (cy - bh / 2) * ch, 0, H))
            y1 = float(np.clip(r0 + (cy + bh / 2) * ch, 0, H))
            if x1 > x0 and y1 > y0:
                result.append(Detection((x0, y0, x1, y1), float(scores[q]), phrase))
        return result

    def __repr__(self) -> str:
        return f"GroundingDino({self.name}, shortest_edge={self.shortest_edge}, device={self.device})"


__all__ = ["GroundingDino", "Detection", "tiny_config", "tiny_tokenizer"]
