"""The results report: counts, Wilson intervals and the "went for the target" metrics from episode files."""
import json

import pytest

from pixelvla_training.report import load_run, main, wilson


def write_episodes(directory, task, outcomes):
    """outcomes: (success, first_reached, first_touched[, first_lifted]) per episode; the target is always
    cube_1. Without a fourth value the episode has no first_lifted, as runs recorded before it existed."""
    directory.mkdir(exist_ok=True)
    for seed, (success, reached, touched, *lifted) in enumerate(outcomes):
        episode = {"task": task, "seed": seed, "success": success, "target_object": "cube_1",
                   "first_reached": reached, "first_touched": touched}
        if lifted:
            episode["first_lifted"] = lifted[0]
        (directory / f"episode_{task}_seed{seed}.json").write_text(json.dumps(episode))


def test_wilson_interval_matches_the_closed_form():
    assert wilson(0, 0) == (0.0, 0.0)
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 50)[0] == 0.0 and wilson(50, 50)[1] == 1.0


def test_fisher_exact_matches_known_values():
    from pixelvla_training.report import fisher_exact

    # the tea-tasting table [[3, 1], [1, 3]]: one-sided p = 17/70, two-sided 34/70
    assert fisher_exact(3, 4, 1, 4, "greater") == pytest.approx(17 / 70)
    assert fisher_exact(3, 4, 1, 4) == pytest.approx(34 / 70)
    assert fisher_exact(9, 100, 0, 100, "greater") == pytest.approx(0.0016, abs=5e-5)
    assert fisher_exact(5, 10, 5, 10) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fisher_exact(1, 2, 1, 2, "less")


def test_runs_are_counted_and_tabled(tmp_path):
    write_episodes(tmp_path / "prompt", "put_this_cube_on_plate",
                   [(True, "cube_1", "cube_1", "cube_1"), (False, "cube_1", None, None), (False, "cube_1", "cube_0", "cube_0"),
                    (False, None, None, None)])
    write_episodes(tmp_path / "text", "put_this_cube_on_plate", [(False, "cube_2", "cube_2"), (False, None, None)])
    (tmp_path / "text" / "summary.json").write_text("{}")
    (tmp_path / "text" / "broken.json").write_text("{not json")
    assert load_run(tmp_path / "prompt") == {"put_this_cube_on_plate": {"success": 1, "first_reached": 3, "first_touched": 1, "first_lifted": 1, "episodes": 4}}
    assert load_run(tmp_path / "text") == {"put_this_cube_on_plate": {"success": 0, "first_reached": 0, "first_touched": 0, "first_lifted": None, "episodes": 2}}
    table, plot = tmp_path / "table.md", tmp_path / "plot.png"
    assert main(["--run", f"prompted={tmp_path / 'prompt'}", "--run", f"text-only={tmp_path / 'text'}",
                 "--table", str(table), "--plot", str(plot)]) == 0
    text = table.read_text()
    assert text.count("| prompted | 1/4 = **25 %**") == 3 and "| prompted | 3/4 = **75 %**" in text
    assert text.count("| text-only | 0/2 = **0 %**") == 3 and "| text-only | - |" in text and plot.stat().st_size > 0
