"""Scripted expert success rates and the simulated-episode dataset format."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pixelvla_training.episodes.dataset import (
    DatasetWriter, Episode, add_destination_masks, episode_from_observations, iter_episodes, read_episode, read_index,
    relabel_dataset, relabel_episode, validate_dataset, validate_episode, write_episode,
)
from pixelvla_sim.env import TabletopEnv
from pixelvla_sim.expert import ScriptedExpert, run_expert_episode, top_down_rotation
from pixelvla_sim.tasks import CUBE_HALF, PLATE_TOP, REST_Z, TASKS


@pytest.fixture(scope="module")
def fast_env():
    with TabletopEnv(render=False, masks=False) as e:
        yield e


@pytest.fixture(scope="module")
def recorded():
    """One rendered expert episode of a prompted task, as an Episode."""
    with TabletopEnv(render_size=(96, 96)) as env:
        ep = run_expert_episode(env, "put_this_cube_on_plate", 3)
        return ep, episode_from_observations(ep.observations, ep.actions, env, ep.success)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_solves_one_episode_of_every_task(fast_env, task):
    ep = run_expert_episode(fast_env, task, 0, render=False)
    assert ep.success, f"{task}: expert failed seed 0 after {len(ep.actions)} steps"
    assert ep.actions.shape == (len(ep.observations) - 1, 7)
    assert np.all(np.abs(ep.actions[:, :3]) <= ScriptedExpert.max_translation + 1e-9)
    assert set(np.unique(ep.actions[:, 6])) <= {0.0, 1.0}


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_success_rate_50_seeds(fast_env, task):
    results = [run_expert_episode(fast_env, task, seed, render=False) for seed in range(50)]
    rate = np.mean([r.success for r in results])
    failed = [r.seed for r in results if not r.success]
    print(f"{task}: expert success {rate:.0%} over 50 seeds, mean {np.mean([len(r.actions) for r in results]):.1f} steps")
    assert rate >= 0.95, f"{task}: success {rate:.0%}, failed seeds {failed}"


def test_episode_round_trip_and_validation(tmp_path, recorded):
    ep, episode = recorded
    assert ep.success
    validate_episode(episode)
    T = episode.num_steps
    assert episode["images"].shape == (T, 96, 96, 3) and episode["actions"].shape == (T, 7)
    assert episode.meta["prompted"] and episode.meta["instruction"] == "put this cube on the plate"
    writer = DatasetWriter(tmp_path / "ds")
    writer.add(episode)
    writer.add(episode)
    assert validate_dataset(tmp_path / "ds") == 2
    index = read_index(tmp_path / "ds")
    assert [e["file"] for e in index["episodes"]] == ["episode_000000.npz", "episode_000001.npz"]
    back = read_episode(tmp_path / "ds" / "episode_000000.npz")
    assert back.meta == json.loads(json.dumps(episode.meta))
    for key, value in episode.arrays.items():
        np.testing.assert_array_equal(back[key], value)
    assert len(list(iter_episodes(tmp_path / "ds"))) == 2
    # a prompt point sits on the target's mask wherever the target is visible
    visible = episode["target_masks"].any(axis=(1, 2))
    assert visible.mean() > 0.5
    # reproducible: the first image comes back from task + seed
    with TabletopEnv(render_size=(96, 96)) as env:
        obs = env.reset(episode.meta["task"], episode.meta["seed"])
        np.testing.assert_array_equal(obs["rgb"], episode["images"][0])
    # place prompts come from the destination (the plate here) as the first image shows it
    assert obs["destination"] == episode.meta["destination"] == "plate"
    np.testing.assert_array_equal(episode["destination_mask"], obs["masks"]["plate"])
    assert episode["destination_mask"].sum() > 50


@pytest.mark.parametrize("corrupt", ["drop_key", "bad_dtype", "bad_shape", "nan_action", "bad_gripper",
                                     "point_off_mask", "bad_meta", "float32_executed", "nan_executed"])
def test_validator_rejects_corrupt_episodes(tmp_path, recorded, corrupt):
    _, episode = recorded
    arrays, meta = dict(episode.arrays), dict(episode.meta)
    if corrupt == "drop_key":
        del arrays["target_masks"]
    elif corrupt == "bad_dtype":
        arrays["images"] = arrays["images"].astype(np.float32)
    elif corrupt == "bad_shape":
        arrays["actions"] = arrays["actions"][:, :6]
    elif corrupt == "nan_action":
        arrays["actions"] = arrays["actions"].copy()
        arrays["actions"][0, 0] = np.nan
    elif corrupt == "bad_gripper":
        arrays["actions"] = arrays["actions"].copy()
        arrays["actions"][0, 6] = 2.0
    elif corrupt == "point_off_mask":
        visible = np.flatnonzero(arrays["target_masks"].any(axis=(1, 2)))[0]
        arrays["target_masks"] = arrays["target_masks"].copy()
        u, v = arrays["prompt_points"][visible].astype(int)
        arrays["target_masks"][visible, v, u] = False
    elif corrupt == "bad_meta":
        meta["num_steps"] = 999
    elif corrupt == "float32_executed":  # rounded, a replay would drift from the recorded states
        arrays["executed_actions"] = arrays["actions"].astype(np.float32)
    elif corrupt == "nan_executed":
        arrays["executed_actions"] = arrays["actions"].astype(np.float64)
        arrays["executed_actions"][2, 1] = np.nan
    with pytest.raises(ValueError):
        validate_episode(Episode(arrays, meta))
    with pytest.raises(ValueError):
        write_episode(tmp_path / "x.npz", Episode(arrays, meta))


def test_first_reached_touched_and_lifted_name_the_object_the_gripper_went_for(fast_env):
    """The expert reaches, touches and lifts the target first; sent to another cube, that cube is recorded."""
    ep = run_expert_episode(fast_env, "put_this_cube_in_bowl", 2, render=False)
    first = ep.observations[0]
    assert first["first_reached"] is None and first["first_touched"] is None and first["first_lifted"] is None
    target = first["target_object"]
    assert all(ep.observations[-1][key] == target for key in ("first_reached", "first_touched", "first_lifted"))
    reached_at = next(t for t, o in enumerate(ep.observations) if o["first_reached"])
    assert np.linalg.norm(ep.observations[reached_at]["tcp_position"] - ep.observations[reached_at]["object_poses"][target][:3]) < 0.03
    touched_at = next(t for t, o in enumerate(ep.observations) if o["first_touched"])
    lifted_at = next(t for t, o in enumerate(ep.observations) if o["first_lifted"])
    assert reached_at <= touched_at < lifted_at  # closing the gripper on the cube does not count as lifting it
    assert ep.observations[lifted_at]["object_poses"][target][2] > first["object_poses"][target][2] + 0.03

    expert = ScriptedExpert()
    obs = fast_env.reset("put_this_cube_in_bowl", 2, render=False)
    decoy = next(n for n in obs["object_poses"] if n.startswith("cube") and n != obs["target_object"])
    for _ in range(25):  # approach, descend, close on and lift the decoy
        obs = fast_env.step_ee_delta(expert.act({**obs, "target_object": decoy}), render=False)
    assert obs["first_reached"] == decoy and obs["first_touched"] == decoy and obs["first_lifted"] == decoy
    obs = fast_env.reset("put_this_cube_in_bowl", 2, render=False)
    assert obs["first_reached"] is None and obs["first_touched"] is None and obs["first_lifted"] is None


def test_noisy_demonstrations_record_the_experts_action_not_the_executed_one(fast_env):
    """DART: the arm executes the expert's action plus noise, the episode keeps the expert's action."""
    def run(**noise):
        return run_expert_episode(fast_env, "put_red_cube_on_plate", 0, render=False, **noise)

    def residual(ep):  # per-axis std (m) of the TCP's move per step minus the recorded translation
        tcp = np.array([o["tcp_position"] for o in ep.observations])
        return float(np.std(np.diff(tcp, axis=0) - ep.actions[:, :3]))

    clean, noisy = run(), run(translation_noise=0.005, rotation_noise=0.03)
    assert noisy.success and len(noisy.actions) != len(clean.actions)
    assert np.array_equal(noisy.actions, run(translation_noise=0.005, rotation_noise=0.03).actions)  # reproducible
    assert np.all(np.abs(noisy.actions[:, :3]) <= ScriptedExpert.max_translation + 1e-9)  # labels are clean
    assert residual(noisy) > 2 * residual(clean), (residual(noisy), residual(clean))


class _Driver:
    """A driver that drops what it holds and rises: the worst a policy does to the expert's plan."""

    def __init__(self) -> None:
        self.resets, self.calls = 0, 0

    def reset(self, obs: dict) -> None:
        self.resets += 1

    def __call__(self, obs: dict) -> np.ndarray:
        self.calls += 1
        return np.array([0.0, 0.0, 0.02, 0.0, 0.0, 0.0, 1.0])


