import json

import pytest

from pixelvla_model import PRESETS, PixelVLAConfig


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate_and_roundtrip_json(name, tmp_path):
    c = PixelVLAConfig.from_preset(name)
    c.save(tmp_path / "config.json")
    again = PixelVLAConfig.from_json_file(tmp_path / "config.json")
    assert again == c
    assert json.loads(c.to_json())["pixel_layers"] == list(c.pixel_layers)


def test_prismatic_sizes():
    c = PixelVLAConfig.from_preset("prismatic-7b")
    assert (c.dino_hidden, c.dino_layers, c.dino_registers) == (1024, 24, 4)
    assert (c.siglip_hidden, c.siglip_layers, c.image_size, c.patch_size) == (1152, 27, 224, 14)
    assert (c.llm_hidden, c.llm_layers, c.llm_intermediate) == (4096, 32, 11008)
    assert c.chunk_size == 5 and c.num_patches == 256 and c.vision_hidden == 2176


def test_unknown_key_and_bad_values_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown PixelVLAConfig keys.*chunk_sise"):
        PixelVLAConfig.from_dict({"chunk_sise": 5})
    with pytest.raises(ValueError, match="pixel_layers"):
        PixelVLAConfig.from_preset("tiny", pixel_layers=(1, 3))  # tiny SigLIP runs 2 blocks
    with pytest.raises(ValueError, match="llm_hidden 65 must be divisible"):
        PixelVLAConfig.from_preset("tiny", llm_hidden=65)
    with pytest.raises(ValueError, match="unknown preset"):
        PixelVLAConfig.from_preset("huge")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        PixelVLAConfig.from_json_file(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="config.json"):
        PixelVLAConfig.from_json_file(tmp_path / "nothing" / "config.json")
