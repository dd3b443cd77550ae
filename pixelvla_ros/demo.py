"""`make demo`: one simulated WidowX episode through the ROS stack, filmed, with a JSON result.

The policy stack (`sim` node set: simulator, policy with the shipped checkpoint, prompt, segmenter,
executor, visualizer) runs one seeded episode, the operator stand-in pointing at the target (and, for a
model trained with place prompts, at the plate or bowl it goes to); the policy reads the simulator's
ground-truth target mask (no SAM 2 weights ship with the project).
`--driver expert` lets the scripted expert drive the same executor path instead. The episode GIF,
`result.json` and the launch log go to a fresh folder under `results/demo/`, whose path is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path


def operator_for(model: str) -> str:
    """The operator stand-in for a model directory or bundle ('' = the shipped checkpoint): a place prompt too
    where the model was trained with place prompts."""
    from pixelvla_model import DEFAULT_CHECKPOINT, PixelVLAConfig

    config = PixelVLAConfig.from_json_file(Path(model or DEFAULT_CHECKPOINT) / "config.json")
    return "prompt_place" if config.place_prompts else "prompt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixelvla-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="policy", choices=["policy", "expert"])
    parser.add_argument("--model", default="", help="model directory or engine bundle (empty: the shipped checkpoint)")
    parser.add_argument("--task", default="put_this_cube_in_bowl")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("results/demo"))
    opts = parser.parse_args(argv)
    os.environ.setdefault("ROS_DOMAIN_ID", "95")
    from pixelvla_ros import evaluation

    out = opts.out / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    operator = "prompt"
    if opts.driver == "expert":
        print("pixelvla demo: the scripted expert (privileged simulator state) drives the arm through the "
              "chunk executor, IK and controller topics the policy uses")
        driver = ["--expert"]
    else:
        from pixelvla_model import DEFAULT_CHECKPOINT_NOTE

        print("pixelvla demo: the policy stack drives the simulated arm with "
              f"{opts.model or 'the shipped checkpoint, ' + DEFAULT_CHECKPOINT_NOTE}")
        driver = ["--model", opts.model] if opts.model else []
        operator = operator_for(opts.model)
    evaluation.main([*driver, "--tasks", opts.task, "--episodes", "1", "--seed0", str(opts.seed), "--videos", "all",
                     "--operator", operator, "--mask", "ground_truth", "--out", str(out)])
    (episode,) = [json.loads(p.read_text()) for p in out.glob("episode_*.json")]
    (out / "result.json").write_text(json.dumps({**episode, "launch_log": str(out / "launch.log")}, indent=2))
    print(json.dumps(episode, indent=2))
    print(f"pixelvla demo: video and result in {out.resolve()}")
    return 0 if episode["finished"] else 1


if __name__ == "__main__":
    sys.exit(main())
