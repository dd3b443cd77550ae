import json

import pytest
import torch

from pixelvla_model import PixelVLA, PixelVLAConfig, example_inputs


def _outputs(model):
    x = example_inputs(model.config, batch_size=2)
    with torch.no_grad():
        return model.eval()(**x).actions


@pytest.mark.parametrize("shard_bytes", [None, 300_000], ids=["single", "sharded"])
def test_save_load_bit_exact(tiny_model, tmp_path, shard_bytes):
    kw = {} if shard_bytes is None else {"max_shard_size": shard_bytes}
    tiny_model.save_pretrained(tmp_path, **kw)
    files = sorted(p.name for p in tmp_path.iterdir())
    if shard_bytes:
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1
    else:
        assert "model.safetensors" in files
    loaded = PixelVLA.from_pretrained(tmp_path)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert torch.equal(_outputs(tiny_model), _outputs(loaded))


def test_lora_model_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = PixelVLA(PixelVLAConfig.from_preset("tiny"))
    model.freeze_for_stage("pue")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    model.save_pretrained(tmp_path)
    assert torch.equal(_outputs(model), _outputs(PixelVLA.from_pretrained(tmp_path)))


def test_clear_errors(tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PixelVLA.from_pretrained(tmp_path / "missing")
    tiny_model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        PixelVLA.from_pretrained(tmp_path)
    tiny_model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["decoder_hidden"] = 96
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape mismatches.*decoder"):
        PixelVLA.from_pretrained(tmp_path)
    cfg["decoder_hiden"] = cfg.pop("decoder_hidden")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="decoder_hiden"):
        PixelVLA.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        PixelVLA.from_pretrained(tmp_path)
