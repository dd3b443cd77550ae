"""The optional robot-state input (config.proprio_dim > 0): the network, the stages, the processor, export."""
import numpy as np
import pytest
import torch

from pixelvla_model import PixelVLA, PixelVLAConfig, PixelVLAPolicy, example_inputs, input_names
from pixelvla_model.processing import identity_norm_stats

STATS = {"sim": {"action": identity_norm_stats()["untrained"]["action"],
                 "proprio": {"q01": [-1.0] * 6 + [0.015], "q99": [1.0] * 6 + [0.037]}}}


@pytest.fixture(scope="module")
def state_model():
    torch.manual_seed(0)
    return PixelVLA(PixelVLAConfig.from_preset("tiny", proprio_dim=7)).eval()


def test_the_state_is_one_more_prefix_token_and_changes_the_actions(state_model):
    c = state_model.config
    assert c.prefix_tokens == PixelVLAConfig.from_preset("tiny").prefix_tokens + 1
    assert input_names(c)[-1] == "proprio" and "proprio" not in input_names(PixelVLAConfig.from_preset("tiny"))
    x = example_inputs(c, batch_size=2)
    with torch.no_grad():
        a = state_model(**x)
        b = state_model(**{**x, "proprio": x["proprio"] + 1.0})
    assert a.last_hidden_state.shape[1] == x["input_ids"].shape[1] + c.prefix_tokens
    # from the first step, not only after training: with the LLM's 0.02 init on every new layer the state
    # moved the untrained actions by ~1e-4 and the from-scratch decoder never learned to read it
    assert (a.actions - b.actions).abs().max() > 1e-3


def test_a_missing_or_unexpected_state_is_an_error(state_model):
    x = example_inputs(state_model.config, batch_size=1)
    with pytest.raises(ValueError, match="pass proprio"):
        state_model(**{k: v for k, v in x.items() if k != "proprio"})
    plain = PixelVLA(PixelVLAConfig.from_preset("tiny"))
    with pytest.raises(ValueError, match="do not pass proprio"):
        plain(**x)


@pytest.mark.parametrize("stage", ["cat", "pue"])
def test_the_state_encoder_trains_in_both_stages(stage):
    torch.manual_seed(0)
    model = PixelVLA(PixelVLAConfig.from_preset("tiny", proprio_dim=7))
    names = model.freeze_for_stage(stage)
    encoder = {n for n, _ in model.state_encoder.named_parameters(prefix="state_encoder")}
    assert encoder <= set(names)
    x = example_inputs(model.config, batch_size=2)
    model(**x, actions=torch.zeros(2, model.config.chunk_size, 7)).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.state_encoder.parameters())


def test_policy_normalises_the_raw_state_and_checks_it(state_model):
    from pixelvla_model import build_byte_tokenizer

    policy = PixelVLAPolicy(state_model, build_byte_tokenizer(), STATS)
    np.testing.assert_allclose(policy.processor.normalize_proprio(np.array([0.0] * 6 + [0.037])), [0.0] * 6 + [1.0], atol=1e-6)
    np.testing.assert_allclose(policy.processor.normalize_proprio(np.array([9.0] * 6 + [0.0]))[:6], 2.0)  # clipped
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    state = np.array([0.1, -0.5, 0.4, 0.0, 0.3, 0.0, 0.03])
    a = policy.predict(image, "put this cube in the bowl", proprio=state)
    b = policy.predict(image, "put this cube in the bowl", proprio=state + 0.3)
    assert a.shape == (5, 7) and np.abs(a - b).max() > 1e-6
    with pytest.raises(ValueError, match="pass proprio"):
        policy.predict(image, "put this cube in the bowl")
    with pytest.raises(ValueError, match="7 values"):
        policy.predict(image, "put this cube in the bowl", proprio=state[:6])
    with pytest.raises(ValueError, match="NaN"):
        policy.predict(image, "put this cube in the bowl", proprio=np.full(7, np.nan))
    with pytest.raises(ValueError, match="no 'proprio' entry"):
        PixelVLAPolicy(state_model, build_byte_tokenizer(), {"sim": {"action": STATS["sim"]["action"]}})


def test_a_state_model_exports_to_onnx_with_the_state_input(state_model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pixelvla_model.export import check_onnx_parity, export_onnx

    path = tmp_path / "state.onnx"
    export_onnx(state_model, path, text_len=(2, 24, 64))
    assert [i.name for i in ort.InferenceSession(str(path)).get_inputs()][-1] == "proprio"
    assert check_onnx_parity(state_model, path, batch_size=1, text_len=30) < 1e-4
