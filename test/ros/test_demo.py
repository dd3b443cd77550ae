"""pixelvla-demo: the shipped policy's episodes, prompted and text-only, each filmed beside the overlay."""
import argparse
import json

import numpy as np
import pytest

from pixelvla_ros.demo import demo_runs, main, operator_for, outcome_table, seed_list, side_by_side


def test_the_demo_adds_a_place_prompt_for_models_trained_with_them(tmp_path):
    from pixelvla_model import DEFAULT_CHECKPOINT, PixelVLAConfig
    from tiny_models import save_tiny_checkpoint

    for place in (False, True):
        save_tiny_checkpoint(tmp_path / str(place), place_prompts=place)
        assert operator_for(str(tmp_path / str(place))) == ("prompt_place" if place else "prompt")
    shipped = PixelVLAConfig.from_json_file(DEFAULT_CHECKPOINT / "config.json").place_prompts
    assert operator_for("") == ("prompt_place" if shipped else "prompt")


def test_seeds_are_consecutive_so_one_launch_runs_them():
    assert seed_list("1000,1001,1002") == [1000, 1001, 1002]
    for wrong in ("1000,1002", "1001,1000", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="consecutive seeds"):
            seed_list(wrong)


def test_prompted_episodes_get_the_ground_truth_mask_and_text_only_ones_no_prompt():
    assert demo_runs("prompt_place", [1000, 1001], [1000]) == [
        ("prompted", [1000, 1001], ["--operator", "prompt_place", "--mask", "ground_truth"]),
        ("text", [1000], ["--operator", "none", "--mask", "segmenter"])]
    assert [condition for condition, _, _ in demo_runs("prompt", [1000], [])] == ["prompted"]


def test_the_film_sets_each_camera_frame_beside_its_overlay():
    raw = {(0, stamp): np.full((2, 3, 3), stamp, np.uint8) for stamp in (1, 2, 3)}
    overlays = {(0, 2): np.full((2, 3, 3), 200, np.uint8)}  # the overlays of stamps 1 and 3 were lost
    film = side_by_side(raw, overlays)
    assert film.shape == (3, 2, 3 + 4 + 3, 3)
    assert [int(frame[0, 0, 0]) for frame in film] == [1, 2, 3]  # in stamp order
    assert [int(frame[0, -1, 0]) for frame in film] == [1, 200, 200]  # none yet: the camera; lost: the one before
    assert (film[:, :, 3:7] == 255).all()


def test_the_table_reports_every_episode_run_or_not():
    episodes = [{"seed": 1000, "condition": "prompted", "finished": True, "success": True, "steps": 41,
                 "target_object": "cube_b", "first_touched": "cube_b", "first_lifted": "cube_b",
                 "overlay_video": "/out/overlay_t_seed1000_prompted.gif"},
                {"seed": 1000, "condition": "text", "finished": False, "success": False, "steps": 3},
                {"seed": 1001, "condition": "text", "error": "the stack did not come up"}]
    rows = outcome_table(episodes).splitlines()
    assert rows[2] == "| 1000 | prompted | success | 41 | cube_b | cube_b | cube_b | overlay_t_seed1000_prompted.gif |"
    assert rows[3] == "| 1000 | text-only | did not finish | 3 | - | - | - | - |"
    assert rows[4].startswith("| 1001 | text-only | did not run (the stack did not come up) |")


@pytest.mark.ros
@pytest.mark.slow
def test_the_demo_films_a_prompted_and_a_text_only_episode(ros_domain, tmp_path):
    import imageio.v3 as iio

    assert main(["--driver", "expert", "--seeds", "1000", "--console-port", "0", "--out", str(tmp_path)]) == 0
    (out,) = tmp_path.iterdir()
    result = json.loads((out / "result.json").read_text())
    assert result["all_ran"]
    assert [(e["seed"], e["condition"], e["operator"], e["mask"]) for e in result["episodes"]] == [
        (1000, "prompted", "prompt", "ground_truth"), (1000, "text", "none", "segmenter")]
    for episode in result["episodes"]:
        assert episode["finished"] and episode["success"]  # the scripted expert ignores the prompts
        film = iio.imread(episode["overlay_video"], index=None)
        assert episode["overlay_video"].endswith(f"overlay_put_this_cube_in_bowl_seed1000_{episode['condition']}.gif")
        camera, overlay = film[..., :film.shape[2] // 2 - 2, :], film[..., film.shape[2] // 2 + 2:, :]
        assert 10 <= len(film) <= episode["steps"] + 2  # from the reset to the episode's end, not after it
        assert (camera != overlay).any()  # the visualizer drew the predicted path
