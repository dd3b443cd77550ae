"""FSDP (trainer/sharding.py): a 2-process run on gloo holds half of the model per process and trains like one
process; the meta-device build fills every tensor from the checkpoint or its module's initialiser."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest_helpers import tiny_train_config, write_config, write_sim_dataset  # noqa: F401  (see conftest)

from pixelvla_model import PixelVLA, PixelVLAConfig

from openvla_checkpoints import write_openvla_checkpoint

#: The small preset's widths (512-wide LLM, 32 064-token vocabulary, 256-wide towers) at reduced depth, with
#: LoRA already in the checkpoint so that both runs start from exactly the same tensors: ~28 M parameters.
MODEL = dict(image_size=56, llm_layers=2, dino_layers=3, siglip_layers=3, pixel_layers=[1, 2], lora_r=4)


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def _run(tmp_path: Path, name: str, cfg: dict, world: int) -> Path:
    _train(write_config(tmp_path / f"{name}.yaml", cfg), world)
    return Path(cfg["output_dir"])


def _train(cfg_path: Path, world: int) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world), "--master_addr",
           "127.0.0.1", "--master_port", str(29100 + (os.getpid() % 300) + world), "-m", "pixelvla_training.train",
           str(cfg_path)]
    run = subprocess.run(cmd, env=_env(), timeout=400, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]


@pytest.mark.slow
def test_two_process_fsdp_holds_half_the_model_and_matches_one_process(tmp_path):
    data = write_sim_dataset(tmp_path / "demos")
    torch.manual_seed(1)
    init = tmp_path / "init"
    model = PixelVLA(PixelVLAConfig.from_preset("small", **MODEL))
    with torch.no_grad():  # LoRA B starts at zero; make the adapters matter from the first step
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.save_pretrained(init)
    del model

    runs = {}
    for world, accum, mode in ((1, 2, "auto"), (2, 1, "fsdp")):
        out = tmp_path / f"w{world}"
        cfg = tiny_train_config(data, out, stage="pue", steps=4, batch_size=4, grad_accum=accum,
                                distributed=mode, also_train=["vision.dino"], checkpoint_every=4)
        cfg["model"] = {"init_from": str(init)}
        cfg["optim"] = {"lr": 1e-3, "warmup_steps": 1}
        _train(write_config(tmp_path / f"w{world}.yaml", cfg), world)
        memory = [json.loads((out / f"memory_rank{r}.json").read_text()) for r in range(world)]
        runs[world] = (PixelVLA.from_pretrained(out / "final").state_dict(), _losses(out), memory)

    (one, l1, m1), (two, l2, m2) = runs[1], runs[2]
    full = m1[0]["parameter_bytes_model"]
    assert full > 100e6 and m1[0]["parameter_bytes_local"] == full and m1[0]["mode"] == "single"
    # each rank holds its half of every tensor (dim 0 split in two), and its memory grew by about that much: the
    # single process grew by the model plus what every process spends on building it (imports, Python objects)
    assert [m["mode"] for m in m2] == ["fsdp", "fsdp"]
    assert sum(m["parameter_bytes_local"] for m in m2) == full
    overhead = m1[0]["rss_growth_bytes_model"] - full
    for m in m2:
        assert m["parameter_bytes_model"] == full
        assert 0.45 * full < m["parameter_bytes_local"] < 0.55 * full, m
        assert 0.35 * full < m["rss_growth_bytes_model"] - overhead < 0.65 * full, (m, m1)

    assert l1.keys() == l2.keys() == {1, 2, 3, 4}
    for s in l1:
        assert abs(l1[s] - l2[s]) <= 1e-4 * max(1.0, abs(l1[s])), (s, l1[s], l2[s])
    assert l1[4] != l1[1]  # it trained
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-4, rtol=1e-3, msg=k)


@pytest.mark.slow
def test_fsdp_from_an_openvla_checkpoint_matches_one_process(tmp_path):
    """The importer's key plan and transforms (timm qkv split, DINOv2 positions) fill the shards; the modules
    PixelVLA adds start from the same fresh values as in a single process."""
    sizes = PixelVLAConfig.from_preset("tiny", image_size=28, dino_layers=2, siglip_layers=3, llm_layers=2)
    ovla = tmp_path / "openvla-7b"
    write_openvla_checkpoint(ovla, sizes, text_config={"num_attention_heads": sizes.llm_heads})
    data = write_sim_dataset(tmp_path / "demos")
    finals, losses = {}, {}
    for world, accum, mode in ((1, 2, "auto"), (2, 1, "fsdp")):
        cfg = tiny_train_config(data, tmp_path / f"w{world}", steps=3, grad_accum=accum, distributed=mode,
                                also_train=["vision.dino", "llm"], checkpoint_every=3)
        cfg["model"] = {"init_from": str(ovla), "overrides": {"dino_heads": 2, "siglip_heads": 2, "pixel_layers": [1, 2],
                                                              "pixel_hidden": 32, "prompt_pe_dim": 32,
                                                              "decoder_hidden": 64}}
        out = _run(tmp_path, f"w{world}", cfg, world)
        finals[world], losses[world] = PixelVLA.from_pretrained(out / "final").state_dict(), _losses(out)
    for s in losses[1]:
        assert abs(losses[1][s] - losses[2][s]) <= 1e-4 * max(1.0, abs(losses[1][s])), (s, losses)
    for k, v in finals[1].items():
        torch.testing.assert_close(finals[2][k], v, atol=1e-4, rtol=1e-3, msg=k)


@pytest.mark.slow
def test_fsdp_from_scratch_initialises_every_tensor_like_its_module(tmp_path):
    """Without init_from each backbone tensor is drawn by its module's initialiser on the CPU (bf16 and
    activation checkpointing on: the options run on the CPU too)."""
    data = write_sim_dataset(tmp_path / "demos")
    cfg = tiny_train_config(data, tmp_path / "run", stage="pue", steps=2, distributed="fsdp", precision="bf16",
                            activation_checkpointing=True, checkpoint_every=2)
    final = PixelVLA.from_pretrained(_run(tmp_path, "run", cfg, 2) / "final")
    c = final.config
    assert torch.equal(final.llm.norm.weight, torch.ones(c.llm_hidden))  # RMSNorm: ones (frozen in PUE)
    layer = final.vision.dino.encoder.layer[0]
    assert torch.equal(layer.layer_scale1.lambda1, torch.full((c.dino_hidden,), c.dino_layerscale_init))
    assert torch.equal(final.vision.dino.embeddings.mask_token, torch.zeros_like(final.vision.dino.embeddings.mask_token))
    embed = final.llm.embed_tokens.weight  # normal(0, initializer_range), the same on both ranks' halves
    assert abs(embed.std().item() - c.initializer_range) < 0.1 * c.initializer_range
    rows = embed.shape[0] // 2
    assert not torch.equal(embed[:rows], embed[rows:2 * rows])
    assert all(torch.isfinite(v).all() for v in final.state_dict().values())
