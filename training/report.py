"""Tables and plot from several `pixelvla-eval` runs (their per-episode JSON).

    python -m pixelvla_training.report --run "CAT only (text)=build/proof/eval_cat" \
        --run "PUE + point prompt=build/proof/eval_pue_prompt" --table build/proof/table.md --plot docs/results.png

Four metrics per task: success; "target reached first", "target touched first" and "target lifted
first": the first object other than the plate and bowl that the TCP came within 3 cm of (that the
gripper touched, that was raised 3 cm) was the target, i.e. the policy went for the right object.
Each cell: count / episodes, the rate, and its 95 % Wilson interval; "-" where a run did not record
the metric (runs from before `first_lifted` existed).
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


def fisher_exact(a: int, n1: int, b: int, n2: int, alternative: str = "two-sided") -> float:
    """Fisher's exact test of a/n1 successes against b/n2 (hypergeometric, exact from math.comb): the p-value
    that the two rates are equal. alternative "two-sided" sums the tables no more likely than the observed one;
    "greater" is the one-sided p that the first rate is the higher (tables with at least `a` first successes)."""
    if alternative not in ("two-sided", "greater"):
        raise ValueError(f"alternative must be 'two-sided' or 'greater', got {alternative!r}")
    k, n = a + b, n1 + n2
    tables = range(max(0, k - n2), min(k, n1) + 1)  # possible first-group successes with the margins fixed

    def prob(x: int) -> float:
        return math.comb(n1, x) * math.comb(n2, k - x) / math.comb(n, k)

    if alternative == "greater":
        return min(1.0, sum(prob(x) for x in tables if x >= a))
    observed = prob(a)
    return min(1.0, sum(prob(x) for x in tables if prob(x) <= observed * (1 + 1e-9)))


METRICS = {"success": "success", "first_reached": "target reached first", "first_touched": "target touched first",
           "first_lifted": "target lifted first"}
APPROACH_KEYS = ("first_reached", "first_touched", "first_lifted")  # episode keys: first object reached, touched, lifted


def went_for_target(episode: dict, key: str) -> bool:
    """Whether the episode's `key` (one of APPROACH_KEYS) object is its target."""
    return episode.get(key) is not None and episode.get(key) == episode.get("target_object")


def load_run(directory: Path) -> dict[str, dict[str, int]]:
    """task -> {metric: count for each of METRICS, "episodes": count} from the per-episode JSON files
    of an eval directory; a metric no episode of the task records counts None."""
    out: dict[str, dict[str, int]] = {}
    for f in sorted(directory.glob("*.json")):
        if f.name == "summary.json":
            continue
        try:
            r = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue
        if not isinstance(r, dict) or "task" not in r or "success" not in r:
            continue
        counts = out.setdefault(r["task"], {"success": 0, **dict.fromkeys(APPROACH_KEYS), "episodes": 0})
        counts["success"] += bool(r["success"])
        for key in APPROACH_KEYS:
            if key in r:
                counts[key] = (counts[key] or 0) + went_for_target(r, key)
        counts["episodes"] += 1
    return out


def table(runs: dict[str, dict], tasks: list[str], metric: str) -> list[str]:
    """Markdown rows: one per run, one cell per task."""
    lines = [f"| {METRICS[metric]} | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for name, r in runs.items():
        cells = []
        for t in tasks:
            if t not in r or r[t][metric] is None:
                cells.append("-")
                continue
            k, n = r[t][metric], r[t]["episodes"]
            lo, hi = wilson(k, n)
            cells.append(f"{k}/{n} = **{100 * k / n:.0f} %** [{100 * lo:.0f}-{100 * hi:.0f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


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
    text = "\n\n".join("\n".join(table(runs, tasks, metric)) for metric in METRICS) + "\n"
    opts.table.write_text(text)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(len(METRICS), 1, figsize=(max(6, 1.8 * len(tasks)), 3.4 * len(METRICS)), sharex=True)
    width = 0.8 / max(1, len(runs))
    x = np.arange(len(tasks))
    for ax, (metric, label) in zip(axes, METRICS.items()):
        for i, (name, r) in enumerate(runs.items()):
            k_n = [(r[t][metric], r[t]["episodes"]) if t in r and r[t][metric] is not None else (0, 0) for t in tasks]
            rates = np.array([k / n if n else 0.0 for k, n in k_n])
            bounds = np.array([wilson(k, n) for k, n in k_n])
            err = np.stack([rates - bounds[:, 0], bounds[:, 1] - rates]).clip(min=0)
            ax.bar(x + (i - (len(runs) - 1) / 2) * width, 100 * rates, width, yerr=100 * err, capsize=2, label=name)
        ax.set_ylabel(f"{label} (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[0].set_title("closed loop through the ROS stack (95 % Wilson intervals)")
    axes[-1].set_xticks(x, [t.replace("put_", "").replace("_", " ") for t in tasks], fontsize=8)
    fig.tight_layout()
    opts.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(opts.plot, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
