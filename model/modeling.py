"""The PixelVLA network, top to bottom.

    image (B,3,224,224) in [0,1] --+--> DINOv2 (ImageNet norm) --+
                                   +--> SigLIP (0.5/0.5 norm) ----+--> concat --> projector --> visual tokens (B,256,D)
                                          | selected SigLIP layers
    target mask (B,224,224) ---------> pixel-aware encoder --------------------------------> pixel token(s) (B,n_p,D)
    prompt tensors (B,K,...) --------> visual prompt encoder ------------------------------> prompt tokens (B,K,D)
    proprio (B,P), optional ---------> robot-state encoder ---------------------------------> state token (B,1,D)
    input_ids (B,T) -----------------> LLM embeddings ------------------------------------> text tokens (B,T,D)

    LLM sequence: [BOS, visual, pixel, prompt, (state), text[1:]]  (BOS first, as OpenVLA inserts its
    patches after BOS; otherwise the [visual, pixel, prompt, text] order of the paper; the state token exists
    only when config.proprio_dim > 0)
    --> Llama --> last-layer hidden state at the last valid text token (B,D)
    --> continuous action decoder --> normalised actions (B, N_c, 7) in [-1, 1] (q01/q99 convention)
    (+ with config.prompt_offsets: click_to_tcp (B,4,3) places the target and place prompts, the words' clicks
    too, from the TCP (place_prompts) --> an MLP with the robot state, added to the actions)

D = config.llm_hidden. The forward graph has no Python branching on tensor values: prompts arrive as
fixed-shape padded tensors (see prompts.py), an empty target mask selects the learned "no target"
embedding with torch.where, and the action state is gathered with index ops, so it exports to ONNX.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    LlamaConfig,
    LlamaModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.utils import ModelOutput

from .checkpoint import iter_safetensors, load_pretrained, load_state_strict, save_pretrained, weight_files
from .configuration import PROMPT_TYPE_IDS, PixelVLAConfig
from .prompts import (FOREGROUND, OFFSET_LABELS, PLACE, Box, Line, Mask, Point, batch_prompts,
                      empty_prompt_tensors)

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

#: Names (and order) of the forward's tensor inputs; exporters use them as graph input names.
INPUT_NAMES = (
    "pixel_values", "input_ids", "attention_mask", "target_mask",
    "prompt_coords", "prompt_point_mask", "prompt_types", "prompt_labels", "prompt_masks",
)
#: The robot-state input, present only when config.proprio_dim > 0 (see input_names).
PROPRIO_INPUT = "proprio"
#: The camera's map from a click to where it lies from the TCP (B, 4, 3), present only when config.prompt_offsets
#: (see place_prompts).
CLICK_MAP_INPUT = "click_to_tcp"
#: A click_to_tcp for examples and benchmarks: a top-down view 0.4 m wide centred under the TCP, the plane 0.1 m
#: below it.
EXAMPLE_CLICK_MAP = np.array([[0.4, 0.0, -0.2], [0.0, 0.4, -0.2], [0.0, 0.0, -0.1], [0.0, 0.0, 1.0]], np.float32)
OFFSET_UNIT = 0.02  # m: prompt offsets enter the network in 2 cm units: the few cm near the target span a few units
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def input_names(config: PixelVLAConfig) -> tuple[str, ...]:
    """The forward's tensor inputs for this config, in graph order: INPUT_NAMES (+ "proprio")
    (+ "click_to_tcp")."""
    return (INPUT_NAMES + ((PROPRIO_INPUT,) if config.proprio_dim else ())
            + ((CLICK_MAP_INPUT,) if config.prompt_offsets else ()))


@dataclass
class PixelVLAOutput(ModelOutput):
    """actions (B, N_c, 7) normalised; action_hidden (B, D): the LLM state the decoder reads;
    last_hidden_state (B, S, D): the LLM's last layer (after its final norm) over the whole sequence;
    loss: scalar L1 when targets were given; grounding_logits (B, R, N): the text-grounding maps' logits over
    the patches, row-major, for the target (r = 0) and where it goes (r = 1, with config.place_prompts)
    (config.text_grounding; None without it)."""

    actions: Optional[torch.Tensor] = None
    action_hidden: Optional[torch.Tensor] = None
    last_hidden_state: Optional[torch.Tensor] = None
    loss: Optional[torch.Tensor] = None
    grounding_logits: Optional[torch.Tensor] = None


# ---------------------------------------------------------------------------------------------------
# 1. Vision towers + projector
# ---------------------------------------------------------------------------------------------------
class VisionTowers(nn.Module):
    """DINOv2 (registers) + SigLIP, transformers-native, built from the config.

    Only depth-1 blocks of each tower are built: the visual tokens are the patch features of the
    second-to-last block (OpenVLA), and the towers' final norms are replaced by Identity (unused).
    """

    def __init__(self, c: PixelVLAConfig):
        super().__init__()
        self.pixel_layers = tuple(c.pixel_layers)
        self.num_registers = c.dino_registers
        self.dino = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
            hidden_size=c.dino_hidden, num_hidden_layers=c.dino_layers - 1, num_attention_heads=c.dino_heads,
            mlp_ratio=c.dino_mlp_ratio, image_size=c.image_size, patch_size=c.patch_size,
            num_register_tokens=c.dino_registers, layerscale_value=c.dino_layerscale_init,
            layer_norm_eps=1e-6, hidden_act="gelu", initializer_range=c.initializer_range,
            attn_implementation=c.attn_implementation,
        ))
        self.siglip = SiglipVisionModel(SiglipVisionConfig(
            hidden_size=c.siglip_hidden, num_hidden_layers=c.siglip_layers - 1,
            num_attention_heads=c.siglip_heads, intermediate_size=c.siglip_intermediate,
            image_size=c.image_size, patch_size=c.patch_size, hidden_act=c.siglip_hidden_act,
            layer_norm_eps=1e-6, vision_use_head=False, attn_implementation=c.attn_implementation,
        ))
        self.dino.layernorm = nn.Identity()
        self.siglip.post_layernorm = nn.Identity()
        # Fixed per-tower normalisation (runs in-graph): x in [0, 1] -> (x - mean) / std.
        self.register_buffer("dino_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("dino_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("siglip_mean", torch.tensor(SIGLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("siglip_std", torch.tensor(SIGLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixel_values (B,3,H,W) float in [0,1] ->
        patch features (B, N, D_dino + D_siglip) and the selected SigLIP layers (L, B, N, D_siglip)."""
        x = (pixel_values - self.dino_mean) / self.dino_std
        h = self.dino.embeddings(x)  # (B, 1 + R + N, Dd): [cls, registers, patches]
        for layer in self.dino.encoder.layer:
            h = layer(h)
        dino_patches = h[:, 1 + self.num_registers:]

        s = self.siglip.embeddings((pixel_values - self.siglip_mean) / self.siglip_std)  # (B, N, Ds)
        taps = []
        for i, layer in enumerate(self.siglip.encoder.layers, start=1):
            s = layer(s, None)
            if i in self.pixel_layers:
                taps.append(s)
        return torch.cat([dino_patches, s], dim=-1), torch.stack(taps, dim=0)


