"""The training loop: stages train exactly their parameters, DDP over 2 processes matches 1 process, a
killed run resumes onto the uninterrupted loss curve, the final checkpoint loads with from_pretrained."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest_helpers import tiny_train_config, write_config, write_sim_dataset  # noqa: F401  (see conftest)

from pixelvla_model import PixelVLA, PixelVLAConfig, PixelVLAPolicy
from pixelvla_training.trainer import TrainConfig, Trainer


def _initial_model(cfg: dict) -> PixelVLA:
    torch.manual_seed(cfg["model"]["seed"])
    return PixelVLA(PixelVLAConfig.from_preset(cfg["model"]["preset"], **cfg["model"]["overrides"]))


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def test_cat_changes_only_the_decoder(tmp_path):
    data = write_sim_dataset(tmp_path / "demos")
    cfg = tiny_train_config(data, tmp_path / "cat", steps=3)
    final = Trainer(TrainConfig.from_dict(cfg), resume=False).train()
    before = _initial_model(cfg).state_dict()
    after = PixelVLA.from_pretrained(final).state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("decoder.") for k in changed), changed
    trainable = (tmp_path / "cat" / "trainable.txt").read_text().split()
    assert trainable and all(k.startswith("decoder.") for k in trainable)
    policy = PixelVLAPolicy.from_pretrained(final)
    assert list(policy.norm_stats) == ["bridge_orig"]
    assert (tmp_path / "cat" / "loss.png").stat().st_size > 0 and any((tmp_path / "cat" / "tensorboard").iterdir())


def test_pue_trains_exactly_lora_encoders_and_decoder(tmp_path):
    data = write_sim_dataset(tmp_path / "demos")
    cfg = tiny_train_config(data, tmp_path / "pue", stage="pue", steps=2)
    final = Trainer(TrainConfig.from_dict(cfg), resume=False).train()
    trainable = (tmp_path / "pue" / "trainable.txt").read_text().split()
    groups = {"lora": [n for n in trainable if "lora_" in n],
              "pixel": [n for n in trainable if n.startswith("pixel_encoder.")],
              "prompt": [n for n in trainable if n.startswith("prompt_encoder.")],
              "decoder": [n for n in trainable if n.startswith("decoder.")]}
    assert all(groups.values()) and sum(map(len, groups.values())) == len(trainable)
    model = _initial_model(cfg)
    expected = {n for n, _ in model.pixel_encoder.named_parameters(prefix="pixel_encoder")} | \
        {n for n, _ in model.prompt_encoder.named_parameters(prefix="prompt_encoder")} | \
        {n for n, _ in model.decoder.named_parameters(prefix="decoder")}
    assert expected == set(trainable) - set(groups["lora"])
    assert all(n.startswith("llm.") for n in groups["lora"])
    ckpt = load_file(str(sorted((tmp_path / "pue" / "checkpoints").iterdir())[-1] / "trainable.safetensors"))
    assert set(ckpt) == set(trainable)
    # the final checkpoint has LoRA merged: a plain model (lora_r 0) with the frozen towers unchanged
    after = PixelVLA.from_pretrained(final)
    assert after.config.lora_r == 0
    before = model.state_dict()
    for k, v in after.state_dict().items():
        if k.startswith(("vision.", "projector.")):
            assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, before[k]) for k, v in after.state_dict().items() if k.startswith("llm.layers"))


def test_pue_grows_place_prompts_onto_a_checkpoint_without_them(tmp_path):
    data = write_sim_dataset(tmp_path / "demos")
    cat = Trainer(TrainConfig.from_dict(tiny_train_config(data, tmp_path / "cat", steps=1)), resume=False).train()
    cfg = tiny_train_config(data, tmp_path / "pue", stage="pue", steps=3)
    cfg["model"] = {"init_from": str(cat), "place_prompts": True}
    cfg["data"]["prompts"] = {"text_only": 0.0, "place": 1.0}
    final = Trainer(TrainConfig.from_dict(cfg), resume=False).train()
    before, after = PixelVLA.from_pretrained(cat), PixelVLA.from_pretrained(final)
    assert not before.config.place_prompts and after.config.place_prompts
    assert after.prompt_encoder.label_embed.weight.shape[0] == 3
    assert "prompt_encoder.label_embed.weight" in (tmp_path / "pue" / "trainable.txt").read_text().split()


def test_training_goes_on_at_a_larger_image_size(tmp_path):
    """model.image_size on init_from: the checkpoint trained at 28 px (2 x 2 patches) trains on at 56 px (4 x 4),
    its towers' position tables resampled, and the result loads and reads 56 px images."""
    data = write_sim_dataset(tmp_path / "demos")
    cat = Trainer(TrainConfig.from_dict(tiny_train_config(data, tmp_path / "cat", steps=1)), resume=False).train()
    cfg = tiny_train_config(data, tmp_path / "pue", stage="pue", steps=2)
    cfg["model"] = {"init_from": str(cat), "image_size": 56}
    final = Trainer(TrainConfig.from_dict(cfg), resume=False).train()
    model = PixelVLA.from_pretrained(final)
    assert PixelVLA.from_pretrained(cat).config.grid_size == 2 and model.config.grid_size == 4
    assert model.vision.siglip.embeddings.position_embedding.weight.shape[0] == 16
    policy = PixelVLAPolicy.from_pretrained(final)
    assert policy.processor.config.image_size == 56


