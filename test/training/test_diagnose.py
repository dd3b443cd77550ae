"""pixelvla_training.diagnose on a small dataset the tests write and an untrained state-reading model."""
import json

from pixelvla_training import diagnose


def test_diagnose_reports_sensitivity_attention_and_direction(sim_dataset, tmp_path):
    from pixelvla_model import PixelVLAConfig, PixelVLAPolicy
    from pixelvla_training.datasets import norm_stats_for
    from pixelvla_training.datasets.sim import read_sim_episodes

    config = PixelVLAConfig.from_preset("tiny", image_size=28, proprio_dim=7)
    stats = norm_stats_for(list(read_sim_episodes(sim_dataset)))
    PixelVLAPolicy.from_config(config, seed=1, norm_stats=stats).save_pretrained(tmp_path / "model")
    out = tmp_path / "report.json"
    assert diagnose.main(["--model", str(tmp_path / "model"), "--episodes", str(sim_dataset), "--steps", "3",
                          "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["episodes"] == 4 and report["direction"]["samples"] == 4 * 3
    assert report["prompt_sensitivity"]["point"] > 0 and report["prompt_sensitivity"]["mask"] > 0
    assert len(report["attention"]) == config.llm_layers
    for layer in report["attention"]:
        assert set(layer) == {"bos", "visual", "pixel", "prompt", "state", "text"}
        assert all(0.0 <= v <= 1.0 + 1e-6 for v in layer.values())
        assert max(layer.values()) > 1.0 / 7  # some head gives some group more than an even share
    for cond in ("prompt", "text"):
        assert -1.0 <= report["direction"][cond]["dx"] <= 1.0  # the synthetic dx varies
        assert report["direction"][cond]["dy"] is None  # its dy is constant: no correlation is defined
    assert report["words_clicks"] is None  # no text-grounding maps


def test_diagnose_reports_where_the_words_click(sim_dataset, tmp_path):
    from pixelvla_model import PixelVLAConfig, PixelVLAPolicy
    from pixelvla_training.datasets import norm_stats_for
    from pixelvla_training.datasets.sim import read_sim_episodes

    config = PixelVLAConfig.from_preset("tiny", image_size=28, proprio_dim=7, text_grounding=True, place_prompts=True)
    episodes = list(read_sim_episodes(sim_dataset))
    PixelVLAPolicy.from_config(config, seed=1, norm_stats=norm_stats_for(episodes)).save_pretrained(tmp_path / "model")
    report = diagnose.diagnose(tmp_path / "model", sim_dataset, steps=2)["words_clicks"]
    assert report["episodes"] == 4
    assert 0.0 <= report["target_within_a_patch"] <= 1.0 and 0.0 <= report["target_median_distance"] <= 1.5
    with_place = any(ep.place_mask is not None and ep.place_mask.any() for ep in episodes)
    assert (report["place_inside"] is not None) == with_place
