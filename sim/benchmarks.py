"""Simulator cost per control step: IK, physics, RGB render and mask render, shadows off and on.

Run: ``python -m pixelvla_sim.benchmarks [--size 224] [--episodes 2] [--task put_red_cube_on_plate]``
Prints one JSON object: machine, MuJoCo version, GL backend, and per setting (shadows off / on) the mean,
median, p95 and min milliseconds of each part of a control step while the scripted expert runs episodes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from pixelvla_robots import wx250s
from pixelvla_sim.env import TabletopEnv
from pixelvla_sim.expert import ScriptedExpert


def _stats(values_s: list[float]) -> dict:
    ms = np.asarray(values_s) * 1e3
    return {"mean_ms": round(float(ms.mean()), 3), "median_ms": round(float(np.median(ms)), 3),
            "p95_ms": round(float(np.percentile(ms, 95)), 3), "min_ms": round(float(ms.min()), 3)}


def measure(shadows: bool, size: int, episodes: int, task: str, antialias: bool = False) -> dict:
    """Time the parts of each control step over `episodes` expert episodes of `task` (seeds 0..)."""
    parts: dict[str, list[float]] = {"ik": [], "physics": [], "render_rgb": [], "render_masks": [], "total": []}
    with TabletopEnv(render_size=(size, size), shadows=shadows, antialias=antialias) as env:
        env.reset(task, 0)  # warm-up: GL context, first frame
        for seed in range(episodes):
            expert = ScriptedExpert()
            obs = env.reset(task, seed)
            for _ in range(env.max_episode_steps):
                action = expert.act(obs)
                t0 = time.perf_counter()
                q = env.joint_positions()
                pos, rot = wx250s.fk(q)
                q_target = wx250s.solve_ik(q, *wx250s.apply_ee_delta(pos, rot, action[:3], action[3:6]))
                t1 = time.perf_counter()
                obs = env.step(q_target, action[6], render=False)
                t2 = time.perf_counter()
                obs["rgb"] = env.render()
                t3 = time.perf_counter()
                obs["masks"] = env.render_masks_now()
                t4 = time.perf_counter()
                for key, value in (("ik", t1 - t0), ("physics", t2 - t1), ("render_rgb", t3 - t2),
                                   ("render_masks", t4 - t3), ("total", t4 - t0)):
                    parts[key].append(value)
                if expert.phase == "done" and obs["success"]:
                    break
    return {"steps": len(parts["total"]), **{k: _stats(v) for k, v in parts.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224, help="square image size in pixels")
    parser.add_argument("--episodes", type=int, default=2, help="expert episodes per setting")
    parser.add_argument("--task", default="put_red_cube_on_plate")
    args = parser.parse_args(argv)
    import mujoco

    result = {
        "benchmark": "simulator control step (5 Hz: 100 physics steps of 2 ms) + IK + renders",
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "load_avg_1min": round(os.getloadavg()[0], 2)},
        "mujoco": mujoco.__version__, "gl_backend": os.environ.get("MUJOCO_GL"),
        "render_size": [args.size, args.size], "task": args.task,
        "shadows_off": measure(False, args.size, args.episodes, args.task),
        "shadows_on": measure(True, args.size, args.episodes, args.task),
    }
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