def test_dagger_executes_the_driver_and_records_the_expert(fast_env):
    """DAgger: on driven steps the arm follows the driver, and every recorded action is the expert's at that state."""
    driver = _Driver()
    ep = run_expert_episode(fast_env, "put_red_cube_on_plate", 0, render=False, driver=driver, expert_share=0.5,
                            max_steps=80)
    assert driver.resets == 1 and 0 < driver.calls < len(ep.actions)
    tcp = np.array([o["tcp_position"] for o in ep.observations])
    moved_up = np.isclose(np.diff(tcp, axis=0)[:, 2], 0.02, atol=2e-3) & ~np.isclose(ep.actions[:, 2], 0.02, atol=2e-3)
    assert moved_up.sum() >= driver.calls // 2  # driven steps went where the driver said, not the label
    grip_open_labels = ep.actions[:, 6] == 1.0
    assert not grip_open_labels.all()  # the expert still closed the gripper in its labels: it grasped
    # Relabelling is pure: a fresh expert replayed on the visited states gives the same actions.
    replay = ScriptedExpert()
    replay.reset()
    assert np.allclose([replay.act(o) for o in ep.observations[:-1]], ep.actions)


def test_expert_carries_on_with_a_cube_someone_else_grasped(fast_env):
    """A fresh expert (plan at "approach") given a state where the cube is already held and lifted carries it."""
    ep = run_expert_episode(fast_env, "put_red_cube_on_plate", 0, render=False)
    labels = ScriptedExpert()
    labels.reset()
    phases = []
    for obs in ep.observations:
        labels.act(obs)
        phases.append(labels.phase)
    mid_carry = ep.observations[phases.index("carry") + 1]
    fresh = ScriptedExpert()
    fresh.reset()
    action = fresh.act(mid_carry)
    assert fresh.phase == "carry" and action[6] == 0.0  # keep the gripper closed, go on to the plate
    assert np.allclose(action[3:6], 0.0)  # and the wrist as it holds the cube


