"""The in-process closed loop: a checkpoint drives the simulator without ROS."""
import json

import pytest

from pixelvla_model import DEFAULT_CHECKPOINT
from pixelvla_sim.env import TabletopEnv
from pixelvla_sim.expert import ScriptedExpert
from pixelvla_training.episodes.rollout import main, run_episode, summarize
from tiny_models import BRIDGE_LIKE_WITH_STATE, save_tiny_checkpoint


class ExpertDriver:
    """The scripted expert behind the driver interface run_episode expects."""

    def __init__(self):
        self.expert = ScriptedExpert()

    def reset(self, obs):
        self.expert.reset()

    def __call__(self, obs):
        return self.expert.act(obs)


def test_an_expert_episode_records_the_grasp_and_the_carry():
    with TabletopEnv(render=False, masks=False) as env:
        record = run_episode(env, ExpertDriver(), "put_this_cube_in_bowl", 3)
    target = record["target_object"]
    assert record["success"] and record["first_reached"] == record["first_touched"] == record["first_lifted"] == target
    assert record["closest_cm"] < 1.5 and record["carried_to_cm"] < 2.0  # the grasp centred, the cube over the bowl


@pytest.mark.parametrize("mode", [[], ["--text-only"], ["--place-prompt"]])
def test_rollout_runs_the_shipped_checkpoint_and_summarizes(capsys, mode):
    assert main(["--model", str(DEFAULT_CHECKPOINT), "--tasks", "put_this_cube_in_bowl", "--episodes", "1", *mode]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    episode, summary = lines[0], lines[-1]["summary"]
    assert episode["task"] == "put_this_cube_in_bowl" and episode["seed"] == 1000
    assert 1 <= episode["steps"] <= 60 and episode["closest_cm"] > 0
    offset = episode["closest_offset_cm"]
    assert len(offset) == 3 and abs(sum(d * d for d in offset) ** 0.5 - episode["closest_cm"]) <= 0.15
    assert (episode["carried_to_cm"] is None) == (episode["first_lifted"] != episode["target_object"])
    assert summary["episodes"] == 1 and summary["success"] == int(episode["success"])
    assert summary["median_closest_cm"] == episode["closest_cm"]


def test_summary_counts_the_target_first_only():
    records = [dict(success=False, first_reached="cube_1", first_touched="cube_0", first_lifted="cube_1",
                    target_object="cube_0", closest_cm=2.0),
               dict(success=True, first_reached="cube_0", first_touched=None, first_lifted="cube_0",
                    target_object="cube_0", closest_cm=1.0),
               dict(success=False, first_reached=None, first_touched=None, first_lifted=None, target_object="cube_2",
                    closest_cm=9.0)]
    assert summarize(records) == dict(episodes=3, success=1, target_reached_first=1, target_touched_first=1,
                                      target_lifted_first=1, median_closest_cm=2.0)


def test_unknown_task_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--model", str(DEFAULT_CHECKPOINT), "--tasks", "put_cube_on_moon"])
    assert "unknown task(s) put_cube_on_moon" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["shipped", "missing"])
def test_a_missing_robot_file_is_refused_before_any_episode(tmp_path, capsys, model):
    # With a missing model too, the robot file's error comes first: it never waits on a model load.
    checkpoint = DEFAULT_CHECKPOINT if model == "shipped" else tmp_path / "no_model"
    with pytest.raises(SystemExit):
        main(["--model", str(checkpoint), "--robot-config", str(tmp_path / "robot.yaml")])
    captured = capsys.readouterr()
    assert "--robot-config" in captured.err and "robot.yaml" in captured.err and not captured.out


def test_a_missing_checkpoint_is_refused_with_its_path(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "no_model")])
    err = capsys.readouterr().err
    assert "--model" in err and "no_model" in err and "does not exist" in err


def _tiny_checkpoint(path, place_prompts: bool):
    return save_tiny_checkpoint(path, norm_stats=BRIDGE_LIKE_WITH_STATE, proprio_dim=7, place_prompts=place_prompts)