class Projector(nn.Module):
    """Prismatic's fused-backbone MLP: (B,N,Dv) -> (B,N,D): Linear(Dv,4Dv) GELU Linear(4Dv,D) GELU Linear(D,D)."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(x)))))


# ---------------------------------------------------------------------------------------------------
# 2. Multi-scale pixel-aware encoder
# ---------------------------------------------------------------------------------------------------
def mask_to_patch_weights(target_mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, H, W) mask in [0,1] -> (B, N) fraction of each patch it covers (row-major patch grid)."""
    p = F.avg_pool2d(target_mask.unsqueeze(1).to(torch.float32), kernel_size=patch_size, stride=patch_size)
    return p.flatten(1)


def patch_colour_histogram(pixel_values: torch.Tensor, patch_size: int, bins: int) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, N, bins**3): the share of each patch's pixels (row-major patch grid)
    in each colour cell, the cells bins x bins x bins equal intervals of R, G and B (R slowest)."""
    level = (pixel_values.float() * bins).floor().clamp(0, bins - 1)  # (B, 3, H, W)
    cell = (level[:, 0] * bins + level[:, 1]) * bins + level[:, 2]  # (B, H, W)
    cells = torch.arange(bins**3, device=cell.device, dtype=cell.dtype).view(1, -1, 1, 1)
    share = F.avg_pool2d((cell.unsqueeze(1) == cells).float(), kernel_size=patch_size, stride=patch_size)
    return share.flatten(2).transpose(1, 2)


def patch_position_encoding(grid: int, octaves: int) -> torch.Tensor:
    """(grid*grid, 4*octaves) fixed encoding of the patch centres (x, y) in [0, 1], patches row-major, columns
    [sin(2^k pi x) for k, cos(2^k pi x) for k, then the same for y], k = 0 .. octaves-1."""
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    freqs = math.pi * 2.0 ** torch.arange(octaves, dtype=torch.float32)
    angles = torch.stack([x.flatten(), y.flatten()], -1).unsqueeze(-1) * freqs  # (N, 2, octaves)
    return torch.cat([angles.sin(), angles.cos()], -1).flatten(1)


class PixelEncoder(nn.Module):
    """f_p^i = sum_n p_n f_v^i[n] / sum_n p_n for each selected SigLIP layer i (p: the target mask on the
    patch grid), E_p = MLP(sum_i Gamma_i(f_p^i) + W_where(sum_n p_n pos[n] / sum_n p_n)) -> (B, n_p, D), with
    pos the fixed patch-centre encoding (config.pixel_where_octaves; no W_where term when 0). An empty mask
    (sum p < eps) selects the learned no-target embedding instead; the division is guarded so no NaN/inf
    is ever produced."""

    eps = 1e-6

    def __init__(self, c: PixelVLAConfig):
        super().__init__()
        self.n_tokens, self.dim = c.pixel_tokens, c.llm_hidden
        self.gammas = nn.ModuleList(nn.Linear(c.siglip_hidden, c.pixel_hidden) for _ in c.pixel_layers)
        self.where = None
        if c.pixel_where_octaves:
            self.register_buffer("patch_positions", patch_position_encoding(c.grid_size, c.pixel_where_octaves),
                                 persistent=False)
            self.where = nn.Linear(4 * c.pixel_where_octaves, c.pixel_hidden)
        self.mlp = nn.Sequential(nn.Linear(c.pixel_hidden, c.llm_hidden), nn.GELU(),
                                 nn.Linear(c.llm_hidden, c.llm_hidden * c.pixel_tokens))
        self.no_target = nn.Parameter(torch.zeros(c.pixel_tokens, c.llm_hidden))

    def reset_parameters(self) -> None:  # the submodules reset themselves (PixelVLA.reinitialise)
        nn.init.zeros_(self.no_target)

    def forward(self, layer_feats: torch.Tensor, patch_weights: torch.Tensor) -> torch.Tensor:
        """layer_feats (L, B, N, Ds); patch_weights (B, N) in [0,1] -> pixel tokens (B, n_p, D)."""
        area = patch_weights.sum(dim=1, keepdim=True)  # (B, 1) = |p|
        # sum_n p_n f[l, b, n] as a matmul: (1, B, 1, N) @ (L, B, N, Ds) -> (L, B, Ds) (ONNX 18's Einsum has no bf16)
        pooled = (patch_weights[None, :, None, :] @ layer_feats).squeeze(2) / area.clamp_min(self.eps)
        z = sum(gamma(pooled[i]) for i, gamma in enumerate(self.gammas))  # (B, pixel_hidden)
        if self.where is not None:
            where = (patch_weights @ self.patch_positions.to(patch_weights.dtype)) / area.clamp_min(self.eps)
            z = z + self.where(where.to(z.dtype))
        tokens = self.mlp(z).view(-1, self.n_tokens, self.dim)
        empty = (area < self.eps).view(-1, 1, 1)
        return torch.where(empty, self.no_target.unsqueeze(0).to(tokens.dtype), tokens)


class TextGrounding(nn.Module):
    """Where the words point: logits (B, R, N) = sum_t q_r(e_t) . k(f_n) / sqrt(d), with e_t the embeddings of the
    instruction's tokens after BOS and f_n the patch features of the towers, for R = 1 role (the target) or 2
    (the target, then where it goes: config.place_prompts). Each word adds its vote for each patch ("cube" for
    the cubes, "red" for red things), so the colour word is not diluted by the other words as in a mean (a
    mean-pooled query learned where the cubes are, never which). With config.grounding_colours, f_n also holds
    the patch's colour histogram (`patch_colour_histogram`). A sample with neither a mask nor a prompt gets the
    clicks the words make (`click`): a point prompt and a target mask where the target map peaks, and a place
    point where the place map peaks (config.text_grounding)."""

    def __init__(self, c: PixelVLAConfig):
        super().__init__()
        self.dim, self.roles = c.llm_hidden, 2 if c.place_prompts else 1
        self.patch_size, self.colours = c.patch_size, c.grounding_colours
        self.query = nn.Linear(c.llm_hidden, self.dim * self.roles, bias=False)  # linear: q(sum_t e_t) = sum_t q(e_t)
        self.key = nn.Linear(c.vision_hidden + self.colours**3, self.dim)

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor, patch_feats: torch.Tensor,
                pixel_values: torch.Tensor) -> torch.Tensor:
        """text (B, T, D) embeddings, BOS first; text_mask (B, T) 1 = real token; patch_feats (B, N, Dv);
        pixel_values (B, 3, H, W) the image the towers saw, RGB in [0, 1] (read with grounding_colours)."""
        m = text_mask[:, 1:].unsqueeze(-1).to(text.dtype)
        words = (text[:, 1:] * m).sum(1)  # (B, D)
        q = self.query(words.to(self.query.weight.dtype)).view(-1, self.roles, self.dim)  # (B, R, d)
        if self.colours:
            colours = patch_colour_histogram(pixel_values, self.patch_size, self.colours)  # (B, N, bins**3)
            patch_feats = torch.cat([patch_feats, colours.to(patch_feats.dtype)], -1)
        k = self.key(patch_feats.to(self.key.weight.dtype))  # (B, N, d)
        return q @ k.transpose(1, 2) / math.sqrt(self.dim)

    @staticmethod
    def click(logits: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the words click on one map (B, N): the likeliest patch and its 3 x 3 neighbourhood, the map's
        probabilities there as patch weights (B, N) (a target spread over two patches keeps both) and their
        mean patch centre (B, 2), (x, y) in [0, 1], as a point prompt gives it."""
        prob = logits.float().softmax(-1)
        top = prob.argmax(-1)  # (B,)
        cells = torch.arange(grid, device=logits.device)
        row, col = cells.repeat_interleave(grid), cells.repeat(grid)  # (N,), row-major
        near = ((row[None] - (top // grid)[:, None]).abs() <= 1) & ((col[None] - (top % grid)[:, None]).abs() <= 1)
        local = prob * near
        local = local / local.sum(-1, keepdim=True)
        centres = torch.stack([col, row], -1).to(prob.dtype).add(0.5).div(grid)  # (N, 2): x, y
        return local, local @ centres

    @classmethod
    def clicks(cls, logits: torch.Tensor, grid: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`click` on every map of (B, R, N): the target's (r = 0), then, with place prompts, the place's."""
        return [cls.click(logits[:, r], grid) for r in range(logits.shape[1])]


def click_prompt(rows: torch.Tensor, points: list[tuple[torch.Tensor, int]], coords: torch.Tensor,
                 point_mask: torch.Tensor, types: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The prompt tensors with, in the rows where `rows` (B,) is true (rows without any prompt), one point per
    slot from `points`: [(xy (B, 2) in [0, 1], label), ...] in slots 0, 1, ...; the other slots empty."""
    b = coords.shape[0]
    clicked = [torch.zeros_like(t) for t in (coords, point_mask, types, labels)]
    for slot, (xy, label) in enumerate(points):
        clicked[0][:, slot, 0] = xy.to(coords.dtype)
        clicked[1][:, slot, 0] = 1
        clicked[2][:, slot] = PROMPT_TYPE_IDS["point"]
        clicked[3][:, slot] = label
    return tuple(torch.where(rows.view(b, *[1] * (t.dim() - 1)), new, t)
                 for new, t in zip(clicked, (coords, point_mask, types, labels)))


# ---------------------------------------------------------------------------------------------------
# 3. Visual prompt encoder
# ---------------------------------------------------------------------------------------------------
class PromptEncoder(nn.Module):
    """One token per prompt slot: (B, K, ...) prompt tensors -> tokens (B, K, D) and slot validity (B, K).

    token_in = W_pts [PE(c_1)*m_1, ..., PE(c_P)*m_P]          (concatenated, so slot order is kept:
                                                              box corners, polyline vertices)
             + is_mask * (W_mask vec(M) + sum_g M_g PE(g) / |M|)  (mask shape + where it is)
             + type_embedding[type] + label_embedding[bg/fg/place]
    token = MLP(token_in) * valid. PE is SAM's random-Fourier encoding of coordinates in [0,1]:
    PE(c) = [sin(2 pi (2c-1) G), cos(2 pi (2c-1) G)], G ~ N(0, scale^2) of shape (2, pe/2), fixed.
    """

    def __init__(self, c: PixelVLAConfig):
        super().__init__()
        pe, self.s = c.prompt_pe_dim, c.prompt_mask_size
        self.register_buffer("fourier_freqs", c.prompt_pe_scale * torch.randn(2, pe // 2))  # saved
        self.point_proj = nn.Linear(c.max_prompt_points * pe, pe)
        self.mask_proj = nn.Linear(self.s * self.s, pe, bias=False)
        self.type_embed = nn.Embedding(len(PROMPT_TYPE_IDS), pe)
        self.label_embed = nn.Embedding(3 if c.place_prompts else 2, pe)  # background, foreground (, place)
        self.mlp = nn.Sequential(nn.LayerNorm(pe), nn.Linear(pe, c.llm_hidden), nn.GELU(),
                                 nn.Linear(c.llm_hidden, c.llm_hidden))

    def positional_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) in [0,1] -> (..., pe) float32, whatever the model's dtype: the angles reach ~20 rad, and in
        bf16 / fp16 (8 / 11 significant bits) their sin / cos would lose the prompt's position."""
        proj = 2 * math.pi * ((2 * coords.float() - 1) @ self.fourier_freqs.float())
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def forward(self, coords, point_mask, types, labels, masks) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.point_proj.weight.dtype
        b, k, p, _ = coords.shape
        pts = self.positional_encoding(coords) * point_mask.unsqueeze(-1).float()  # (B, K, P, pe) float32
        h = self.point_proj(pts.reshape(b, k, -1).to(dtype))
        # mask prompts: learned shape embedding + mask-weighted mean PE of the cell centres (the mean in float32)
        centres = (torch.arange(self.s, device=coords.device, dtype=torch.float32) + 0.5) / self.s
        gy, gx = torch.meshgrid(centres, centres, indexing="ij")
        grid_pe = self.positional_encoding(torch.stack([gx, gy], -1).reshape(-1, 2))  # (S*S, pe)
        m = masks.reshape(b, k, -1).float()
        where = ((m @ grid_pe) / m.sum(-1, keepdim=True).clamp_min(1e-6)).to(dtype)
        is_mask = (types == PROMPT_TYPE_IDS["mask"]).unsqueeze(-1).to(dtype)
        h = h + is_mask * (self.mask_proj(m.to(dtype)) + where) + self.type_embed(types) + self.label_embed(labels)
        valid = types > 0
        return self.mlp(h) * valid.unsqueeze(-1).to(h.dtype), valid


class StateEncoder(nn.Module):
    """Normalised robot state (B, P) -> one token (B, 1, D): Linear, GELU, Linear."""

    def __init__(self, c: PixelVLAConfig):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(c.proprio_dim, c.llm_hidden), nn.GELU(), nn.Linear(c.llm_hidden, c.llm_hidden))

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.mlp(proprio).unsqueeze(1)


PLACEABLE_W = 1e-6  # the homogeneous w below which a click's ray misses the plane (horizon, behind the camera)


def place_prompts(click_to_tcp: torch.Tensor, target_mask: torch.Tensor, coords: torch.Tensor,
                  point_mask: torch.Tensor, types: torch.Tensor, labels: torch.Tensor,
                  masks: torch.Tensor) -> torch.Tensor:
    """Where the target and place prompts are from the TCP: (B, 2, 4), rows OFFSET_LABELS (target, place),
    [dx, dy, dz (m), known]; zeros where that prompt is missing or its pixel cannot be placed.

    Each row's pixel is the first prompt of its label: a point, a line's vertex mean, a box's centre, a mask
    prompt's centroid (prompts.prompt_anchor); for the target, the tracked target mask's centroid when there is
    one (a click lands anywhere on the object, the centroid is where it is). The words' clicks (text grounding)
    are prompts by then, so they are placed like an operator's. click_to_tcp (B, 4, 3) maps a pixel's [x, y, 1]
    (x, y in [0, 1] of the image) to [dx, dy, dz, w]: where its ray meets the plane objects rest at, minus the TCP,
    times w > 0 (pixelvla_robots.camera.plane_click_map); all zeros = no calibration, nothing placed."""
    pts = point_mask.unsqueeze(-1).to(coords.dtype)  # (B, K, P, 1)
    anchor = (coords * pts).sum(2) / pts.sum(2).clamp_min(1.0)  # (B, K, 2): point, line vertex mean, box centre
    is_mask = (types == PROMPT_TYPE_IDS["mask"]).unsqueeze(-1)
    anchor = torch.where(is_mask, mask_centroid(masks.flatten(0, 1).float()).view_as(anchor).to(anchor.dtype), anchor)
    tracked = mask_centroid(target_mask.float())  # (B, 2)
    tracked_known = (target_mask.flatten(1) > 0).any(1, keepdim=True)  # (B, 1)
    rows = []
    for label in OFFSET_LABELS:
        chosen = (labels == label) & (types > 0)  # (B, K)
        first = chosen.to(torch.float32).argmax(1)  # the first such slot (argmax returns the first maximum)
        xy = torch.gather(anchor, 1, first.view(-1, 1, 1).expand(-1, 1, 2)).squeeze(1).float()  # (B, 2)
        if label == FOREGROUND:
            xy = torch.where(tracked_known, tracked, xy)
        h = (click_to_tcp.float() @ torch.cat([xy, torch.ones_like(xy[:, :1])], 1).unsqueeze(-1)).squeeze(-1)
        known = (chosen.any(1) & (h[:, 3] > PLACEABLE_W)).unsqueeze(-1)  # (B, 1)
        where = h[:, :3] / h[:, 3:].clamp_min(PLACEABLE_W)
        rows.append(torch.cat([torch.where(known, where, torch.zeros_like(where)), known.float()], 1))
    return torch.stack(rows, 1)


def mask_centroid(masks: torch.Tensor) -> torch.Tensor:
    """(B, H, W) masks in [0, 1] -> (B, 2) weighted centroids (x, y) in [0, 1] of the image, pixel centres at
    (i + 0.5) / size; zeros for an empty mask."""
    h, w = masks.shape[-2:]
    xs = (torch.arange(w, device=masks.device, dtype=masks.dtype) + 0.5) / w
    ys = (torch.arange(h, device=masks.device, dtype=masks.dtype) + 0.5) / h
    area = masks.sum((-2, -1)).clamp_min(1e-9)
    return torch.stack([(masks.sum(-2) * xs).sum(-1), (masks.sum(-1) * ys).sum(-1)], -1) / area.unsqueeze(-1)


class PromptOffsets(nn.Module):
    """Where the target and place prompts are from the TCP, (B, 2, 4) rows [dx, dy, dz (m), known] (see
    place_prompts) -> (B, N_c, 7) added to the decoder's normalised actions: an MLP (Linear, GELU,
    Linear, GELU, Linear) that also reads the normalised robot state, the last layer zero-initialised (a model
    grown with it acts as before until it trains). Grown onto a trained decoder it hardly trains: that
    decoder's errors are not a function of the offsets. Relearn the decoder with it (model.reinit: [decoder],
    config/training/sim_offsets.yaml; docs/results.md, "The prompts placed from the gripper")."""

    def __init__(self, c: PixelVLAConfig):
        super().__init__()
        h = 4 * c.decoder_hidden
        self.shape = (c.chunk_size, c.action_dim)
        self.mlp = nn.Sequential(nn.Linear(8 + c.proprio_dim, h), nn.GELU(), nn.Linear(h, h), nn.GELU(),
                                 nn.Linear(h, c.chunk_size * c.action_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:  # after its Linears' own (PixelVLA.reinitialise)
        nn.init.zeros_(self.mlp[4].weight)
        nn.init.zeros_(self.mlp[4].bias)

    def forward(self, offsets: torch.Tensor, proprio: Optional[torch.Tensor] = None) -> torch.Tensor:
        scale = offsets.new_tensor([1 / OFFSET_UNIT] * 3 + [1.0])
        x = (offsets * scale).flatten(1)
        if proprio is not None:  # the normalised robot state: open or closed, high or low, tells the phase
            x = torch.cat([x, proprio.to(x.dtype)], 1)
        return self.mlp(x.to(self.mlp[0].weight.dtype)).view(-1, *self.shape)


# ---------------------------------------------------------------------------------------------------
# 4. LLM: transformers LlamaModel (built in PixelVLA.__init__), optionally wrapped with peft LoRA.
# 5. Continuous action decoder
# ---------------------------------------------------------------------------------------------------
class ResidualMLPBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class ActionDecoder(nn.Module):
    """(B, D) -> Linear -> N_r residual MLP blocks -> LayerNorm, MLP -> (B, N_c, 7) normalised actions."""

    def __init__(self, c: PixelVLAConfig):
        super().__init__()
        self.shape = (c.chunk_size, c.action_dim)
        self.proj = nn.Linear(c.llm_hidden, c.decoder_hidden)
        self.blocks = nn.ModuleList(ResidualMLPBlock(c.decoder_hidden) for _ in range(c.decoder_blocks))
        self.head = nn.Sequential(nn.LayerNorm(c.decoder_hidden), nn.Linear(c.decoder_hidden, c.decoder_hidden),
                                  nn.GELU(), nn.Linear(c.decoder_hidden, c.chunk_size * c.action_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.proj(h)
        for block in self.blocks:
            x = block(x)
        return self.head(x).view(-1, *self.shape)


def build_llm(c: PixelVLAConfig) -> LlamaModel:
    return LlamaModel(LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.llm_hidden, intermediate_size=c.llm_intermediate,
        num_hidden_layers=c.llm_layers, num_attention_heads=c.llm_heads, num_key_value_heads=c.llm_kv_heads,
        max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.rms_norm_eps,
        rope_theta=c.rope_theta, initializer_range=c.initializer_range, hidden_act="silu",
        attn_implementation=c.attn_implementation, pad_token_id=None,
    ))


# ---------------------------------------------------------------------------------------------------
# The whole network
# ---------------------------------------------------------------------------------------------------
class PixelVLA(nn.Module):
    def __init__(self, config: PixelVLAConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.vision = VisionTowers(config)
        self.projector = Projector(config.vision_hidden, config.llm_hidden)
        self.pixel_encoder = PixelEncoder(config)
        self.prompt_encoder = PromptEncoder(config)
        self.state_encoder = StateEncoder(config) if config.proprio_dim else None
        self.llm = build_llm(config)
        self.decoder = ActionDecoder(config)
        for module in (self.projector, self.pixel_encoder, self.prompt_encoder, self.state_encoder, self.decoder):
            if module is not None:
                module.apply(self._init_new)
        self.visual_where = None
        if config.visual_where_octaves:
            self._add_visual_where(config.visual_where_octaves)
        self.text_grounding = TextGrounding(config) if config.text_grounding else None
        self.prompt_offsets = PromptOffsets(config) if config.prompt_offsets else None
        if config.lora_r > 0:
            self._add_lora(config.lora_r)

    def _init_new(self, m: nn.Module) -> None:
        # Linear layers keep PyTorch's fan-in scaled init: a fixed small std (the LLM's 0.02) shrinks the
        # signal by ~sqrt(fan_in) * std per layer, and through a narrow encoder -> decoder stack the input
        # no longer reaches the output (a from-scratch decoder then never learned the state -> action map).
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=self.config.initializer_range)

    def reinitialise(self, name: str) -> None:
        """Give the submodule `name` (e.g. "decoder", "prompt_encoder") the weights a new model would give it:
        each part's reset_parameters, children before their parent (a parent's own init, such as a
        zero-initialised last layer, comes last), then this model's init of new modules."""
        try:
            module = self.get_submodule(name)
        except AttributeError:
            raise ValueError(f"model.reinit: {name!r} is not a module of this model") from None
        for sub in reversed(list(module.modules())):
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
        module.apply(self._init_new)
        logger.info("model.reinit: %s starts from fresh weights", name)

    def load_module(self, name: str, directory) -> None:
        """Give the submodule `name` the weights of the same submodule in the checkpoint `directory` (e.g. the
        text-grounding maps of a policy whose vision towers and word embeddings this one shares), read from its
        safetensors alone. Its tensors and shapes must match; everything else stays as it is."""
        try:
            module = self.get_submodule(name)
        except AttributeError:
            raise ValueError(f"model.load_modules: this model has no module {name!r}") from None
        own = module.state_dict()
        weights = {k[len(name) + 1:]: t for _, k, t in iter_safetensors(weight_files(directory), prefix=name + ".")}
        if not weights:
            raise ValueError(f"model.load_modules: {directory} has no module {name!r}")
        try:
            load_state_strict(module, {k: t.to(own[k].dtype) if k in own else t for k, t in weights.items()},
                              f"{directory} ({name})")
        except ValueError as e:
            raise ValueError(f"model.load_modules: {name!r} of {directory} does not fit this model's: {e}") from None
        logger.info("model.load_modules: %s from %s", name, directory)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: torch.Tensor,  # (B, 3, 224, 224) float32 RGB in [0, 1]
        input_ids: torch.Tensor,  # (B, T) int64, BOS first, right-padded
        attention_mask: torch.Tensor,  # (B, T) int64/bool, 1 = real token
        target_mask: Optional[torch.Tensor] = None,  # (B, 224, 224) float in [0,1]; None/empty = no target
        prompt_coords: Optional[torch.Tensor] = None,  # (B, K, P, 2) float in [0, 1] (x, y)
        prompt_point_mask: Optional[torch.Tensor] = None,  # (B, K, P) float, 1 = used point
        prompt_types: Optional[torch.Tensor] = None,  # (B, K) int64, 0 = empty slot
        prompt_labels: Optional[torch.Tensor] = None,  # (B, K) int64, 1 fg / 0 bg
        prompt_masks: Optional[torch.Tensor] = None,  # (B, K, S, S) float in [0, 1]
        proprio: Optional[torch.Tensor] = None,  # (B, proprio_dim) normalised robot state; needed iff proprio_dim > 0
        click_to_tcp: Optional[torch.Tensor] = None,  # (B, 4, 3) float; needed iff config.prompt_offsets
        actions: Optional[torch.Tensor] = None,  # (B, N_c, 7) normalised targets -> L1 loss
    ) -> PixelVLAOutput:
        c = self.config
        b = pixel_values.shape[0]
        dev = pixel_values.device
        if (proprio is None) != (self.state_encoder is None):
            raise ValueError(f"this model takes proprio_dim = {c.proprio_dim} robot-state values; "
                             + ("pass proprio (B, proprio_dim)" if proprio is None else "do not pass proprio"))
        if (click_to_tcp is None) != (self.prompt_offsets is None):
            raise ValueError("this model " + ("takes" if click_to_tcp is None else "does not take")
                             + " the camera's map from a click to the TCP (config.prompt_offsets, input click_to_tcp "
                             "(B, 4, 3))")
        if target_mask is None:
            target_mask = torch.zeros(b, c.image_size, c.image_size, device=dev)
        if prompt_types is None:  # no prompts: all slots empty
            empty = {k: v.to(dev) for k, v in empty_prompt_tensors(c, b).items()}
            prompt_coords, prompt_point_mask = empty["prompt_coords"], empty["prompt_point_mask"]
            prompt_types, prompt_labels, prompt_masks = (empty["prompt_types"], empty["prompt_labels"],
                                                         empty["prompt_masks"])

        patch_feats, layer_feats = self.vision(pixel_values)
        visual = self.projector(patch_feats)  # (B, N, D)
        if self.visual_where is not None:  # where each patch is (config.visual_where_octaves)
            visual = visual + self.visual_where(self.visual_positions.to(visual.dtype))
        text = self.llm.get_input_embeddings()(input_ids)  # (B, T, D)
        weights = mask_to_patch_weights(target_mask, c.patch_size).to(layer_feats.dtype)
        grounding_logits = None
        if self.text_grounding is not None:  # no mask and no prompt: the words click (config.text_grounding)
            grounding_logits = self.text_grounding(text, attention_mask, patch_feats, pixel_values)  # (B, R, N)
            words_only = (weights.sum(1) < self.pixel_encoder.eps) & (prompt_types == 0).all(1)  # (B,)
            (click_weights, click_xy), *place = TextGrounding.clicks(grounding_logits, c.grid_size)
            weights = torch.where(words_only[:, None], click_weights.to(weights.dtype), weights)
            points = [(click_xy, FOREGROUND), *((xy, PLACE) for _, xy in place)]
            prompt_coords, prompt_point_mask, prompt_types, prompt_labels = click_prompt(
                words_only, points, prompt_coords, prompt_point_mask, prompt_types, prompt_labels)
        pixel = self.pixel_encoder(layer_feats, weights)  # (B, n_p, D)
        prompt, prompt_valid = self.prompt_encoder(  # the prompt encoder takes its float inputs in any dtype
            prompt_coords, prompt_point_mask, prompt_types, prompt_labels, prompt_masks)  # (B, K, D), (B, K)

        state = [] if proprio is None else [self.state_encoder(proprio.to(visual.dtype)).to(text.dtype)]
        embeds = torch.cat([text[:, :1], visual, pixel.to(text.dtype), prompt.to(text.dtype), *state, text[:, 1:]], 1)
        am = attention_mask.to(torch.long)
        ones = torch.ones(b, visual.shape[1] + pixel.shape[1], dtype=torch.long, device=dev)
        state_mask = [torch.ones(b, 1, dtype=torch.long, device=dev)] if state else []
        full_mask = torch.cat([am[:, :1], ones, prompt_valid.to(torch.long), *state_mask, am[:, 1:]], dim=1)

        hidden = self.llm(inputs_embeds=embeds, attention_mask=full_mask, use_cache=False).last_hidden_state

        # hidden state of the last valid text token (works for right or left padding)
        t = input_ids.shape[1]
        last = (torch.arange(t, device=dev).unsqueeze(0) * am).argmax(dim=1)  # (B,) index into the text
        pos = last + torch.where(last > 0, c.prefix_tokens, 0)  # index into the full sequence
        action_hidden = torch.gather(hidden, 1, pos.view(b, 1, 1).expand(b, 1, hidden.shape[-1])).squeeze(1)
        pred = self.decoder(action_hidden.to(self.decoder.proj.weight.dtype))
        if self.prompt_offsets is not None:  # where the prompts (the operator's or the words') are from the gripper
            offsets = place_prompts(click_to_tcp, target_mask, prompt_coords, prompt_point_mask, prompt_types,
                                    prompt_labels, prompt_masks)
            pred = pred + self.prompt_offsets(offsets, proprio).to(pred.dtype)
        loss = F.l1_loss(pred, actions.to(pred.dtype)) if actions is not None else None
        return PixelVLAOutput(actions=pred, action_hidden=action_hidden, last_hidden_state=hidden, loss=loss,
                              grounding_logits=grounding_logits)

    # ------------------------------------------------------------------ training stages
    def enable_place_prompts(self) -> None:
        """Let a model trained without place prompts (label 2) learn them: the label embedding gains a third
        row, drawn like a new embedding; the background and foreground rows, and so every output for prompts
        without the place label, stay as they were. No-op when the model already has them."""
        if self.config.place_prompts:
            return
        old = self.prompt_encoder.label_embed
        grown = nn.Embedding(3, old.embedding_dim).to(device=old.weight.device, dtype=old.weight.dtype)
        nn.init.normal_(grown.weight, std=self.config.initializer_range)
        with torch.no_grad():
            grown.weight[:2] = old.weight
        grown.weight.requires_grad_(old.weight.requires_grad)
        self.prompt_encoder.label_embed = grown
        self.config.place_prompts = True

    def enable_visual_where(self, octaves: int) -> None:
        """Grow the visual tokens' "where" term (config.visual_where_octaves) onto a model trained without
        it; zero-initialised, so every output stays as it was until it trains. No-op when the model has it."""
        if self.visual_where is not None:
            if octaves != self.config.visual_where_octaves:
                raise ValueError(f"this model already adds a {self.config.visual_where_octaves}-octave position "
                                 f"encoding to its visual tokens, not {octaves}")
            return
        self._add_visual_where(octaves)
        self.config.visual_where_octaves = octaves

    def resize_images(self, image_size: int) -> None:
        """Take image_size x image_size images from now on (a model trained at 112 px going on at 224 px). The
        patch stays patch_size pixels, so the grid grows: the towers' learned position embeddings are
        resampled onto it (bicubic, as DINO resamples them) and the fixed patch-position encodings are rebuilt.
        The rest is shape-free. No-op at the current size."""
        old_grid, c = self.config.grid_size, self.config
        if image_size == c.image_size:
            return
        if image_size % c.patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {c.patch_size}")
        c.image_size = image_size
        new_grid = c.grid_size

        def regrid(table: torch.Tensor) -> torch.Tensor:  # (old_grid^2, D) row-major -> (new_grid^2, D)
            square = table.float().T.reshape(1, -1, old_grid, old_grid)
            square = F.interpolate(square, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
            return square.reshape(-1, new_grid * new_grid).T.to(table.dtype)

        state = self.vision.state_dict()
        dino = state["dino.embeddings.position_embeddings"]  # (1, 1 + N, D): the class token's first
        state["dino.embeddings.position_embeddings"] = torch.cat([dino[:, :1], regrid(dino[0, 1:])[None]], 1)
        siglip = "siglip.embeddings.position_embedding.weight"  # (N, D)
        state[siglip] = regrid(state[siglip])
        weight = self.projector.fc3.weight
        towers = VisionTowers(c).to(device=weight.device, dtype=weight.dtype)
        towers.load_state_dict(state)
        towers.train(self.vision.training)
        for old, new in zip(self.vision.parameters(), towers.parameters()):
            new.requires_grad_(old.requires_grad)
        self.vision = towers
        if self.pixel_encoder.where is not None:
            self.pixel_encoder.patch_positions = patch_position_encoding(new_grid, c.pixel_where_octaves).to(
                self.pixel_encoder.patch_positions.device)
        if self.visual_where is not None:
            self.visual_positions = patch_position_encoding(new_grid, c.visual_where_octaves).to(
                self.visual_positions.device)

    @torch.no_grad()
    def words_clicks(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, R, 2) where the words click when no prompt is given, (x, y) in [0, 1] of the image: the target
        (r = 0) and, with two maps, the place (r = 1); the clicks forward() prompts itself with
        (config.text_grounding)."""
        if self.text_grounding is None:
            raise ValueError("this model has no text grounding (config.text_grounding)")
        patch_feats, _ = self.vision(pixel_values)
        text = self.llm.get_input_embeddings()(input_ids)
        logits = self.text_grounding(text, attention_mask, patch_feats, pixel_values)  # (B, R, N)
        return torch.stack([xy for _, xy in TextGrounding.clicks(logits, self.config.grid_size)], 1)

    def enable_grounding_colours(self, bins: int) -> None:
        """Let the text-grounding key read each patch's colour histogram (config.grounding_colours) on a model
        whose maps were trained without it: the key's new input columns start at zero, so every map stays as it
        was until it trains. No-op when the model has them."""
        if self.text_grounding is None:
            raise ValueError("grounding_colours feeds the text-grounding maps: enable text grounding first")
        if self.config.grounding_colours:
            if bins != self.config.grounding_colours:
                raise ValueError(f"this model's text-grounding key already reads {self.config.grounding_colours} "
                                 f"colour bins per channel, not {bins}")
            return
        old = self.text_grounding
        self.config.grounding_colours = bins
        grown = TextGrounding(self.config).to(device=old.key.weight.device, dtype=old.key.weight.dtype)
        with torch.no_grad():
            grown.query.weight.copy_(old.query.weight)
            grown.key.weight.zero_()
            grown.key.weight[:, :old.key.in_features] = old.key.weight
            grown.key.bias.copy_(old.key.bias)
        self.text_grounding = grown

    def enable_text_grounding(self) -> None:
        """Add the text-grounding maps (config.text_grounding) to a model without them; no-op when it has them.
        From then on, a sample with neither a mask nor a prompt gets the clicks the words make instead of the
        learned no-target embedding and empty prompt slots. Call it after enable_place_prompts: the place
        map exists only with place prompts."""
        if self.text_grounding is None:
            weight = self.decoder.proj.weight
            self.text_grounding = TextGrounding(self.config).to(device=weight.device, dtype=weight.dtype)
            self.config.text_grounding = True

    def disable_text_grounding(self) -> None:
        """Drop the text-grounding maps: a sample with neither a mask nor a prompt then carries none (the
        learned no-target embedding, empty prompt slots), as in the paper's model. No-op without them."""
        self.text_grounding = None
        self.config.text_grounding = False
        self.config.grounding_colours = 0  # the colour histograms fed only the maps' key

    def enable_prompt_offsets(self) -> None:
        """Add the prompts' offsets from the TCP to the decoder's actions (config.prompt_offsets) of a model
        without them; no-op when it has them. Zero-initialised: every output stays as it was until it trains."""
        if self.prompt_offsets is None:
            weight = self.decoder.proj.weight
            self.prompt_offsets = PromptOffsets(self.config).to(device=weight.device, dtype=weight.dtype)
            self.config.prompt_offsets = True

    def _add_visual_where(self, octaves: int) -> None:
        weight = self.projector.fc3.weight  # on the meta device while a checkpoint loads; buffers stay real
        self.register_buffer("visual_positions", patch_position_encoding(self.config.grid_size, octaves)
                             .to("cpu" if weight.is_meta else weight.device), persistent=False)  # (N, 4 octaves)
        self.visual_where = nn.Linear(4 * octaves, self.config.llm_hidden).to(device=weight.device, dtype=weight.dtype)
        nn.init.zeros_(self.visual_where.weight)
        nn.init.zeros_(self.visual_where.bias)

    def _add_lora(self, r: int) -> None:
        from peft import LoraConfig, get_peft_model

        self.llm = get_peft_model(self.llm, LoraConfig(
            r=r, lora_alpha=self.config.lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGETS))
        self.config.lora_r = r

    def freeze_for_stage(self, stage: str, lora_r: int = 32) -> list[str]:
        """Set requires_grad for a training stage; returns the trainable parameter names.

        "cat": only the action decoder trains. "pue": peft LoRA (rank ``lora_r``, all attention and MLP
        projections of the LLM) + pixel encoder + prompt encoder + decoder train; everything else frozen.
        The robot-state encoder and the prompt-offset MLP, when the config has them, are new like the decoder
        and train in both stages.
        "grounding": nothing here; the trainer trains the text-grounding map alone, so the policy acts exactly
        as before whenever a target mask is given. The text-grounding map stays frozen here in every stage: the
        trainer trains it when it has a grounding loss.
        """
        if stage not in ("cat", "pue", "grounding"):
            raise ValueError(f"unknown stage {stage!r}; use 'cat', 'pue' or 'grounding'")
        if stage == "pue" and self.config.lora_r == 0:
            self._add_lora(lora_r)
        for p in self.parameters():
            p.requires_grad_(False)
        train = {"cat": [self.decoder], "pue": [self.decoder, self.pixel_encoder, self.prompt_encoder],
                 "grounding": []}[stage]
        for extra in (self.state_encoder, self.prompt_offsets):  # new like the decoder: train wherever it does
            if extra is not None and train:
                train.append(extra)
        for module in train:
            module.requires_grad_(True)
        if stage == "pue":
            for name, p in self.llm.named_parameters():
                if "lora_" in name:
                    p.requires_grad_(True)
        names = [n for n, p in self.named_parameters() if p.requires_grad]
        logger.info("stage %s: %d trainable tensors, %.2fM of %.2fM parameters", stage, len(names),
                    sum(p.numel() for p in self.parameters() if p.requires_grad) / 1e6,
                    sum(p.numel() for p in self.parameters()) / 1e6)
        return names

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory, **kwargs) -> None:
        """config.json + safetensors (sharded when large). See checkpoint.save_pretrained."""
        save_pretrained(self, directory, **kwargs)

    @classmethod
    def from_pretrained(cls, directory, map_location: str = "cpu", config: Optional[PixelVLAConfig] = None,
                        dtype: Optional[torch.dtype] = None) -> "PixelVLA":
        """config.json + safetensors -> PixelVLA in eval mode, in ``dtype`` (None: the checkpoint's), built in
        that dtype without a float32 copy. See checkpoint.load_pretrained."""
        return load_pretrained(cls, directory, map_location=map_location, config=config, dtype=dtype)


def load_model(directory, map_location: str = "cpu", config: Optional[PixelVLAConfig] = None,
               dtype: Optional[torch.dtype] = None) -> PixelVLA:
    """config.json + safetensors -> PixelVLA in eval mode, in ``dtype`` (PixelVLA.from_pretrained)."""
    return PixelVLA.from_pretrained(directory, map_location=map_location, config=config, dtype=dtype)


# ---------------------------------------------------------------------------------------------------
# Reduced precision (bf16 / fp16 graphs for TensorRT): what must stay float32
# ---------------------------------------------------------------------------------------------------
#: The attention implementation of reduced-precision graphs (registered with transformers on first use).
FP32_SOFTMAX_ATTENTION = "pixelvla_fp32_softmax"
#: Buffers kept float32 when the model is cast: rotary inverse frequencies (position angles reach 2048 rad;
#: in bf16 a frequency carries ~3 significant digits) and the prompt encoder's Fourier frequencies.
FP32_BUFFERS = ("inv_freq", "original_inv_freq", "fourier_freqs")


class Fp32LayerNorm(nn.LayerNorm):
    """nn.LayerNorm computed in float32 (input, weight and bias cast up), the result cast back to the input's
    dtype: the variance of a fp16 row of ~1000 activations overflows long before the activations do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class Fp32Conv2d(nn.Conv2d):
    """nn.Conv2d computed in float32, the result cast back to the input's dtype. The only convolutions are the
    towers' patch embeddings (a negligible share of the FLOPs), and ONNX opset 18's Conv takes no bf16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.float() if self.bias is not None else None
        return self._conv_forward(x.float(), self.weight.float(), bias).to(x.dtype)


#: The modules to_reduced_precision computes in float32, and their float32 variants. The variants only override
#: forward, so a module is switched by its class and keeps its parameters.
FP32_COMPUTE = {nn.LayerNorm: Fp32LayerNorm, nn.Conv2d: Fp32Conv2d}


def fp32_softmax_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: Optional[torch.Tensor], scaling: float, dropout: float = 0.0,
                           **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention for the three backbones with the scores, the additive mask and the softmax in float32 and the
    two matmuls in the model's dtype. query (B, H, Q, d), key / value (B, H_kv, K, d); attention_mask None or
    (B, 1, Q, >=K) additive in the model's dtype (0 or finfo(dtype).min, representable in that dtype).
    Returns (B, Q, H, d) and the probabilities (B, H, Q, K), as transformers' attention functions do."""
    groups = query.shape[1] // key.shape[1]  # grouped-query attention: each key / value head serves `groups`
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)).float() * scaling
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]].float()
    probs = torch.softmax(scores, dim=-1).to(query.dtype)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def to_reduced_precision(model: PixelVLA, dtype: torch.dtype) -> PixelVLA:
    """Cast ``model`` in place to ``dtype`` (bf16 / fp16) for export, keeping float32 where the low precision
    breaks the numbers: LayerNorms and the patch-embedding convolutions compute in float32 (FP32_COMPUTE; Llama's
    RMSNorm already does), the attention softmax runs in float32 (fp32_softmax_attention), and FP32_BUFFERS
    stay float32. The actions are unchanged up to rounding; float32 models are returned as they are."""
    if dtype == torch.float32:
        return model
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(FP32_SOFTMAX_ATTENTION, fp32_softmax_attention)
    AttentionMaskInterface.register(FP32_SOFTMAX_ATTENTION, eager_mask)  # additive, finfo(dtype).min fill
    kept = {name: buf.clone() for name, buf in model.named_buffers() if name.rsplit(".", 1)[-1] in FP32_BUFFERS}
    model.to(dtype)
    for name, buf in kept.items():
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner), attr, buf)
    for module in model.modules():
        if type(module) in FP32_COMPUTE:
            module.__class__ = FP32_COMPUTE[type(module)]
    for backbone in (model.vision.dino, model.vision.siglip, model.llm):
        backbone.config._attn_implementation = FP32_SOFTMAX_ATTENTION
    return model