def test_tokenizer_words_become_tokens_whose_embeddings_train(tmp_path):
    from pixelvla_model import load_tokenizer
    from pixelvla_model.tokenizer import BYTE_VOCAB_SIZE

    data = write_sim_dataset(tmp_path / "demos")  # "put the red cube on the plate"
    cat = Trainer(TrainConfig.from_dict(tiny_train_config(data, tmp_path / "cat", steps=1)), resume=False).train()
    cfg = tiny_train_config(data, tmp_path / "words", stage="pue", steps=2)
    cfg["model"] = {"init_from": str(cat), "tokenizer_words": ["red", "bowl"]}
    cfg["also_train"] = ["llm.embed_tokens"]
    final = Trainer(TrainConfig.from_dict(cfg), resume=False).train()
    tokenizer = load_tokenizer(final)
    red, bowl = BYTE_VOCAB_SIZE, BYTE_VOCAB_SIZE + 1
    assert red in tokenizer("put the red cube")["input_ids"] and tokenizer.convert_ids_to_tokens(bowl) == "bowl"
    before = PixelVLA.from_pretrained(cat).llm.embed_tokens.weight
    after = PixelVLA.from_pretrained(final).llm.embed_tokens.weight
    assert not torch.equal(before[red], after[red])  # the new token's embedding trains
    with pytest.raises(ValueError, match="tokenizer_words"):
        TrainConfig.from_dict({**cfg, "model": {"tokenizer_words": "red"}})


