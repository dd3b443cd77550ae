import pytest
import torch

from pixelvla_model import PixelVLA, PixelVLAConfig


@pytest.fixture(scope="module")
def tiny_config():
    return PixelVLAConfig.from_preset("tiny")


@pytest.fixture(scope="module")
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return PixelVLA(PixelVLAConfig.from_preset("tiny")).eval()
