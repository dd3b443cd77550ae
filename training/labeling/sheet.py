"""Contact sheet for a person to inspect labels: a PNG grid of sampled records (image, mask overlay in red,
foreground points green, background points red, line yellow, box cyan, region proposal dashed white) per
worker under `<out>/contact_sheet/`, and `<out>/contact_sheet.html` showing every sheet plus the manifest.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from pixelvla_training.labeling import format as fmt


def pick_records(root: Path, shards: list[int], count: int) -> list[dict]:
    """Up to `count` records of `shards`: keyframes first (one per episode), then evenly spaced others."""
    records = []
    for index in shards:
        if fmt.read_sidecar(root, index, check_hash=False) is not None:
            records.extend(fmt.iter_shard(root / fmt.shard_name(index)))
    keys = [r for r in records if r.get("keyframe")]
    others = [r for r in records if not r.get("keyframe") and r["mask_area"] > 0]
    chosen = keys[:count]
    if len(chosen) < count and others:
        step = max(1, len(others) // (count - len(chosen)))
        chosen += others[::step][: count - len(chosen)]
    return chosen


def write_contact_sheet(root: str | Path, source, shards: list[int], count: int, tag: str) -> Path | None:
    """Draw the sheet of this worker's `shards`; returns the HTML path (None if nothing to show)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    root = Path(root)
    records = pick_records(root, shards, count)
    out_dir = root / "contact_sheet"
    out_dir.mkdir(exist_ok=True)
    if records:
        cols = min(4, len(records))
        rows = (len(records) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for ax, r in zip(axes.ravel(), records):
            try:
                image = source.load_frame(r["source"]["episode"], r["source"]["frame"])
            except Exception:
                image = np.zeros((*r["image_size"], 3), np.uint8)
            mask = fmt.decode_rle(r["mask"])
            shown = image.astype(float) / 255.0
            shown[mask] = 0.5 * shown[mask] + 0.5 * np.array([1.0, 0.0, 0.0])
            h, w = mask.shape
            ax.imshow(shown, extent=(0, w, h, 0), interpolation="nearest")
            for p in r["prompts"]["points"]:
                ax.plot(p["x"], p["y"], "o", ms=4, mec="k", mfc="lime" if p["label"] else "red")
            for line in r["prompts"]["lines"]:
                xy = np.array(line["points"])
                ax.plot(xy[:, 0], xy[:, 1], "-", color="yellow", lw=1.2)
            for b in r["prompts"]["boxes"][:1]:
                ax.add_patch(Rectangle((b["x0"], b["y0"]), b["x1"] - b["x0"], b["y1"] - b["y0"], fill=False, ec="cyan"))
            if r.get("proposal"):
                x0, y0, x1, y1 = r["proposal"]
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", ls="--"))
            s = r["scores"]
            ax.set_title(f"{r['episode_id'][-24:]} f{r['frame_index']}{' KEY' if r['keyframe'] else ''}\n"
                         f"{r['noun']!r} det {s['detector']:.2f} mask {s['mask']:.2f}", fontsize=7)
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
        fig.tight_layout()
        fig.savefig(out_dir / f"sheet-{tag}.png", dpi=80)
        plt.close(fig)
    pngs = sorted(out_dir.glob("sheet-*.png"))
    manifest = json.loads((root / fmt.MANIFEST).read_text()) if (root / fmt.MANIFEST).is_file() else {}
    summary = {k: manifest.get(k) for k in ("num_records", "num_episodes", "num_skipped", "skipped_reasons",
                                            "num_shards", "expected_shards", "complete")}
    body = "".join(f'<h3>{html.escape(p.name)}</h3><img src="contact_sheet/{html.escape(p.name)}">' for p in pngs)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Pixel labels: {html.escape(root.name)}</title>"
            f"</head><body><h1>Pixel labels: {html.escape(str(root))}</h1><pre>{html.escape(json.dumps(summary, indent=1))}"
            f"</pre><p>red: mask; green/red dots: foreground/background points; yellow: line; cyan: box; "
            f"dashed white: region proposal</p>{body}</body></html>")
    path = root / "contact_sheet.html"
    fmt.atomic_write_bytes(path, page.encode())
    return path


__all__ = ["write_contact_sheet", "pick_records"]
