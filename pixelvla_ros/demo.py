"""`make demo`: one simulated WidowX episode through the ROS stack, recorded to a video and a JSON result.

Starts the `demo` node set (simulator + chunk executor, the scripted expert standing in for the
policy) with `pixelvla-launch`, watches it from a node of its own (camera images, episode status,
action chunks), stops it when the episode ends, and writes `episode.gif` and `result.json` to a
fresh folder under `results/demo/`, whose path it prints.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixelvla-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="put_red_cube_on_plate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=90.0, help="give up after this many seconds")
    parser.add_argument("--out", type=Path, default=Path("results/demo"))
    opts = parser.parse_args(argv)

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", "95")
    import imageio.v3 as iio
    import rclpy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from pixelvla_ros import qos
    from pixelvla_ros.image_conversions import image_to_rgb
    from pixelvla_ros.launching.runner import start_in_background, stop_background
    from pixelvla_ros.msg import ActionChunk

    out = opts.out / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    print("pixelvla demo: no trained policy checkpoint is shipped yet, so the scripted expert (privileged "
          "simulator state) drives the arm through the same chunk executor, IK and controller path the policy uses.")

    log = open(out / "launch.log", "w")
    launch = start_in_background(["demo", f"task:={opts.task}", f"seed:={opts.seed}"], log)
    rclpy.init()
    node = rclpy.create_node("demo_recorder")
    frames: list[np.ndarray] = []
    episode: dict = {}
    chunk_delays: list[float] = []

    def on_chunk(msg: ActionChunk) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        chunk_delays.append(node.get_clock().now().nanoseconds * 1e-9 - stamp)

    node.create_subscription(Image, "/camera/image_raw", lambda m: frames.append(image_to_rgb(m)), qos.SENSOR)
    node.create_subscription(String, "/sim/episode", lambda m: episode.update(json.loads(m.data)), qos.LATCHED)
    node.create_subscription(ActionChunk, "/pixelvla/action_chunk", on_chunk, qos.COMMAND)
    started = time.monotonic()
    try:
        while time.monotonic() - started < opts.timeout and not episode.get("done") and launch.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        wall = time.monotonic() - started
        node.destroy_node()
        rclpy.try_shutdown()
        stop_background(launch)
        log.close()

    result = {
        "task": opts.task, "seed": opts.seed, "driver": "scripted-expert",
        "instruction": episode.get("instruction"), "success": bool(episode.get("success")),
        "steps": episode.get("step"), "finished": bool(episode.get("done")), "wall_time_s": round(wall, 2),
        "frames_recorded": len(frames),
        "chunk_delay_s": {  # image stamp -> chunk received by this recorder (includes DDS transport)
            "median": float(np.median(chunk_delays)) if chunk_delays else None,
            "p99": float(np.percentile(chunk_delays, 99)) if chunk_delays else None,
        },
        "launch_log": str(out / "launch.log"),
    }
    if frames:
        iio.imwrite(out / "episode.gif", np.stack(frames), duration=200, loop=0)
        result["video"] = str(out / "episode.gif")
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"pixelvla demo: results in {out.resolve()}")
    return 0 if result["finished"] else 1


if __name__ == "__main__":
    sys.exit(main())
