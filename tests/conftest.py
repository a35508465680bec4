"""Shared fixtures: synthetic models, private Redis servers, server processes, a job store
and a whole ``maskfarm up``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from maskfarm.jobqueue.store import JobStore
from tests.services import Cluster, ServerProcess, free_port, maskfarm_server, redis_server

UP_STARTUP_TIMEOUT_S = 90.0

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


@pytest.fixture(scope="module")
def cluster(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """``maskfarm up --private-redis``: it starts its own Redis."""
    target = f"127.0.0.1:{free_port()}"
    output = tmp_path_factory.mktemp("up") / "stdout"
    storage = tmp_path_factory.mktemp("storage")
    command = [
        sys.executable,
        "-m",
        "maskfarm.cli",
        "up",
        "--listen",
        target,
        "--private-redis",
        "--namespace",
        "mfup",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--stop-timeout",
        "10",
        "--storage-root",
        str(storage),
    ]
    with tempfile.TemporaryFile() as log, output.open("wb") as stdout:
        process = subprocess.Popen(command, stdout=stdout, stderr=log, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        try:
            deadline = time.monotonic() + UP_STARTUP_TIMEOUT_S
            while "ready" not in output.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"maskfarm up did not start:\n{log.read().decode(errors='replace')}")
                time.sleep(0.1)
            yield Cluster(target, process, output, storage)
        finally:
            if process.poll() is None:  # a run that skipped the shutdown test: stop it all
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    """A store in a namespace of its own."""
    client = redis.Redis.from_url(redis_url)
    yield JobStore(client, namespace=f"store-{uuid.uuid4().hex[:8]}")
    client.close()
