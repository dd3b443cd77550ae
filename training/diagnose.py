"""Does a trained policy use what it is shown? Four measurements on held-out simulator episodes.

    python -m pixelvla_training.diagnose --model build/proof/pue/final --episodes build/proof/heldout

1. ``prompt_sensitivity``: the largest change of the predicted chunk (normalised units, the network's output)
   when a point prompt, or a square target mask, moves across the image, on one frame and robot state;
2. ``attention``: per LLM layer, the largest share any head of the last text token (the token whose hidden
   state the decoder reads) gives to each token group (bos, visual, pixel, prompt, state, text);
3. ``direction``: correlation of the predicted first action's dx and dy with the expert's, on the first
   ``--steps`` steps of every episode, with a point prompt + the target mask, and text only (None where a
   series is constant).

4. ``words_clicks`` (a model with text grounding): where the instruction alone clicks on each episode's first
   frame, against the target's mask and the place mask (None for other models).

A model that ignores the prompt shows near-zero sensitivity and attention on the prompt and pixel tokens,
and the same direction correlations with and without the prompt.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pixelvla_model import PixelVLAPolicy, Point
from pixelvla_robots.camera import image_xy


def _inputs(policy, image, instruction, prompts=None, mask=None, state=None) -> dict:
    proprio = [policy.processor.normalize_proprio(state)] if policy.config.proprio_dim else None
    # a model that places its prompts from the gripper gets no calibration here: what it is shown, not where
    uncalibrated = [np.zeros((4, 3), np.float32)] if policy.config.prompt_offsets else None
    return policy.processor([image], [instruction], [prompts], [mask], proprio, uncalibrated)


def _centre_point(mask: np.ndarray):
    """The mask pixel nearest to the mask's centroid (a click on the object)."""
    rows, cols = np.nonzero(mask)
    k = int(np.argmin((cols - cols.mean()) ** 2 + (rows - rows.mean()) ** 2))
    return Point(*image_xy((cols[k], rows[k])).tolist())


def prompt_sensitivity(policy, image: np.ndarray, instruction: str, state) -> dict[str, float]:
    """Max |change| of the normalised chunk as a point, then a 1/8-image square mask, moves over a 3x3 grid."""
    h, w = image.shape[:2]
    spots = [(w * fx, h * fy) for fy in (0.25, 0.5, 0.75) for fx in (0.25, 0.5, 0.75)]
    points = [policy.infer(_inputs(policy, image, instruction, [Point(x, y)], None, state))[0] for x, y in spots]
    masks = []
    for x, y in spots:
        m = np.zeros((h, w), bool)
        m[int(y - h / 16):int(y + h / 16), int(x - w / 16):int(x + w / 16)] = True
        masks.append(policy.infer(_inputs(policy, image, instruction, None, m, state))[0])
    spread = lambda outs: float(np.max(np.ptp(np.stack(outs), axis=0)))  # noqa: E731
    return {"point": spread(points), "mask": spread(masks)}


def attention_shares(policy, inputs: dict) -> list[dict[str, float]]:
    """Per layer: token group -> the largest share of the last text token's attention over the heads."""
    model, c = policy.model, policy.config
    llm = model.llm
    old = llm.config._attn_implementation
    caught: list[torch.Tensor] = []
    hooks = [layer.self_attn.register_forward_hook(lambda _m, _i, out: caught.append(out[1]))
             for layer in llm.layers]
    llm.config._attn_implementation = "eager"  # sdpa does not return the weights
    try:
        with torch.inference_mode():
            model(**inputs)
    finally:
        llm.config._attn_implementation = old
        for hook in hooks:
            hook.remove()
    bounds, start = {}, 1
    for name, size in (("visual", c.num_patches), ("pixel", c.pixel_tokens), ("prompt", c.max_prompts),
                       ("state", 1 if c.proprio_dim else 0)):
        bounds[name] = (start, start + size)
        start += size
    last = int(inputs["attention_mask"][0].nonzero().max()) + c.prefix_tokens
    shares = []
    for weights in caught:  # (B, heads, S, S)
        row = weights[0, :, last].float()  # (heads, S)
        groups = {"bos": row[:, :1]} | {k: row[:, a:b] for k, (a, b) in bounds.items()} | {"text": row[:, start:]}
        shares.append({k: round(float(v.sum(-1).max()), 4) for k, v in groups.items()})
    return shares