def test_place_prompt_rollouts_click_the_destination(tmp_path, capsys):
    from pixelvla_training.episodes.dagger import PolicyDriver

    with_place = _tiny_checkpoint(tmp_path / "place", True)
    driver = PolicyDriver(with_place, place=True)
    with TabletopEnv(render_size=(96, 96)) as env:
        obs = env.reset("put_this_cube_on_plate", 3)
        driver.reset(obs)
    (target, place) = driver.prompts
    assert obs["masks"][obs["target_object"]][int(target.y), int(target.x)] and target.label == 1
    assert obs["masks"]["plate"][int(place.y), int(place.x)] and place.label == 2
    assert main(["--model", str(with_place), "--tasks", "put_this_cube_on_plate", "--episodes", "1",
                 "--place-prompt"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]["episodes"] == 1
    with pytest.raises(SystemExit):
        main(["--model", str(_tiny_checkpoint(tmp_path / "plain", False)), "--place-prompt"])
    assert "not trained with place prompts" in capsys.readouterr().err


def test_a_model_that_places_its_prompts_gets_the_calibrated_cameras_click_map(tmp_path):
    import numpy as np

    from pixelvla_training.episodes.dagger import PolicyDriver

    model = save_tiny_checkpoint(tmp_path / "offsets", norm_stats=BRIDGE_LIKE_WITH_STATE, proprio_dim=7,
                                 place_prompts=True, prompt_offsets=True)
    driver = PolicyDriver(model, place=True)
    seen = []  # the offsets the network placed the prompts at
    driver.policy.model.prompt_offsets.register_forward_hook(lambda m, args, out: seen.append(args[0][0].numpy()))
    with TabletopEnv(render_size=(224, 224)) as env:
        obs = env.reset("put_this_cube_on_plate", 3)
        driver.reset(obs)
        assert driver.chunk(obs).shape == (5, 7)
    target, plate = (obs["object_poses"][n][:3] - obs["tcp_position"] for n in (obs["target_object"], "plate"))
    assert seen[0][:, 3].tolist() == [1.0, 1.0]
    assert np.linalg.norm(seen[0][0, :3] - target) < 0.01  # the cube's centre, from its mask (224 px) and the camera
    # the click on the plate, placed at a cube's height a centimetre above the plate's top: within 3 cm
    assert np.linalg.norm(seen[0][1, :2] - plate[:2]) < 0.03


def test_the_dagger_driver_runs_each_chunk_as_the_stack_does(tmp_path):
    """A chunk every `steps_per_inference` steps, its actions in turn; a step the expert drove (not asked)
    does not shift the schedule of the chunk's actions."""
    import numpy as np

    from pixelvla_training.episodes.dagger import PolicyDriver

    model = _tiny_checkpoint(tmp_path / "plain", False)
    with pytest.raises(ValueError, match="steps_per_inference 6: the model's chunks hold 1 to 5 actions"):
        PolicyDriver(model, steps_per_inference=6)
    driver = PolicyDriver(model, steps_per_inference=2)
    asked = []

    def chunk(obs):
        asked.append(obs["step"])
        return 100.0 * len(asked) + np.arange(35.0).reshape(5, 7)

    driver.chunk = chunk
    with TabletopEnv(render_size=(96, 96)) as env:
        obs = env.reset("put_this_cube_on_plate", 3)
    driver.reset(obs)
    actions = [driver({**obs, "step": step}) for step in (0, 1, 2, 4, 5, 6)]  # step 3: the expert's
    assert asked == [0, 2, 4, 6]
    assert [a[0] for a in actions] == [100.0, 107.0, 200.0, 300.0, 307.0, 400.0]
    driver.reset(obs)
    driver({**obs, "step": 1})
    assert asked[-1] == 1  # a new episode asks again


def test_words_prompt_rollouts_prompt_from_what_the_words_point_at(tmp_path, capsys):
    """--words-prompt: the words' target box, segmented by the simulator's masks, gives the click and the mask
    the policy gets; the words' place point stays as it is."""
    from pixelvla_model import PLACE, Point
    from pixelvla_sim.prompts import segment_box
    from pixelvla_training.episodes.dagger import PolicyDriver

    model = save_tiny_checkpoint(tmp_path / "words", norm_stats=BRIDGE_LIKE_WITH_STATE, proprio_dim=7,
                                 place_prompts=True, text_grounding=True)
    driver = PolicyDriver(model, prompted=False, words=True)
    with TabletopEnv(render_size=(96, 96)) as env:
        obs = env.reset("put_red_cube_on_plate", 3)
        driver.reset(obs)
        box, place = driver.policy.words_prompts(obs["rgb"], obs["instruction"])
        assert driver.target == segment_box(obs, box)
        target, placed = driver.prompts
        if driver.target is None:
            assert target == box
        else:
            assert isinstance(target, Point) and obs["masks"][driver.target][int(target.y), int(target.x)]
        assert placed == place and placed.label == PLACE
        assert driver.chunk(obs).shape == (5, 7)
    assert main(["--model", str(model), "--words-prompt", "--tasks", "put_red_cube_on_plate", "--episodes", "1"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]["episodes"] == 1
    with pytest.raises(ValueError, match="no text grounding"):
        PolicyDriver(_tiny_checkpoint(tmp_path / "plain", False), prompted=False, words=True)
