"""The Node.js example client (clients/node) writes the same mask files as ``maskfarm segment``.

Real pieces only: its npm dependencies installed with ``npm ci`` from the committed lock
file, ``maskfarm server`` in a namespace of this module's own, one ``maskfarm worker`` on
the tiny synthetic model, and both clients run as the commands a user would type.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.images import encoded_image
from tests.services import ServerProcess, maskfarm_server, maskfarm_worker

NODE_CLIENT = Path(__file__).resolve().parent.parent / "clients" / "node"
RUN_TIMEOUT_S = 60

pytestmark = pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")), reason="needs node and npm")


@pytest.fixture(scope="session")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clients/node's dependencies, installed once per session by ``npm ci`` (exactly the
    lock file's versions) into a folder of their own, so the source tree is left alone."""
    install = tmp_path_factory.mktemp("node-client")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(NODE_CLIENT / name, install / name)
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=install, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
    return install / "node_modules"


@pytest.fixture(scope="module")
def service(redis_url: str) -> Iterator[ServerProcess]:
    with maskfarm_server(redis_url, "mfnode") as server:
        yield server


def write_frames(folder: Path) -> list[Path]:
    """Two frames of different sizes, named like a sequence."""
    folder.mkdir()
    frames = [folder / "shot.1001.png", folder / "shot.1002.png"]
    frames[0].write_bytes(encoded_image("PNG", (32, 24), noise=True))
    frames[1].write_bytes(encoded_image("PNG", (40, 30), noise=True))
    return frames


def mask_files(outdir: Path) -> dict[str, bytes]:
    return {
        path.relative_to(outdir).as_posix(): path.read_bytes() for path in sorted(outdir.rglob("*")) if path.is_file()
    }


def run(command: list[str], **env: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env={**os.environ, **env})
    assert result.returncode == 0, f"{command[:2]} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"


def test_node_client_writes_the_masks_the_python_client_writes(service, tiny_model_dir, node_modules, tmp_path):
    frames = write_frames(tmp_path / "frames")
    prompts = ["red car", "Red car!"]  # the same slug twice: red-car, red-car-2
    prompt_flags = [flag for prompt in prompts for flag in ("--prompt", prompt)]
    node_out, python_out = tmp_path / "node", tmp_path / "python"

    with maskfarm_worker(service, tiny_model_dir, "node-test-worker"):
        run(
            [
                "node",
                str(NODE_CLIENT / "segment.js"),
                *map(str, frames),
                *prompt_flags,
                "--union",
                "--target",
                service.target,
                "--out",
                str(node_out),
            ],
            NODE_PATH=str(node_modules),
        )
        run(
            [
                sys.executable,
                "-m",
                "maskfarm.cli",
                "segment",
                *map(str, frames),
                *prompt_flags,
                "--union",
                "--target",
                service.target,
                "--output",
                str(python_out),
            ]
        )

    written = mask_files(node_out)
    assert set(written) == {
        f"{folder}/shot.{number}.png" for folder in ("red-car", "red-car-2", "union") for number in (1001, 1002)
    }
    assert written == mask_files(python_out)
    assert Image.open(node_out / "union" / "shot.1002.png").size == (40, 30)