def test_grounding_trains_the_text_grounding_map_on_the_target_patch(tmp_path):
    from pixelvla_training.trainer.loop import grounding_cross_entropy

    nan = float("nan")
    xy = torch.tensor([[0.6, 0.3], [nan, nan]])  # grid 2: column 1, row 0 -> patch 1
    logits = torch.tensor([[0.0, 5.0, 0.0, 0.0], [9.0, 0.0, 0.0, 0.0]])
    expected = -torch.log_softmax(logits[0], 0)[1]  # the unknown row is ignored
    assert grounding_cross_entropy(logits, xy, 2) == pytest.approx(float(expected))
    assert grounding_cross_entropy(torch.ones(2, 4), torch.full((2, 2), nan), 2) == 0.0
    data = write_sim_dataset(tmp_path / "demos")
    cat = Trainer(TrainConfig.from_dict(tiny_train_config(data, tmp_path / "cat", steps=1, grounding_weight=1.0)),
                  resume=False).train()
    key = PixelVLA.from_pretrained(cat).text_grounding.key.weight
    for weight in (1.0, 0.0):  # from the same map: the grounding loss, and only it, moves it
        cfg = tiny_train_config(data, tmp_path / f"pue{weight}", stage="pue", steps=2, grounding_weight=weight)
        cfg["model"] = {"init_from": str(cat)}
        model = PixelVLA.from_pretrained(Trainer(TrainConfig.from_dict(cfg), resume=False).train())
        assert model.config.text_grounding
        assert torch.equal(model.text_grounding.key.weight, key) == (weight == 0.0)
        trainable = (tmp_path / f"pue{weight}" / "trainable.txt").read_text().split()
        assert ("text_grounding.key.weight" in trainable) == (weight > 0)
        if weight:
            logged = [json.loads(line) for line in (tmp_path / "pue1.0" / "metrics.jsonl").read_text().splitlines()]
            assert all(rec["grounding_ce"] > 0 for rec in logged)
    # stage grounding: the map alone trains; every weight the actions read with a mask stays as it was
    cfg = tiny_train_config(data, tmp_path / "grounding", stage="grounding", steps=2, grounding_weight=1.0)
    cfg["model"] = {"init_from": str(cat)}
    model = PixelVLA.from_pretrained(Trainer(TrainConfig.from_dict(cfg), resume=False).train())
    trainable = (tmp_path / "grounding" / "trainable.txt").read_text().split()
    assert trainable and all(name.startswith("text_grounding.") for name in trainable)
    before = PixelVLA.from_pretrained(cat).state_dict()
    changed = {n for n, w in model.state_dict().items() if not torch.equal(w, before[n])}
    assert changed and all(n.startswith("text_grounding.") for n in changed)
    # grown colour histograms: the key gains their columns, and only the map trains
    cfg["model"] = {"init_from": str(cat), "grounding_colours": 2}
    cfg["output_dir"] = str(tmp_path / "colours")
    model = PixelVLA.from_pretrained(Trainer(TrainConfig.from_dict(cfg), resume=False).train())
    assert model.config.grounding_colours == 2
    assert model.text_grounding.key.weight.shape[1] == model.config.vision_hidden + 8
    changed = {n for n, w in model.state_dict().items() if n in before and not torch.equal(w, before[n])}
    assert changed <= {n for n in before if n.startswith("text_grounding.")}
    for bad in ({"grounding_weight": -1}, {"stage": "grounding", "grounding_weight": 0.0}):
        with pytest.raises(ValueError, match="grounding_weight"):
            TrainConfig.from_dict({**cfg, **bad})
    # dropped (model.text_grounding: false): a text-only sample carries no prompt, and the checkpoint says so
    cfg = tiny_train_config(data, tmp_path / "dropped", steps=1)
    cfg["model"] = {"init_from": str(tmp_path / "colours" / "final"), "text_grounding": False}
    model = PixelVLA.from_pretrained(Trainer(TrainConfig.from_dict(cfg), resume=False).train())
    assert model.text_grounding is None and not model.config.text_grounding and not model.config.grounding_colours
    assert not any(n.startswith("text_grounding.") for n in model.state_dict())
    with pytest.raises(ValueError, match="drops the maps"):
        TrainConfig.from_dict({**cfg, "grounding_weight": 1.0})
    with pytest.raises(ValueError, match="model.text_grounding must be true or false"):
        TrainConfig.from_dict({**cfg, "model": {"text_grounding": "no"}})
    # put back (model.load_modules): the maps of another checkpoint, exactly, onto the policy without them
    cfg = tiny_train_config(data, tmp_path / "loaded", stage="grounding", steps=1, grounding_weight=1.0)
    cfg["model"] = {"init_from": str(tmp_path / "dropped" / "final"), "grounding_colours": 2,
                    "load_modules": {"text_grounding": str(tmp_path / "colours" / "final")}}
    model, _, _ = Trainer(TrainConfig.from_dict(cfg), resume=False).build_model()
    maps = PixelVLA.from_pretrained(tmp_path / "colours" / "final").text_grounding.state_dict()
    assert all(torch.equal(w, maps[k]) for k, w in model.text_grounding.state_dict().items())
    cfg["model"]["grounding_colours"] = 0  # the key without the colour columns: shapes differ
    with pytest.raises(ValueError, match="does not fit"):
        Trainer(TrainConfig.from_dict(cfg), resume=False).build_model()
    with pytest.raises(ValueError, match="model.load_modules must map"):
        TrainConfig.from_dict({**cfg, "model": {"load_modules": ["text_grounding"]}})


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    data = write_sim_dataset(tmp_path / "demos")
    runs = {}
    for world, accum in ((1, 2), (2, 1)):
        out = tmp_path / f"w{world}"
        cfg = write_config(tmp_path / f"w{world}.yaml",
                           tiny_train_config(data, out, stage="pue", steps=3, batch_size=4, grad_accum=accum))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world), "--master_addr", "127.0.0.1",
               "--master_port", str(29500 + (os.getpid() % 400) + world), "-m", "pixelvla_training.train", str(cfg)]
        subprocess.run(cmd, check=True, env=_env(), timeout=300, capture_output=True)
        runs[world] = (PixelVLA.from_pretrained(out / "final").state_dict(), _losses(out))
    (one, l1), (two, l2) = runs[1], runs[2]
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=2e-5, rtol=1e-4, msg=k)
    assert l1.keys() == l2.keys()
    for s in l1:
        assert abs(l1[s] - l2[s]) < 1e-5


