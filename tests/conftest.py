"""Shared fixtures: synthetic models (and, below, private Redis servers and server processes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight CLIPSeg model directory, written once per test session."""
    from maskfarm.worker.synthetic import write_synthetic_model

    return write_synthetic_model(tmp_path_factory.mktemp("models") / "tiny", preset="tiny")
