"""`make demo`: one simulated WidowX episode through the ROS stack, filmed, with a JSON result.

The policy stack (`sim` node set: simulator, policy with the shipped checkpoint, prompt, segmenter,
executor, visualizer) runs one seeded episode, the operator stand-in pointing at the target (and, for a
model trained with place prompts, at the plate or bowl it goes to); the policy reads the simulator's
ground-truth target mask (no SAM 2 weights ship with the project).
`--driver expert` lets the scripted expert drive the same executor path instead. The episode GIF,
`overlay_<task>_seed<seed>.gif` (the raw camera beside the visualizer's overlay: prompts, target mask, predicted
path), `result.json` and the launch log go to a fresh folder under `results/demo/`, whose path is printed.
While the episode runs, the operator console's address is printed: open it to watch, prompt or stop the arm.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pixelvla_model import DEFAULT_CHECKPOINT, DEFAULT_CHECKPOINT_NOTE, PixelVLAConfig


def operator_for(model: str) -> str:
    """The operator stand-in for a model directory or bundle ('' = the shipped checkpoint): a place prompt too
    where the model was trained with place prompts."""
    config = PixelVLAConfig.from_json_file(Path(model or DEFAULT_CHECKPOINT) / "config.json")
    return "prompt_place" if config.place_prompts else "prompt"


def announce_console(launch_log: Path, done: threading.Event) -> None:
    """Print the console's address once its node logs it (in the stack's launch log), or why it is not there."""
    pattern = re.compile(r"operator console: (\S+)|(the console cannot listen on .*)")
    while not done.wait(0.5):
        try:
            match = pattern.search(launch_log.read_text(errors="replace"))
        except OSError:
            continue
        if match:
            print(f"pixelvla demo: operator console at {match.group(1)} (watch, prompt, stop the arm)"
                  if match.group(1) else f"pixelvla demo: no operator console: {match.group(2)}", flush=True)
            return


class OverlayFilm:
    """The raw camera beside the visualizer's /pixelvla/overlay, frame by frame (matched by stamp), for the
    episode (task, seed) only; a node of its own in a background thread (evaluation.main spins its own)."""

    def __init__(self, task: str, seed: int) -> None:
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from pixelvla_ros import qos
        from pixelvla_ros.node_base import BackgroundNode

        self.episode, self.raw, self.overlays = (task, seed), {}, {}
        self.current: tuple | None = None
        self.ros = BackgroundNode("demo_film")
        node = self.ros.node
        node.create_subscription(Image, "/camera/image_raw", lambda m: self.keep(self.raw, m), qos.SENSOR)
        node.create_subscription(Image, "/pixelvla/overlay", lambda m: self.keep(self.overlays, m), qos.SENSOR)
        node.create_subscription(String, "/sim/episode", self.on_episode, qos.LATCHED)

    def on_episode(self, msg) -> None:
        episode = json.loads(msg.data)
        self.current = (episode.get("task"), episode.get("seed"))

    def keep(self, frames: dict, msg) -> None:
        from pixelvla_ros.image_conversions import ImageError, image_to_rgb

        if self.current != self.episode:
            return
        try:
            frames[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = image_to_rgb(msg)
        except ImageError:
            pass

    def save(self, path: Path) -> Path | None:
        """Stop; write the film (GIF, 5 frames a second: the simulation's rate); None without frames."""
        self.ros.close()
        if not self.raw:
            return None
        import imageio.v3 as iio

        frames, overlay = [], None
        for stamp in sorted(self.raw):
            raw = self.raw[stamp]
            overlay = self.overlays.get(stamp, overlay)  # an overlay lost in transit: the one before
            right = overlay if overlay is not None and overlay.shape == raw.shape else raw
            frames.append(np.concatenate([raw, np.full((raw.shape[0], 4, 3), 255, np.uint8), right], axis=1))
        iio.imwrite(path, np.stack(frames), duration=200, loop=0)
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixelvla-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="policy", choices=["policy", "expert"])
    parser.add_argument("--model", default="", help="model directory or engine bundle (empty: the shipped checkpoint)")
    parser.add_argument("--task", default="put_this_cube_in_bowl")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--console-port", type=int, default=8080,
                        help="the operator console's port on 127.0.0.1 (0: no console)")
    parser.add_argument("--out", type=Path, default=Path("results/demo"))
    opts = parser.parse_args(argv)
    os.environ.setdefault("ROS_DOMAIN_ID", "95")
    from pixelvla_ros import evaluation
    from pixelvla_ros.launching.environment import missing_defaults

    os.environ.update(missing_defaults())  # DDS on localhost (the film's node joins before evaluation.main runs)
    out = opts.out / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    operator = "prompt"
    if opts.driver == "expert":
        print("pixelvla demo: the scripted expert (privileged simulator state) drives the arm through the "
              "chunk executor, IK and controller topics the policy uses")
        driver = ["--expert"]
    else:
        print("pixelvla demo: the policy stack drives the simulated arm with "
              f"{opts.model or 'the shipped checkpoint, ' + DEFAULT_CHECKPOINT_NOTE}")
        driver = ["--model", opts.model] if opts.model else []
        operator = operator_for(opts.model)
    out.mkdir(parents=True, exist_ok=True)
    film, stop_announcing = OverlayFilm(opts.task, opts.seed), threading.Event()
    threading.Thread(target=announce_console, args=(out / "launch.log", stop_announcing), daemon=True).start()
    try:
        evaluation.main([*driver, "--tasks", opts.task, "--episodes", "1", "--seed0", str(opts.seed), "--videos", "all",
                         "--operator", operator, "--mask", "ground_truth", "--console", str(opts.console_port),
                         "--out", str(out)])
    finally:
        stop_announcing.set()
        overlay_video = film.save(out / f"overlay_{opts.task}_seed{opts.seed}.gif")
    (episode,) = [json.loads(p.read_text()) for p in out.glob("episode_*.json")]
    episode["overlay_video"] = str(overlay_video) if overlay_video else None
    (out / "result.json").write_text(json.dumps({**episode, "launch_log": str(out / "launch.log")}, indent=2))
    print(json.dumps(episode, indent=2))
    print(f"pixelvla demo: video and result in {out.resolve()}")
    return 0 if episode["finished"] else 1


if __name__ == "__main__":
    sys.exit(main())
