"""Shared fixtures: synthetic models (and, below, private Redis servers and server processes)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import ServerProcess, maskfarm_server, redis_server

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight CLIPSeg model directory, written once per test session."""
    from maskfarm.worker.synthetic import write_synthetic_model

    return write_synthetic_model(tmp_path_factory.mktemp("models") / "tiny", preset="tiny")


@pytest.fixture(scope="session")
def processor(tiny_model_dir: Path):
    """The tiny model's CLIPSegProcessor, as the reference computations use it."""
    from transformers import CLIPSegProcessor

    return CLIPSegProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def plain_model(tiny_model_dir: Path):
    """The tiny model as transformers loads it, untouched by maskfarm (the reference)."""
    from transformers import CLIPSegForImageSegmentation

    return CLIPSegForImageSegmentation.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a private redis-server for this test session."""
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def server(redis_url: str) -> Iterator[ServerProcess]:
    """A ``maskfarm server`` process for this session (namespace ``mftest``), SERVING."""
    with maskfarm_server(redis_url, "mftest") as process:
        yield process
