"""Session fixtures: each model is saved and exported once per test session (exports take seconds)."""
from __future__ import annotations

import pytest

from pixelvla_model import PixelVLAPolicy
from pixelvla_model.configuration import PixelVLAConfig


def save_checkpoint(tmp_path_factory, preset: str):
    path = tmp_path_factory.mktemp(f"{preset}-ckpt")
    PixelVLAPolicy.from_config(PixelVLAConfig.from_preset(preset), seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint):
    """Exported through the CLI (pixelvla-export CHECKPOINT OUT), so the CLI path is covered too."""
    from pixelvla_model.export import main

    out = tmp_path_factory.mktemp("tiny-bundle") / "bundle"
    assert main([str(tiny_checkpoint), str(out), "--model-id", "tiny-test", "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory, "small")


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory, small_checkpoint):
    from pixelvla_model.export import export_bundle

    out = tmp_path_factory.mktemp("small-bundle") / "bundle"
    export_bundle(small_checkpoint, out, model_id="small-test", parity_check=False)
    return out


@pytest.fixture(scope="session")
def tiny_runtimes(tiny_checkpoint, tiny_bundle):
    """(torch runtime, onnxruntime runtime) of the same tiny weights."""
    from pixelvla_model.runtime import load_runtime

    return load_runtime(tiny_checkpoint, backend="torch"), load_runtime(tiny_bundle, backend="onnxruntime")


@pytest.fixture(scope="session")
def small_runtimes(small_checkpoint, small_bundle):
    from pixelvla_model.runtime import load_runtime

    return load_runtime(small_checkpoint, backend="torch"), load_runtime(small_bundle, backend="onnxruntime")
