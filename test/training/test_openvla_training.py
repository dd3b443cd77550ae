"""`pixelvla-train` from an OpenVLA checkpoint directory: the shipped cat.yaml with model.init_from = a tiny
checkpoint in OpenVLA's exact layout (test/openvla_checkpoints.py), then the shipped pue.yaml from the CAT
result, with and without a robot-state input; the normalisation statistics carried through both stages."""
from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest_helpers import write_sim_dataset  # noqa: F401  (see conftest)
from openvla_checkpoints import OPENVLA_NORM_STATS, REMOTE_CODE_MARKER, write_openvla_checkpoint

from pixelvla_model import PixelVLA, PixelVLAConfig
from pixelvla_model.files import load_norm_stats
from pixelvla_training.train import main
from pixelvla_training.trainer.loop import carry_norm_stats

CONFIGS = Path(__file__).resolve().parents[2] / "config" / "training"
#: The backbone's sizes (a tiny DINOv2 + SigLIP + Llama at 28 px) ...
SIZES = PixelVLAConfig.from_preset("tiny", image_size=28, dino_layers=2, siglip_layers=3, llm_layers=1)
#: ... and what the training config sets on top: the vision head counts (not in an OpenVLA config.json)
#: and the sizes of the modules PixelVLA adds.
ADDITIONS = {"dino_heads": 2, "siglip_heads": 2, "pixel_layers": [1, 2], "pixel_hidden": 32, "prompt_pe_dim": 32,
             "decoder_hidden": 64}


@pytest.fixture(scope="module")
def openvla_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("openvla-7b")
    return d, write_openvla_checkpoint(d, SIZES, text_config={"num_attention_heads": SIZES.llm_heads})


def _args(config: str, out: Path, data: Path, init_from: Path, overrides: dict) -> list[str]:
    """The shipped stage config, pointed at the test's data and made small with --set."""
    source = {"type": "sim", "path": str(data), "key": "bridge_orig"}  # the key OpenVLA's stats are under
    sets = {"model.init_from": str(init_from), "model.overrides": json.dumps(overrides),
            "data.sources": json.dumps([source]), "output_dir": str(out), "steps": "2", "batch_size": "4",
            "grad_accum": "1", "num_workers": "0", "checkpoint_every": "1", "log_every": "1", "lora_r": "4",
            "optim.warmup_steps": "1"}
    return [str(CONFIGS / config)] + [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]


def _no_prompt(monkeypatch) -> list[str]:
    asked: list[str] = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": asked.append(prompt) or "n")
    return asked


@pytest.mark.parametrize("proprio_dim", [0, 7], ids=["image-only", "robot-state"])
def test_cat_then_pue_from_an_openvla_directory(openvla_dir, tmp_path, monkeypatch, caplog, proprio_dim):
    ovla, tensors = openvla_dir
    data = write_sim_dataset(tmp_path / "demos")
    overrides = dict(ADDITIONS, proprio_dim=proprio_dim)
    asked = _no_prompt(monkeypatch)
    caplog.set_level("INFO")

    assert main(_args("cat.yaml", tmp_path / "cat", data, ovla, overrides)) == 0
    cat = tmp_path / "cat" / "final"
    model = PixelVLA.from_pretrained(cat)
    c = model.config
    assert (c.preset, c.image_size, c.rms_norm_eps, c.pixel_where_octaves, c.proprio_dim) == (
        "prismatic-7b", 28, 1e-5, 0, proprio_dim)
    # CAT trained the decoder on the imported backbone, which it left as the checkpoint had it
    assert torch.equal(model.projector.fc1.weight, tensors["projector.fc1.weight"])
    assert torch.equal(model.llm.embed_tokens.weight, tensors["language_model.model.embed_tokens.weight"])
    assert "init_from %s: an OpenVLA checkpoint" % ovla in caplog.text
    assert "norm stats for 'bridge_orig': the init checkpoint's" in caplog.text
    cat_stats = load_norm_stats(cat)
    assert cat_stats["bridge_orig"]["action"] == OPENVLA_NORM_STATS["bridge_orig"]["action"]
    if proprio_dim:  # a new input: its statistics come from the data, not OpenVLA's unused zeros
        assert cat_stats["bridge_orig"]["proprio"]["q99"][6] > 0.0
    else:
        assert cat_stats == OPENVLA_NORM_STATS

    assert main(_args("pue.yaml", tmp_path / "pue", data, cat, overrides)) == 0
    pue = tmp_path / "pue" / "final"
    assert load_norm_stats(pue) == cat_stats
    assert PixelVLA.from_pretrained(pue).config.proprio_dim == proprio_dim
    assert asked == [] and not (ovla / REMOTE_CODE_MARKER).exists()


@pytest.mark.slow
def test_cat_from_openvla_on_the_command_line_with_stdin_closed(openvla_dir, tmp_path):
    ovla, _ = openvla_dir
    data = write_sim_dataset(tmp_path / "demos")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    done = subprocess.run([sys.executable, "-m", "pixelvla_training.train",
                           *_args("cat.yaml", tmp_path / "cat", data, ovla, ADDITIONS)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "custom code" not in done.stdout + done.stderr
    assert not (ovla / REMOTE_CODE_MARKER).exists()
    assert load_norm_stats(tmp_path / "cat" / "final") == OPENVLA_NORM_STATS


def test_norm_stats_are_carried_per_key():
    init = {"bridge_orig": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7},
                            "proprio": {"q01": [0.0] * 7, "q99": [0.0] * 7}}}
    computed = {"action": {"q01": [-2.0] * 7, "q99": [2.0] * 7}, "proprio": {"q01": [-3.0] * 7, "q99": [3.0] * 7}}
    # a key the init has: its statistics, whole
    for init_reads_state in (False, True):
        carried = carry_norm_stats("bridge_orig", computed, init, init_reads_state, reads_state=init_reads_state)
        assert carried == init["bridge_orig"]
    # a new key: computed
    assert carry_norm_stats("fractal", computed, init, init_reads_state=False, reads_state=False) == computed
    # a robot-state input the init never had: the action statistics carried, the state's computed
    grown = carry_norm_stats("bridge_orig", computed, init, init_reads_state=False, reads_state=True)
    assert grown == {"action": init["bridge_orig"]["action"], "proprio": computed["proprio"]}
