"""`pixelvla-eval`: seeded simulator episodes through the ROS stack, scored.

Starts the `sim` node set (simulator + policy + prompt + segmenter + executor) once, then for each
(task, seed) resets the simulator over `/sim/reset` and waits for `/sim/episode` to report the episode
done. Writes to `--out`: one JSON per episode, `summary.json`, `results.md` (per task: success
rate, and how often the gripper reached and touched the target before any other object, which shows
whether the policy went for the right object even when it fails to place it), `success.png` (a
bar plot) and GIFs of failed episodes, and prints the table.

    pixelvla-eval --model path/to/model --tasks all --episodes 50
    pixelvla-eval --expert --tasks plain --episodes 5      # the scripted expert: a sanity baseline
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from pixelvla_ros.launching.environment import missing_defaults


def task_list(spec: str) -> list[str]:
    from pixelvla_sim.tasks import TASKS, get_task

    if spec == "all":
        return sorted(TASKS)
    if spec in ("plain", "prompted"):
        return sorted(n for n, t in TASKS.items() if t.prompted == (spec == "prompted"))
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        get_task(name)  # ValueError listing the known tasks
    return names


def stack_command(opts: argparse.Namespace) -> list[str]:
    console = [f"console_port:={opts.console}"] if opts.console else ["console:=false"]
    if opts.expert:
        return ["demo", "task:=put_red_cube_on_plate", *console]
    return ["sim", f"model:={opts.model}", f"backend:={opts.backend}", f"operator:={opts.operator}", f"rate:={opts.rate}",
            f"mask_topic:={'sim/target_mask' if opts.mask == 'ground_truth' else 'pixelvla/mask'}", *console]


def main(argv: list[str] | None = None, listening=lambda: True) -> int:
    """`listening`: for a caller with nodes of its own (the demo's film), true once they hear the stack; the first
    episode waits for it, since a camera frame sent before a subscriber is matched is lost to it."""
    parser = argparse.ArgumentParser(prog="pixelvla-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="model directory or engine bundle (empty: the default model)")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
    parser.add_argument("--expert", action="store_true", help="evaluate the scripted expert instead of a policy")
    parser.add_argument("--tasks", default="all", help="all, plain, prompted, or a comma-separated list")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task")
    parser.add_argument("--seed0", type=int, default=1000, help="seeds seed0 .. seed0 + episodes - 1")
    parser.add_argument("--operator", default="prompt", choices=["none", "click", "prompt", "prompt_place", "words"],
                        help="how the operator stand-in names the target (none: text only; prompt_place: a prompt "
                             "on the target and a place prompt on the destination; words: it accepts the prompts "
                             "the policy's words propose)")
    parser.add_argument("--mask", default="segmenter", choices=["segmenter", "ground_truth"],
                        help="the target mask the policy gets: from the segmenter or the simulator's ground truth")
    parser.add_argument("--rate", type=float, default=5.0,
                        help="control steps per wall-clock second; the simulation is 5 Hz, so 10 runs at twice real time")
    parser.add_argument("--episode-timeout", type=float, default=60.0, help="seconds before an episode counts as failed")
    parser.add_argument("--videos", default="failures", choices=["failures", "all", "none"], help="episodes to film (GIF)")
    parser.add_argument("--max-failure-videos", type=int, default=5)
    parser.add_argument("--reset-timeout", type=float, default=30.0,
                        help="seconds for the simulator to start an episode; a missed reset counts as a failed episode")
    parser.add_argument("--console", type=int, default=0, metavar="PORT",
                        help="serve the operator console on 127.0.0.1:PORT to watch the episodes (0: no console)")
    parser.add_argument("--out", type=Path, default=Path("results/eval"))
    opts = parser.parse_args(argv)
    try:
        tasks = task_list(opts.tasks)
    except ValueError as exc:
        parser.error(str(exc))
    if opts.episodes < 1:
        parser.error("--episodes must be at least 1")
    if opts.model and not Path(opts.model).exists():
        parser.error(f"--model {opts.model}: no such directory")
    if opts.operator == "none" and opts.mask == "ground_truth":
        parser.error("--operator none with --mask ground_truth gives the target away: text-only runs take --mask segmenter")
    os.environ.update(missing_defaults())  # DDS on localhost, the Fast DDS profile for camera frames
    opts.out.mkdir(parents=True, exist_ok=True)
    results = run_episodes(opts, tasks, listening)
    write_report(opts, results)
    return 0


def run_episodes(opts: argparse.Namespace, tasks: list[str], listening=lambda: True) -> list[dict]:
    import rclpy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from pixelvla_ros import qos
    from pixelvla_ros.image_conversions import image_to_rgb
    from pixelvla_ros.launching.runner import start_in_background, stop_background
    from pixelvla_ros.msg import ActionChunk, PolicyStatus

    log = open(opts.out / "launch.log", "w")
    launch = start_in_background(stack_command(opts), log)
    rclpy.init()
    node = rclpy.create_node("evaluator")
    state: dict = {"episode": {}, "frames": [], "latencies": [], "active": opts.expert}
    node.create_subscription(String, "/sim/episode", lambda m: state["episode"].update(json.loads(m.data)), qos.LATCHED)
    node.create_subscription(Image, "/camera/image_raw", lambda m: state["frames"].append(image_to_rgb(m)), qos.SENSOR)
    node.create_subscription(ActionChunk, "/pixelvla/action_chunk",
                             lambda m: state["latencies"].append(m.inference_latency), qos.COMMAND)
    node.create_subscription(PolicyStatus, "/pixelvla/status",
                             lambda m: state.update(active=state["active"] or m.state == PolicyStatus.ACTIVE), qos.LATCHED)
    reset = node.create_publisher(String, "/sim/reset", qos.COMMAND)

    def spin_until(condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and launch.poll() is None:
            if condition():
                return True
            rclpy.spin_once(node, timeout_sec=0.05)
        return condition()

    def stack_ready() -> bool:  # policy active, simulator and executor listening, the caller's nodes too
        return (state["active"] and node.count_subscribers("/sim/reset") > 0
                and node.count_subscribers("/pixelvla/action_chunk") > 0 and listening())

    results = []
    try:
        if not spin_until(stack_ready, 120):
            raise RuntimeError(f"the stack did not come up; see {opts.out / 'launch.log'}")
        total = len(tasks) * opts.episodes
        for task in tasks:
            for seed in range(opts.seed0, opts.seed0 + opts.episodes):
                state["episode"].clear()
                reset.publish(String(data=json.dumps({"task": task, "seed": seed})))
                started = time.monotonic()
                state["frames"].clear()
                state["latencies"].clear()
                if spin_until(lambda: state["episode"].get("task") == task and state["episode"].get("seed") == seed,
                              opts.reset_timeout):
                    finished = spin_until(lambda: state["episode"].get("done"), opts.episode_timeout)
                else:
                    print(f"the simulator did not start {task}/{seed} within {opts.reset_timeout} s: counted as failed")
                    finished = False
                episode = dict(state["episode"])
                result = {
                    "task": task, "seed": seed, "success": bool(episode.get("success")), "steps": episode.get("step"),
                    "target_object": episode.get("target_object"), "first_reached": episode.get("first_reached"),
                    "first_touched": episode.get("first_touched"), "first_lifted": episode.get("first_lifted"),
                    "finished": finished, "wall_time_s": round(time.monotonic() - started, 2),
                    "instruction": episode.get("instruction"),
                    "mean_inference_latency_s": float(np.mean(state["latencies"])) if state["latencies"] else None,
                    "driver": "scripted-expert" if opts.expert else (opts.model or "default-checkpoint"),
                    "operator": opts.operator, "mask": opts.mask,
                }
                failures = sum(not r["success"] for r in results)
                film = opts.videos == "all" or (opts.videos == "failures" and not result["success"]
                                                and failures < opts.max_failure_videos)
                if film and state["frames"]:
                    import imageio.v3 as iio

                    video = opts.out / f"{'episode' if result['success'] else 'failure'}_{task}_seed{seed}.gif"
                    iio.imwrite(video, np.stack(state["frames"]), duration=200, loop=0)  # ms: the 5 Hz simulation
                    result["video"] = str(video)
                (opts.out / f"episode_{task}_seed{seed}.json").write_text(json.dumps(result, indent=2))
                results.append(result)
                print(f"[{len(results)}/{total}] {task} seed {seed}: {'success' if result['success'] else 'failure'} "
                      f"in {result['steps']} steps", flush=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        stop_background(launch)
        log.close()
    return results


def write_report(opts: argparse.Namespace, results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pixelvla_training.report import APPROACH_KEYS, went_for_target

    tasks = sorted({r["task"] for r in results})
    rates = {t: float(np.mean([r["success"] for r in results if r["task"] == t])) for t in tasks}
    target_first = {key: {t: float(np.mean([went_for_target(r, key) for r in results if r["task"] == t])) for t in tasks}
                    for key in APPROACH_KEYS}
    counts = {t: sum(r["task"] == t for r in results) for t in tasks}
    summary = {"driver": results[0]["driver"] if results else None, "operator": opts.operator, "mask": opts.mask,
               "episodes_per_task": opts.episodes, "seeds": [opts.seed0, opts.seed0 + opts.episodes - 1],
               "success_rate": rates, "target_reached_first_rate": target_first["first_reached"],
               "target_touched_first_rate": target_first["first_touched"],
               "target_lifted_first_rate": target_first["first_lifted"], "overall": float(np.mean([r["success"] for r in results])) if results else 0.0}
    (opts.out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = ["| task | episodes | success rate | target reached first | target touched first | target lifted first |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {t} | {counts[t]} | {rates[t]:.0%} | "
              + " | ".join(f"{target_first[key][t]:.0%}" for key in APPROACH_KEYS) + " |" for t in tasks]
    lines.append(f"| **all** | {len(results)} | {summary['overall']:.0%} | | | |")
    table = "\n".join(lines)
    (opts.out / "results.md").write_text(f"# Evaluation: {summary['driver']}\n\n{table}\n")
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(tasks)), 3.2))
    ax.bar(range(len(tasks)), [rates[t] for t in tasks], color="tab:blue")
    ax.set_xticks(range(len(tasks)), [t.replace("put_", "").replace("_", " ") for t in tasks], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate")
    ax.set_title(f"{summary['driver']} ({opts.episodes} episodes/task)", fontsize=9)
    fig.tight_layout()
    fig.savefig(opts.out / "success.png", dpi=120)
    plt.close(fig)
    print(table)
    print(f"pixelvla-eval: results in {opts.out.resolve()}")


if __name__ == "__main__":
    sys.exit(main())