def test_expert_grasps_again_when_the_cube_is_not_in_the_hand(fast_env):
    obs = fast_env.reset("put_red_cube_on_plate", 0, render=False)
    expert = ScriptedExpert()
    expert.reset()
    expert.phase = "carry"  # it believes it holds the cube, which still sits on the table
    action = expert.act(obs)
    assert expert.phase == "approach" and action[6] == 1.0


def test_dataset_cli_records_dagger_episodes_driven_by_a_checkpoint(tmp_path, capsys):
    from pixelvla_model import DEFAULT_CHECKPOINT
    from pixelvla_training.episodes.dataset import main

    out = tmp_path / "dagger"
    args = ["--out", str(out), "--tasks", "put_this_cube_in_bowl", "--episodes", "1", "--seed0", "7", "--size", "64"]
    assert main([*args, "--policy", str(DEFAULT_CHECKPOINT), "--expert-share", "0.5"]) == 0
    assert validate_dataset(out) == 1
    episode = next(iter_episodes(out))
    actions = episode["actions"]  # the expert's labels: within its step limit, whatever the policy did
    assert actions.shape[1] == 7 and np.all(np.abs(actions[:, :3]) <= ScriptedExpert.max_translation + 1e-9)
    with pytest.raises(SystemExit):
        main([*args, "--policy", str(DEFAULT_CHECKPOINT), "--expert-share", "1.5"])
    assert "--expert-share 1.5 is not in [0, 1]" in capsys.readouterr().err


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory):
    """A dataset of one DART episode and one DAgger episode (64 px), recorded with their executed actions."""
    root = tmp_path_factory.mktemp("mixed")
    with TabletopEnv(render_size=(64, 64)) as env:
        writer = DatasetWriter(root)
        for kwargs in (dict(translation_noise=0.005, rotation_noise=0.03), dict(driver=_Driver(), expert_share=0.5)):
            ep = run_expert_episode(env, "put_this_cube_in_bowl", 4, max_steps=40, **kwargs)
            writer.add(episode_from_observations(ep.observations, ep.actions, env, ep.success, ep.executed))
    return root


