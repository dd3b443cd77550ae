"""Success table and plot from several `pixelvla-eval` runs (their summary.json + per-episode JSON).

    python -m pixelvla_training.report --run "CAT only (text)=build/proof/eval_cat" \
        --run "PUE + point prompt=build/proof/eval_pue_prompt" --table build/proof/table.md --plot docs/results.png

Each cell: successes / episodes, the rate, and its 95 % Wilson interval.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def load_run(directory: Path) -> dict[str, tuple[int, int]]:
    """task -> (successes, episodes) from the per-episode JSON files of an eval directory."""
    out: dict[str, list[int]] = {}
    for f in sorted(directory.glob("*.json")):
        if f.name == "summary.json":
            continue
        try:
            r = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue
        if not isinstance(r, dict) or "task" not in r or "success" not in r:
            continue
        k_n = out.setdefault(r["task"], [0, 0])
        k_n[0] += bool(r["success"])
        k_n[1] += 1
    return {t: (k, n) for t, (k, n) in out.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--plot", type=Path, required=True)
    opts = parser.parse_args(argv)
    runs = {}
    for item in opts.run:
        name, d = item.split("=", 1)
        runs[name] = load_run(Path(d))
    tasks = sorted({t for r in runs.values() for t in r}, key=lambda t: ("this" in t, t))
    lines = ["| condition | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for name, r in runs.items():
        cells = []
        for t in tasks:
            if t not in r:
                cells.append("-")
                continue
            k, n = r[t]
            lo, hi = wilson(k, n)
            cells.append(f"{k}/{n} = **{100 * k / n:.0f} %** [{100 * lo:.0f}-{100 * hi:.0f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    opts.table.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(tasks)), 3.8))
    width = 0.8 / max(1, len(runs))
    x = np.arange(len(tasks))
    for i, (name, r) in enumerate(runs.items()):
        rates = [r[t][0] / r[t][1] if t in r else 0 for t in tasks]
        err = np.array([[rates[j] - wilson(*r[t])[0], wilson(*r[t])[1] - rates[j]] if t in r else [0, 0]
                        for j, t in enumerate(tasks)]).T
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, [100 * v for v in rates], width, yerr=100 * err,
               capsize=2, label=name)
    ax.set_xticks(x, [t.replace("put_", "").replace("_", " ") for t in tasks], fontsize=8)
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("closed loop through the ROS stack (95 % Wilson intervals)")
    fig.tight_layout()
    opts.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(opts.plot, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