@pytest.mark.slow
def test_killed_run_resumes_onto_the_uninterrupted_curve(tmp_path):
    data = write_sim_dataset(tmp_path / "demos")
    kw = dict(stage="pue", steps=10, checkpoint_every=3)
    straight = write_config(tmp_path / "a.yaml", tiny_train_config(data, tmp_path / "a", **kw))
    subprocess.run([sys.executable, "-m", "pixelvla_training.train", str(straight)], check=True, env=_env(),
                   timeout=300, capture_output=True)

    out = tmp_path / "b"
    resumed = write_config(tmp_path / "b.yaml", tiny_train_config(data, out, **kw))
    cmd = [sys.executable, "-m", "pixelvla_training.train", str(resumed)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:  # kill it once it is past a checkpoint but not done
            if (out / "metrics.jsonl").exists() and max(_losses(out) or {0: 0}) >= 5:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = max(_losses(out))
    assert 5 <= killed_at < 10 and not (out / "final").exists()
    subprocess.run(cmd, check=True, env=_env(), timeout=300, capture_output=True)
    a, b = _losses(tmp_path / "a"), _losses(out)
    assert a.keys() == b.keys() == set(range(1, 11))
    for s in a:
        assert abs(a[s] - b[s]) <= 1e-6 * max(1.0, abs(a[s])), (s, a[s], b[s])
    wa = PixelVLA.from_pretrained(tmp_path / "a" / "final").state_dict()
    wb = PixelVLA.from_pretrained(out / "final").state_dict()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-6, rtol=1e-6, msg=k)


def test_reinit_gives_a_module_fresh_weights_and_leaves_the_rest():
    torch.manual_seed(0)
    config = PixelVLAConfig.from_preset("tiny")
    config.prompt_offsets = True
    model = PixelVLA(config)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)  # as if trained to something no init gives
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name in ("decoder", "pixel_encoder", "prompt_encoder", "prompt_offsets"):
        model.reinitialise(name)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    fixed_buffers = {"prompt_encoder.fourier_freqs"}  # the prompts' Fourier features are drawn once and kept
    assert changed == {k for k in before if k.split(".")[0] in ("decoder", "pixel_encoder", "prompt_encoder",
                                                                 "prompt_offsets") and k not in fixed_buffers}
    # as a new model: LayerNorms the identity, the empty mask's token and the offsets' last layer zero, the
    # prompt encoder's embeddings at the model's initializer_range (not PyTorch's N(0, 1))
    assert model.decoder.head[0].weight.eq(1).all()
    assert model.pixel_encoder.no_target.eq(0).all()
    assert model.prompt_offsets.mlp[4].weight.eq(0).all() and model.prompt_offsets.mlp[4].bias.eq(0).all()
    assert model.prompt_offsets.mlp[0].weight.ne(0).any()
    std = model.prompt_encoder.type_embed.weight.std().item()
    assert 0.3 * config.initializer_range < std < 3 * config.initializer_range, std
    with pytest.raises(ValueError, match="'decoder.nowhere' is not a module"):
        model.reinitialise("decoder.nowhere")
    with pytest.raises(ValueError, match="model.reinit must be a list"):
        TrainConfig.from_dict({"stage": "cat", "model": {"reinit": "decoder"}})


def test_config_is_validated(tmp_path):
    with pytest.raises(ValueError, match="stage"):
        TrainConfig.from_dict({"stage": "sft"})
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainConfig.from_dict({"stage": "cat", "stpes": 3})
    with pytest.raises(ValueError, match="model.image_size must be a positive int"):
        TrainConfig.from_dict({"stage": "pue", "model": {"image_size": "224"}})
    path = write_config(tmp_path / "c.yaml", {"stage": "cat", "steps": 3})
    assert TrainConfig.from_yaml(path, ["steps=7", "optim.lr=0.5"]).steps == 7


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "config" / "training").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_training_configs_parse(path):
    cfg = TrainConfig.from_yaml(path)
    assert cfg.stage in ("cat", "pue", "grounding") and cfg.steps > 0
    assert all(src.get("type") and src.get("path") for src in cfg.data["sources"])