def test_episodes_store_what_the_arm_executed(mixed_dataset):
    dart, dagger = iter_episodes(mixed_dataset)
    for episode in (dart, dagger):
        assert episode["executed_actions"].dtype == np.float64 and episode["executed_actions"].shape == (episode.num_steps, 7)
    assert not np.allclose(dart["executed_actions"][:, :3], dart["actions"][:, :3], atol=1e-4)  # noise was added
    driven = np.all(dagger["executed_actions"] == [0.0, 0.0, 0.02, 0.0, 0.0, 0.0, 1.0], axis=1)
    assert 0 < driven.sum() < dagger.num_steps


def test_relabelling_with_the_same_expert_changes_nothing(mixed_dataset):
    before = {p.name: p.read_bytes() for p in mixed_dataset.glob("*.npz")}
    counts = relabel_dataset(mixed_dataset, progress=lambda line: None)
    assert counts == {"relabelled": 2, "changed": 0, "unreadable": 0, "not replayable": 0}
    assert {p.name: p.read_bytes() for p in mixed_dataset.glob("*.npz")} == before


def test_relabelling_after_an_expert_change_keeps_the_states(fast_env, mixed_dataset):
    episode = next(iter_episodes(mixed_dataset))
    slower = relabel_episode(fast_env, episode, ScriptedExpert(max_translation=0.02))
    validate_episode(slower)
    assert np.all(np.linalg.norm(slower["actions"][:, :3], axis=1) <= 0.02 + 1e-6)
    assert not np.allclose(slower["actions"], episode["actions"])
    for key in ("images", "joint_positions", "executed_actions", "target_masks"):
        assert np.array_equal(slower[key], episode[key])


def test_episodes_that_cannot_be_replayed_are_left_as_they_are(tmp_path, mixed_dataset):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(mixed_dataset, root)
    dart_path, dagger_path = (root / e["file"] for e in read_index(root)["episodes"])
    dart = read_episode(dart_path)
    write_episode(dart_path, Episode({k: v for k, v in dart.arrays.items() if k != "executed_actions"}, dart.meta))
    dagger = read_episode(dagger_path)
    dagger.arrays["executed_actions"][3, 1] += 0.03  # step 3 now goes elsewhere than the recorded step 4
    write_episode(dagger_path, dagger)
    before = {p.name: p.read_bytes() for p in root.glob("*.npz")}
    lines = []
    counts = relabel_dataset(root, progress=lines.append)
    assert counts == {"relabelled": 0, "changed": 0, "unreadable": 0, "not replayable": 2}
    assert "no executed_actions" in lines[0] and "replay left the recorded states at step 4" in lines[1]
    assert {p.name: p.read_bytes() for p in root.glob("*.npz")} == before


def test_dataset_cli_relabels(tmp_path, mixed_dataset, capsys):
    import shutil

    from pixelvla_training.episodes.dataset import main

    shutil.copytree(mixed_dataset, tmp_path / "copy")
    assert main(["--relabel", str(tmp_path / "copy")]) == 0
    assert "relabelled 2, changed 0, unreadable 0, not replayable 0" in capsys.readouterr().out


