"""Simulator episodes with ground truth for the labeling tests (small images, recorded once per session)."""
from __future__ import annotations

import pytest

from pixelvla_training.episodes.dataset import DatasetWriter, episode_from_observations
from pixelvla_sim.expert import ScriptedExpert, run_expert_episode
from pixelvla_sim.tasks import TASKS
from labeling_helpers import window

SIZE = (64, 64)
SEEDS = range(4)


class PhaseLog(ScriptedExpert):
    """The scripted expert, remembering the phase it acted in at every step."""

    def act(self, obs):
        action = super().act(obs)
        self.phases.append(self.phase)
        return action


@pytest.fixture(scope="session")
def sim_dataset(tmp_path_factory):
    """(dataset dir, {file: ground-truth closure frame}) over every task x 4 seeds: the closure frame is the
    first step the expert acted in its "close" phase."""
    from pixelvla_sim.env import TabletopEnv

    root = tmp_path_factory.mktemp("sim") / "episodes"
    writer = DatasetWriter(root)
    truth = {}
    with TabletopEnv(render_size=SIZE) as env:
        for task in sorted(TASKS):
            for seed in SEEDS:
                expert = PhaseLog()
                expert.phases = []
                ep = run_expert_episode(env, task, seed, expert=expert)
                path = writer.add(episode_from_observations(ep.observations, ep.actions, env, ep.success))
                truth[path.name] = expert.phases.index("close")
    return root, truth


@pytest.fixture(scope="session")
def short_dataset(sim_dataset, tmp_path_factory):
    """4 episodes cut to 7 frames around their closure (fast end-to-end runs)."""
    from pixelvla_training.episodes.dataset import iter_episodes, read_index

    src, truth = sim_dataset
    root = tmp_path_factory.mktemp("short") / "episodes"
    writer = DatasetWriter(root)
    files = [e["file"] for e in read_index(src)["episodes"]]
    for name, episode in list(zip(files, iter_episodes(src)))[::6][:4]:
        c = truth[name]
        writer.add(window(episode, c - 3, c + 4))
    return root
