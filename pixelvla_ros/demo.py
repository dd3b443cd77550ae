"""`make demo`: the shipped policy through the ROS stack on three fixed seeds, prompted, and once text-only.

The policy stack (`sim` node set: simulator, policy with the shipped checkpoint, prompt, segmenter,
executor, visualizer) runs the disambiguation task put_this_cube_in_bowl (identical cubes: only the operator's
prompt names the target) on the first three seeds of the evaluation range, 1000-1002, fixed before any result
was seen. Prompted, the operator stand-in points at the target (and, for a model trained with place prompts, at
the bowl or plate it goes to) and the policy reads the simulator's ground-truth target mask (no SAM 2 weights ship
with the project). Then a second launch runs the first seed text-only, as `pixelvla-eval --operator none --mask
segmenter` does: no prompt, so no mask. `--driver expert` lets the scripted expert drive the same executor path
instead (it ignores the prompts).
The demo prints a table of the outcomes (success, steps, the objects the gripper touched and lifted first) and
writes to a fresh folder under `results/demo/`, whose path is printed: one GIF per episode,
`overlay_<task>_seed<seed>_<prompted|text>.gif` (the raw camera beside the visualizer's overlay: prompts, target
mask, predicted path), `result.json` (every episode) and each launch's evaluation folder (`prompted/`, `text/`:
episode JSON, launch log). Exit status 0 when every episode ran to its end, whatever its outcome.
While a stack runs, the operator console's address is printed: open it to watch, prompt or stop the arm.
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


def seed_list(text: str) -> list[int]:
    """`--seeds`: consecutive seeds, '1000,1001,1002' (one stack runs them as pixelvla-eval's seed0 .. seed0 + n - 1)."""
    seeds = [int(seed) for seed in text.split(",") if seed.strip()]
    if not seeds or seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise argparse.ArgumentTypeError(f"{text!r}: give consecutive seeds in order, such as 1000,1001,1002")
    return seeds


def optional_seed(text: str) -> list[int]:
    """`--text-only-seed`: one seed, or none for ''."""
    return [int(text)] if text.strip() else []


def demo_runs(operator: str, seeds: list[int], text_only_seeds: list[int]) -> list[tuple[str, list[int], list[str]]]:
    """The demo's stack launches: (condition, seeds, pixelvla-eval's operator and mask options) for each condition
    with seeds. Prompted: `operator` and the ground-truth mask; text: no prompt, so no mask from the segmenter."""
    runs = [("prompted", seeds, ["--operator", operator, "--mask", "ground_truth"]),
            ("text", text_only_seeds, ["--operator", "none", "--mask", "segmenter"])]
    return [run for run in runs if run[1]]


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


def side_by_side(raw: dict, overlays: dict) -> np.ndarray:
    """One episode's film, (frames, H, 2 W + 4, 3) uint8: each raw camera frame (stamp -> H x W x 3 RGB) in stamp
    order beside the overlay with its stamp (an overlay lost in transit: the one before; none yet: the raw frame)."""
    frames, overlay = [], None
    for stamp in sorted(raw):
        image = raw[stamp]
        overlay = overlays.get(stamp, overlay)
        right = overlay if overlay is not None and overlay.shape == image.shape else image
        frames.append(np.concatenate([image, np.full((image.shape[0], 4, 3), 255, np.uint8), right], axis=1))
    return np.stack(frames)


class OverlayFilm:
    """The raw camera beside the visualizer's /pixelvla/overlay, frame by frame (matched by stamp), kept per
    episode (task, seed, condition) for the `wanted` episodes only, from the simulator's reset to the episode's
    end; a node of its own in a background thread (evaluation.main spins its own). /sim/episode says the task and
    seed; `start(condition)` says how the stack about to run prompts."""

    def __init__(self, wanted: set[tuple[str, int, str]]) -> None:
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from pixelvla_ros import qos
        from pixelvla_ros.node_base import BackgroundNode

        self.films = {episode: {"raw": {}, "overlay": {}} for episode in wanted}  # each: stamp -> RGB frame
        self.condition, self.current, self.done = "", None, False
        self.ros = BackgroundNode("demo_film")
        node = self.ros.node
        node.create_subscription(Image, "/camera/image_raw", self.on_camera, qos.SENSOR)
        node.create_subscription(Image, "/pixelvla/overlay", lambda m: self.keep("overlay", m), qos.SENSOR)
        node.create_subscription(String, "/sim/episode", self.on_episode, qos.LATCHED)

    def listening(self) -> bool:
        """True once this node hears the stack's camera, overlay and episode reports (a frame sent before that is
        lost to the film)."""
        node = self.ros.node
        return all(node.count_publishers(topic) > 0
                   for topic in ("/camera/image_raw", "/pixelvla/overlay", "/sim/episode"))

    def start(self, condition: str) -> None:
        """A new stack: nothing is filmed until its simulator reports an episode."""
        self.condition, self.current = condition, None

    def on_episode(self, msg) -> None:
        episode = json.loads(msg.data)
        self.current, self.done = (episode.get("task"), episode.get("seed"), self.condition), bool(episode.get("done"))

    def on_camera(self, msg) -> None:
        if not self.done:  # after the episode's end the camera streams on until the next reset
            self.keep("raw", msg)

    def keep(self, kind: str, msg) -> None:
        from pixelvla_ros.image_conversions import ImageError, image_to_rgb

        film = self.films.get(self.current)
        if film is None:
            return
        try:
            film[kind][(msg.header.stamp.sec, msg.header.stamp.nanosec)] = image_to_rgb(msg)
        except ImageError:
            pass

    def save(self, folder: Path) -> dict[tuple[str, int, str], Path]:
        """Stop; write each episode's film that has frames to `folder` as overlay_<task>_seed<seed>_<condition>.gif
        (5 frames a second: the simulation's rate)."""
        self.ros.close()
        import imageio.v3 as iio

        paths = {}
        for (task, seed, condition), film in self.films.items():
            if film["raw"]:
                paths[task, seed, condition] = folder / f"overlay_{task}_seed{seed}_{condition}.gif"
                iio.imwrite(paths[task, seed, condition], side_by_side(film["raw"], film["overlay"]), duration=200, loop=0)
        return paths


def outcome_table(episodes: list[dict]) -> str:
    """The demo's episodes as a Markdown table; an episode without `finished` never ran (`error` says why)."""
    lines = ["| seed | condition | outcome | steps | target | touched first | lifted first | video |",
             "|---|---|---|---|---|---|---|---|"]
    for episode in episodes:
        if "finished" not in episode:
            outcome = f"did not run ({episode['error']})"
        elif not episode["finished"]:
            outcome = "did not finish"
        else:
            outcome = "success" if episode["success"] else "failure"
        cells = [episode["seed"], "prompted" if episode["condition"] == "prompted" else "text-only", outcome,
                 *(episode.get(key) for key in ("steps", "target_object", "first_touched", "first_lifted")),
                 Path(episode["overlay_video"]).name if episode.get("overlay_video") else None]
        lines.append("| " + " | ".join("-" if cell is None else str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixelvla-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="policy", choices=["policy", "expert"])
    parser.add_argument("--model", default="", help="model directory or engine bundle (empty: the shipped checkpoint)")
    parser.add_argument("--task", default="put_this_cube_in_bowl")
    parser.add_argument("--seeds", type=seed_list, default="1000,1001,1002",
                        help="consecutive seeds run prompted, fixed in advance (default: the first three of the "
                             "evaluation range, %(default)s)")
    parser.add_argument("--text-only-seed", type=optional_seed, metavar="SEED",
                        help="the seed run once more text-only (default: the first of --seeds; '': none)")
    parser.add_argument("--console-port", type=int, default=8080,
                        help="the operator console's port on 127.0.0.1 (0: no console)")
    parser.add_argument("--out", type=Path, default=Path("results/demo"))
    opts = parser.parse_args(argv)
    text_only_seeds = opts.seeds[:1] if opts.text_only_seed is None else opts.text_only_seed
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
    runs = demo_runs(operator, opts.seeds, text_only_seeds)
    out.mkdir(parents=True, exist_ok=True)
    film, errors = OverlayFilm({(opts.task, seed, condition) for condition, seeds, _ in runs for seed in seeds}), {}
    try:
        for condition, seeds, options in runs:  # one launch of the stack each
            print(f"pixelvla demo: {opts.task}, seeds {', '.join(map(str, seeds))}, {condition}: {' '.join(options)}",
                  flush=True)
            film.start(condition)
            stop_announcing = threading.Event()
            threading.Thread(target=announce_console, args=(out / condition / "launch.log", stop_announcing),
                             daemon=True).start()
            try:
                evaluation.main([*driver, "--tasks", opts.task, "--episodes", str(len(seeds)), "--seed0", str(seeds[0]),
                                 "--videos", "none", *options, "--console", str(opts.console_port),
                                 "--out", str(out / condition)], listening=film.listening)
            except RuntimeError as exc:  # the stack did not come up
                errors[condition] = str(exc)
                print(f"pixelvla demo: the {condition} episodes did not run: {exc}", flush=True)
            finally:
                stop_announcing.set()
    finally:
        videos = film.save(out)
    episodes = []
    for condition, seeds, _ in runs:
        ran = {episode["seed"]: episode for episode in
               (json.loads(path.read_text()) for path in (out / condition).glob("episode_*.json"))}
        for seed in seeds:
            video = videos.get((opts.task, seed, condition))
            episodes.append({**ran.get(seed, {"task": opts.task, "seed": seed,
                                              "error": errors.get(condition, "no episode result")}),
                             "condition": condition, "overlay_video": str(video) if video else None,
                             "launch_log": str(out / condition / "launch.log")})
    all_ran = all(episode.get("finished") for episode in episodes)
    (out / "result.json").write_text(json.dumps({"task": opts.task, "all_ran": all_ran, "episodes": episodes}, indent=2))
    print(outcome_table(episodes))
    print(f"pixelvla demo: videos and result.json in {out.resolve()}")
    return 0 if all_ran else 1

if __name__ == "__main__":
    sys.exit(main())