def test_destination_masks_are_added_to_older_recordings_that_replay_exactly(tmp_path, mixed_dataset):
    import shutil

    from pixelvla_training.episodes.dataset import main

    root = tmp_path / "old"
    shutil.copytree(mixed_dataset, root)
    first, second = (root / e["file"] for e in read_index(root)["episodes"])
    expected = read_episode(first)["destination_mask"]
    assert expected.sum() > 20  # the bowl
    for path in (first, second):  # as recorded before destination masks were stored
        ep = read_episode(path)
        write_episode(path, Episode({k: v for k, v in ep.arrays.items() if k != "destination_mask"}, ep.meta))
    tampered = read_episode(second)
    tampered.arrays["images"][0, 0, 0] ^= 1  # its first image no longer comes back from (task, seed)
    write_episode(second, tampered)
    untouched = second.read_bytes()
    lines = []
    counts = add_destination_masks(root, progress=lines.append)
    assert counts == {"added": 1, "present": 0, "unreadable": 0, "not reproducible": 1}
    assert "not reproducible" in lines[0] and second.read_bytes() == untouched
    np.testing.assert_array_equal(read_episode(first)["destination_mask"], expected)
    assert main(["--add-destination", str(root)]) == 0  # again: nothing left to add
    assert validate_dataset(root) == 2


def _carrying_near_the_plate(env, offset_m: float, height_m: float = ScriptedExpert.carry_height) -> dict:
    """An observation of the expert carrying the cube at `height_m` (TCP), `offset_m` (x) from the plate's centre."""
    obs = env.reset("put_red_cube_on_plate", 0, render=False)
    plate = obs["object_poses"]["plate"][:3]
    obs["tcp_position"] = np.array([plate[0] + offset_m, plate[1], height_m])
    obs["object_poses"] = {**obs["object_poses"],
                           obs["target_object"]: np.concatenate([obs["tcp_position"] - [0, 0, 0.01], [1, 0, 0, 0]])}
    return obs


def _step_from(obs: dict, phase: str, radius) -> tuple[str, np.ndarray]:
    """(phase after, action) of an expert with `radius` asked at `obs` while in `phase` (holding the cube)."""
    expert = ScriptedExpert(place_radius=radius)
    expert.phase, expert._hold_rotation = phase, obs["tcp_rotation"].copy()
    action = expert.act(obs)
    return expert.phase, action


def _plate_release_z(obs: dict) -> float:
    return obs["object_poses"]["plate"][2] - REST_Z["plate"] + PLATE_TOP + CUBE_HALF + 0.012


def test_without_place_radius_the_carry_ends_above_the_centre(fast_env):
    phase, action = _step_from(_carrying_near_the_plate(fast_env, 0.02), "carry", None)
    assert phase == "carry" and action[0] < -0.015 and abs(action[2]) < 1e-3  # 2 cm off: level, to the centre


def test_place_radius_carries_down_a_cone_lowers_straight_down_and_lets_go_in_a_band(fast_env):
    radius = 0.03
    # Far out (10 cm, beyond where the cone starts): level, towards the plate.
    phase, action = _step_from(_carrying_near_the_plate(fast_env, 0.10), "carry", radius)
    assert phase == "carry" and action[0] < -0.02 and abs(action[2]) < 1e-3
    # 2 cm off at carry height: inside the radius but high up, so down towards the release point, and a
    # little in; at 5 cm off the cone asks for less descent than at 2 cm.
    phase, near = _step_from(_carrying_near_the_plate(fast_env, 0.02), "carry", radius)
    _, farther = _step_from(_carrying_near_the_plate(fast_env, 0.05), "carry", radius)
    assert phase == "carry" and near[2] < -0.03 and near[0] < 0.0
    assert farther[2] > near[2] and farther[0] < near[0]
    release_z = _plate_release_z(_carrying_near_the_plate(fast_env, 0.0))
    # 1 cm off, 2 cm above the release height: the carry is over, the cube goes straight down where it is.
    phase, action = _step_from(_carrying_near_the_plate(fast_env, 0.01, release_z + 0.02), "carry", radius)
    assert phase == "lower" and abs(action[0]) < 1e-3 and abs(action[1]) < 1e-3 and -0.021 < action[2] < -0.019
    # 2 cm off, 1 cm above it: within the release band, so it opens where it is.
    phase, action = _step_from(_carrying_near_the_plate(fast_env, 0.02, release_z + 0.01), "carry", radius)
    assert phase == "open" and np.allclose(action[:6], 0.0) and action[6] == 1.0


