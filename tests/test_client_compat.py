"""The client on what pipeline hosts ship: Python 3.10 and the oldest grpcio/protobuf we allow.

Maya, Houdini and Nuke embed their own Python, often 3.10, with whatever packages a studio
installed. This builds a Python 3.10 virtual environment with exactly the minimum versions
pyproject.toml admits for the stubs (grpcio 1.66.2, protobuf 5.27.2), installs maskfarm
there without its extras, and drives a real server through ``maskfarm.client``.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MINIMUM = ["grpcio==1.66.2", "grpcio-health-checking==1.66.2", "protobuf==5.27.2", "numpy", "pillow"]

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from maskfarm.client.client import Client
    from maskfarm.client.errors import InvalidRequest, JobNotFound

    with Client(sys.argv[1]) as client:
        job = client.submit([("plate.0001.png", np.zeros((24, 32, 3), np.uint8))], ["car"], labels={"shot": "py310"})
        assert client.get(job.id).state.name == "QUEUED", client.get(job.id)
        assert client.cancel(job.id).state.name == "CANCELLED"
        try:
            client.submit([np.zeros((4, 4), np.uint8)], ["  "])
        except InvalidRequest as error:
            assert "prompts[0]" in str(error), error
        else:
            raise AssertionError("a blank prompt was accepted")
        try:
            client.get("no-such-job")
        except JobNotFound:
            pass
    for heavy in ("torch", "redis", "rq"):
        assert heavy not in sys.modules, heavy
    import grpc, google.protobuf
    print("ok", sys.version_info[:2], grpc.__version__, google.protobuf.__version__)
    """
)


def find_python310() -> str | None:
    """``python3.10`` on the PATH, or a pyenv-installed 3.10 that pyenv does not activate."""
    candidates = [
        shutil.which("python3.10"),
        *map(str, sorted(Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))),
    ]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.fixture(scope="module")
def python310(tmp_path_factory) -> Path:
    interpreter = find_python310()
    if interpreter is None:
        pytest.skip("no python3.10 on this machine")
    venv = tmp_path_factory.mktemp("py310") / "venv"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*install, *MINIMUM], check=True, timeout=600)
    subprocess.run([*install, "--no-deps", str(REPO)], check=True, timeout=600)
    return python


def test_the_client_runs_on_python_310_with_the_minimum_grpcio_and_protobuf(python310, server):
    result = subprocess.run([str(python310), "-c", SCRIPT, server.target], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ok (3, 10) 1.66.2 5.27.2" in result.stdout
