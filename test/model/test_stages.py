import pytest
import torch

from pixelvla_model import PixelVLA, PixelVLAConfig, example_inputs


def _fresh():
    torch.manual_seed(0)
    return PixelVLA(PixelVLAConfig.from_preset("tiny"))


def _steps(model, n=2):
    """n AdamW steps (no weight decay) on the L1 loss; returns {name: changed?}."""
    x = example_inputs(model.config, batch_size=2)  # one empty and one non-empty target mask, all prompt types
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    target = torch.rand(2, model.config.chunk_size, 7) * 2 - 1
    for _ in range(n):
        opt.zero_grad()
        model(**x, actions=target).loss.backward()
        opt.step()
    return {k: not torch.equal(before[k], v) for k, v in model.named_parameters()}


def test_cat_trains_only_the_decoder():
    model = _fresh()
    trainable = model.freeze_for_stage("cat")
    assert trainable and all(n.startswith("decoder.") for n in trainable)
    changed = _steps(model)
    assert {k for k, c in changed.items() if c} == {k for k, _ in model.decoder.named_parameters(prefix="decoder")}


def test_pue_trains_lora_pixel_prompt_and_decoder():
    model = _fresh()
    model.freeze_for_stage("pue")
    assert model.config.lora_r == 32
    names = [n for n, _ in model.named_parameters()]
    lora = {n for n in names if "lora_A" in n or "lora_B" in n}
    assert lora and all(n.startswith("llm.") for n in lora)
    intended = lora | {n for n in names if n.split(".")[0] in ("pixel_encoder", "prompt_encoder", "decoder")}
    changed = _steps(model)
    assert {k for k, c in changed.items() if c} == intended
    assert not any(changed[n] for n in names if n.startswith(("vision.", "projector.")))


def test_unknown_stage():
    with pytest.raises(ValueError, match="cat.*pue"):
        _fresh().freeze_for_stage("sft")