def test_with_place_radius_a_lift_goes_only_as_high_as_the_cone(fast_env):
    release_z = _plate_release_z(_carrying_near_the_plate(fast_env, 0.0))
    # A cube the driver lifted itself right by the plate's centre is let go there, not lifted to carry height.
    phase, action = _step_from(_carrying_near_the_plate(fast_env, 0.01, release_z + 0.005), "lift", 0.03)
    assert phase == "open" and action[6] == 1.0
    # Far from the plate a lift still goes up to carry height.
    phase, action = _step_from(_carrying_near_the_plate(fast_env, 0.15, release_z), "lift", 0.03)
    assert phase == "lift" and action[2] > 0.03


@pytest.mark.parametrize("radius", [None, 0.03])
def test_the_expert_places_with_and_without_a_place_radius(fast_env, radius):
    for task in ("put_red_cube_on_plate", "put_yellow_cube_in_bowl"):
        assert run_expert_episode(fast_env, task, 1, render=False, expert=ScriptedExpert(place_radius=radius)).success


def _descending_beside_the_cube(env, offset_m: float, height_m: float, radius) -> tuple[str, np.ndarray]:
    """(phase after, action) of an expert with grasp `radius` descending with the TCP `offset_m` (x) from the
    target cube's centre and `height_m` above the grasp point, fingers open and pointing down."""
    obs = env.reset("put_red_cube_on_plate", 0, render=False)
    cube = obs["object_poses"][obs["target_object"]][:3]
    expert = ScriptedExpert(grasp_radius=radius)
    expert.phase, expert._psi = "descend", 0.0
    obs["tcp_position"] = np.array([cube[0] + offset_m, cube[1], cube[2] + 0.002 + height_m])
    obs["tcp_rotation"] = top_down_rotation(0.0)
    action = expert.act(obs)
    return expert.phase, action


def test_without_grasp_radius_a_descent_off_the_cube_moves_over_while_going_down(fast_env):
    phase, action = _descending_beside_the_cube(fast_env, 0.03, 0.01, None)
    assert phase == "descend" and action[0] < -0.02 and action[2] < 0.0


def test_grasp_radius_lifts_a_tcp_that_came_down_beside_the_cube_then_moves_over_and_descends(fast_env):
    radius = 0.008
    # 3 cm off and 1 cm above the grasp point, under the cone: straight up to it (2 x 2.2 cm above), not sideways.
    phase, action = _descending_beside_the_cube(fast_env, 0.03, 0.01, radius)
    assert phase == "descend" and abs(action[0]) < 1e-3 and abs(action[1]) < 1e-3
    assert 0.033 < action[2] < 0.035
    # On the cone: over towards the cube, level.
    phase, action = _descending_beside_the_cube(fast_env, 0.03, 0.044, radius)
    assert phase == "descend" and action[0] < -0.02 and abs(action[2]) < 1e-3
    # Within the radius: straight down to the grasp point; at it, the gripper closes.
    phase, action = _descending_beside_the_cube(fast_env, 0.005, 0.03, radius)
    assert phase == "descend" and abs(action[0]) < 0.006 and -0.031 < action[2] < -0.029
    phase, action = _descending_beside_the_cube(fast_env, 0.003, 0.0, radius)
    assert phase == "close" and action[6] == 0.0


@pytest.mark.parametrize("grasp_radius", [None, 0.008])
def test_the_expert_grasps_with_and_without_a_grasp_radius(fast_env, grasp_radius):
    expert = ScriptedExpert(place_radius=0.03, grasp_radius=grasp_radius)
    for task in ("put_blue_cube_on_plate", "put_this_cube_in_bowl"):
        assert run_expert_episode(fast_env, task, 2, render=False, expert=expert).success


@pytest.mark.parametrize("flag", ["--place-radius", "--grasp-radius"])
def test_dataset_cli_refuses_a_radius_that_is_not_a_short_distance(tmp_path, capsys, flag):
    from pixelvla_training.episodes.dataset import main

    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), flag, "0.5"])
    assert f"{flag} 0.5 m" in capsys.readouterr().err and not (tmp_path / "x").exists()
