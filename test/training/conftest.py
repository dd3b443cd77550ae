"""Fixtures of the training tests; the helpers live in conftest_helpers.py (importable by the tests)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest_helpers import write_sim_dataset  # noqa: E402


@pytest.fixture
def sim_dataset(tmp_path) -> Path:
    return write_sim_dataset(tmp_path / "demos")
