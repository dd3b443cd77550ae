"""Closed loop without ROS: a checkpoint drives `TabletopEnv` directly, for quick checks between training
runs (`pixelvla-eval` through the ROS stack is the evaluation that counts).

Each step the policy gets the current image, instruction and robot state (and, prompted, the click on the
target from the first frame plus the target's mask, as `pixelvla-eval --operator prompt --mask
ground_truth`; with --place-prompt also a place click on the destination; with --words-prompt, no operator:
the words' clicks, segmented by the simulator's masks, prompt it: training.episodes.dagger). Its chunks are
executed as the stack executes them: through the chunk executor with the robot's parameters, on the simulation
clock (`pixelvla_sim.control.ChunkControl`).

    python -m pixelvla_training.episodes.rollout [--model DIR] [--text-only | --place-prompt | --words-prompt] [--tasks a,b] [--episodes 10]
        [--seed0 1000] [--robot-config YAML]

Prints one JSON line per episode (success, first object reached / touched / lifted, closest approach of the TCP to
the target in cm and the TCP's offset from the target there, world x, y, z in cm; once the target was lifted
first, how close it came to the destination's centre, horizontally, in cm) and a summary line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import numpy as np

from pixelvla_training.report import went_for_target


def run_episode(env, driver, task: str, seed: int) -> dict:
    """One episode of `driver` on (task, seed); returns its record. `driver.chunk(obs)` gives the (N, 7)
    chunk (a PolicyDriver), asked at the policy node's rate; a driver without `chunk` (any expert.Driver)
    gives one action per call, asked every period as the expert is recorded."""
    obs = env.reset(task, seed)
    driver.reset(obs)
    chunk = getattr(driver, "chunk", None)
    target, destination = obs["target_object"], env.spec.destination
    closest, offset, carried = float("inf"), np.zeros(3), float("inf")
    for step in range(env.max_episode_steps):
        obs = env.chunk_control.step_policy(obs, chunk) if chunk else env.step_ee_delta(driver(obs))
        poses = obs["object_poses"]
        tcp_from_target = obs["tcp_position"] - poses[target][:3]
        if np.linalg.norm(tcp_from_target) < closest:
            closest, offset = float(np.linalg.norm(tcp_from_target)), tcp_from_target
        if obs["first_lifted"] == target:
            carried = min(carried, float(np.linalg.norm(poses[target][:2] - poses[destination][:2])))
        if obs["success"]:
            break
    return dict(task=task, seed=seed, success=bool(obs["success"]), steps=step + 1, target_object=target,
                first_reached=obs["first_reached"], first_touched=obs["first_touched"], first_lifted=obs["first_lifted"],
                closest_cm=round(100 * closest, 1), closest_offset_cm=[round(100 * float(d), 1) for d in offset],
                carried_to_cm=round(100 * carried, 1) if np.isfinite(carried) else None)


def summarize(records: list[dict]) -> dict:
    """Counts over episodes: successes, target reached / touched / lifted first, median closest approach (cm)."""
    return dict(episodes=len(records), success=sum(r["success"] for r in records),
                target_reached_first=sum(went_for_target(r, "first_reached") for r in records),
                target_touched_first=sum(went_for_target(r, "first_touched") for r in records),
                target_lifted_first=sum(went_for_target(r, "first_lifted") for r in records),
                median_closest_cm=statistics.median(r["closest_cm"] for r in records) if records else None)


def main(argv=None) -> int:
    from pixelvla_model import DEFAULT_CHECKPOINT
    from pixelvla_training.episodes.dagger import PolicyDriver
    from pixelvla_sim.env import TabletopEnv
    from pixelvla_sim.tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_CHECKPOINT),
                        help="checkpoint directory (from_pretrained layout; default: the shipped checkpoint)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--text-only", action="store_true", help="no prompt and no mask: the instruction alone")
    mode.add_argument("--place-prompt", action="store_true",
                      help="also a place prompt: a click on the destination in the first frame")
    mode.add_argument("--words-prompt", action="store_true",
                      help="no operator: the words' clicks in the first frame become the prompts, the target's "
                           "box segmented by the simulator's masks (standing in for SAM 2)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    parser.add_argument("--episodes", type=int, default=10, help="episodes (seeds) per task")
    parser.add_argument("--seed0", type=int, default=1000, help="first seed")
    parser.add_argument("--robot-config", default=None,
                        help="robot YAML whose executor parameters run the chunks (default: "
                             "config/robots/widowx_bridge.yaml); e.g. a copy with strategy: temporal_ensemble")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    try:  # the robot file first: a wrong one is reported before the model loads
        env = TabletopEnv(render_size=(224, 224), robot_config=args.robot_config)
    except (OSError, ValueError) as exc:
        parser.error(f"--robot-config: {exc}")
    try:
        driver = PolicyDriver(args.model, prompted=not (args.text_only or args.words_prompt), place=args.place_prompt,
                              words=args.words_prompt)
    except (OSError, ValueError) as exc:
        env.close()
        parser.error(f"--model: {exc}")
    records = []
    with env:
        for task in tasks:
            for seed in range(args.seed0, args.seed0 + args.episodes):
                records.append(run_episode(env, driver, task, seed))
                print(json.dumps(records[-1]), flush=True)
    print(json.dumps({"summary": summarize(records)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