# ---------------------------------------------------------------------------------------------------
# Example inputs (exporters, benchmarks, tests)
# ---------------------------------------------------------------------------------------------------
def example_inputs(config: PixelVLAConfig, batch_size: int = 2, text_len: int = 24,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic forward inputs (keys = input_names(config), in order):

    pixel_values (B,3,224,224) float32 [0,1]; input_ids (B,T) int64; attention_mask (B,T) int64 (the
    last sample is right-padded by 3 tokens when B > 1); target_mask (B,224,224) float32 (sample 0: a
    square, the last sample: empty when B > 1); prompt_coords (B,K,P,2) float32; prompt_point_mask
    (B,K,P) float32; prompt_types (B,K) int64; prompt_labels (B,K) int64; prompt_masks (B,K,S,S) float32
    (sample 0 holds one prompt of each type when K >= 4); proprio (B, P) float32 when proprio_dim > 0;
    click_to_tcp (B, 4, 3) float32 when config.prompt_offsets (a top-down view; the last sample: no
    calibration when B > 1).
    """
    g = torch.Generator().manual_seed(seed)
    s = config.image_size
    pixel_values = torch.rand(batch_size, 3, s, s, generator=g)
    input_ids = torch.randint(3, min(config.vocab_size, 259), (batch_size, text_len), generator=g)
    input_ids[:, 0] = 1  # BOS
    attention_mask = torch.ones(batch_size, text_len, dtype=torch.long)
    if batch_size > 1 and text_len > 4:
        attention_mask[-1, -3:] = 0
        input_ids[-1, -3:] = 0
    target_mask = torch.zeros(batch_size, s, s)
    target_mask[0, s // 4: s // 2, s // 3: 2 * s // 3] = 1.0
    m = np.zeros((s, s), bool)
    m[20:90, 100:180] = True
    all_types = [Point(50.0, 60.0), Line([(10.0, 10.0), (100.0, 40.0), (150.0, 200.0)]),
                 Box(30.0, 40.0, 120.0, 160.0, label=0), Mask(m)]
    prompts = [all_types[: config.max_prompts]] + [[Point(200.0 - 10 * i, 100.0, label=i % 2)]
                                                  for i in range(1, batch_size)]
    pt = batch_prompts(prompts, (s, s), config)
    out = {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask,
           "target_mask": target_mask, **pt}
    if config.proprio_dim:
        out[PROPRIO_INPUT] = torch.randn(batch_size, config.proprio_dim, generator=g)
    if config.prompt_offsets:
        out[CLICK_MAP_INPUT] = torch.from_numpy(EXAMPLE_CLICK_MAP).expand(batch_size, 4, 3).clone()
        if batch_size > 1:
            out[CLICK_MAP_INPUT][-1] = 0.0  # the last sample: no calibration
    return out