def direction_correlation(policy, episodes, steps: int) -> dict[str, dict[str, float]]:
    """Correlation of the predicted first action's dx, dy (robot units) with the demonstration's."""
    predicted: dict[str, list] = {"prompt": [], "text": []}
    expert = []
    for ep in episodes:
        if ep.target_masks is None or not ep.target_masks[0].any():
            continue
        point = _centre_point(ep.target_masks[0])
        for t in range(min(steps, ep.num_steps)):
            state = ep.proprio[t] if ep.proprio is not None else None
            kw = {"proprio": state} if policy.config.proprio_dim else {}
            predicted["prompt"].append(policy.predict(ep.images[t], ep.instruction, [point], ep.target_masks[t], **kw)[0, :2])
            predicted["text"].append(policy.predict(ep.images[t], ep.instruction, **kw)[0, :2])
            expert.append(ep.actions[t, :2])
    def corr(a: np.ndarray, b: np.ndarray):
        """Pearson correlation, None where either side is constant (undefined)."""
        return round(float(np.corrcoef(a, b)[0, 1]), 3) if a.std() > 1e-12 and b.std() > 1e-12 else None

    e = np.array(expert)
    out = {}
    for cond, p in predicted.items():
        p = np.array(p)
        out[cond] = {axis: corr(p[:, i], e[:, i]) for i, axis in enumerate(("dx", "dy"))}
    out["samples"] = len(e)
    return out


def words_clicks(policy, episodes) -> Optional[dict[str, float]]:
    """Where the instruction alone clicks (config.text_grounding), on each episode's first frame: the share of
    target clicks within one patch width of the target mask's centroid and their median distance (fractions
    of the image), and the share of place clicks inside the place mask. None for a model without the maps."""
    from pixelvla_model.modeling import TextGrounding
    from pixelvla_training.datasets.base import mask_centroid

    if not policy.config.text_grounding:
        return None
    grid = policy.config.grid_size
    distances, on_place = [], []
    for ep in episodes:
        if ep.target_masks is None or not ep.target_masks[0].any():
            continue
        state = ep.proprio[0] if policy.config.proprio_dim else None
        with torch.no_grad():
            logits = policy.model(**_inputs(policy, ep.images[0], ep.instruction, state=state)).grounding_logits
        xy = TextGrounding.click(logits[:, 0], grid)[1][0].numpy()
        distances.append(float(np.linalg.norm(xy - mask_centroid(ep.target_masks[0]))))
        if logits.shape[1] > 1 and ep.place_mask is not None and ep.place_mask.any():
            px, py = TextGrounding.click(logits[:, 1], grid)[1][0].numpy()
            h, w = ep.place_mask.shape
            on_place.append(bool(ep.place_mask[min(int(py * h), h - 1), min(int(px * w), w - 1)]))
    d = np.array(distances)
    return {"episodes": len(d), "target_within_a_patch": round(float((d < 1.0 / grid).mean()), 3),
            "target_median_distance": round(float(np.median(d)), 3),
            "place_inside": round(float(np.mean(on_place)), 3) if on_place else None}


def diagnose(model_dir: str | Path, episodes_dir: str | Path, steps: int = 8, frame: int = 5) -> dict:
    from pixelvla_training.datasets.sim import read_sim_episodes

    policy = PixelVLAPolicy.from_pretrained(model_dir)
    episodes = list(read_sim_episodes(episodes_dir, image_size=policy.config.image_size))
    if not episodes:
        raise ValueError(f"no usable episodes in {episodes_dir}")
    ep = episodes[0]
    t = min(frame, ep.num_steps - 1)
    state = ep.proprio[t] if policy.config.proprio_dim else None
    inputs = _inputs(policy, ep.images[t], ep.instruction, [_centre_point(ep.target_masks[t])], ep.target_masks[t], state)
    return {"model": str(model_dir), "episodes": len(episodes),
            "prompt_sensitivity": prompt_sensitivity(policy, ep.images[t], ep.instruction, state),
            "attention": attention_shares(policy, inputs),
            "direction": direction_correlation(policy, episodes, steps),
            "words_clicks": words_clicks(policy, episodes)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a from_pretrained checkpoint directory")
    parser.add_argument("--episodes", required=True, help="a simulator dataset directory (held-out seeds)")
    parser.add_argument("--steps", type=int, default=8, help="first steps of each episode for the direction check")
    parser.add_argument("--out", type=Path, help="also write the report here (JSON)")
    opts = parser.parse_args(argv)
    report = diagnose(opts.model, opts.episodes, opts.steps)
    text = json.dumps(report, indent=1)
    print(text)
    if opts.out:
        opts.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
