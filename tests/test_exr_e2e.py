"""OpenEXR frames and EXR/TIFF16 masks end to end: ``maskfarm segment`` through a real
server and worker writes the very files ``--local`` writes, and ``--preview`` overlays."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.exr_files import exr_bytes, linear_ramp
from tests.services import ServerProcess, maskfarm_server

PROMPTS = ["Red car", "sky"]


@pytest.fixture(scope="module")
def service(redis_url: str, tiny_model_dir: Path) -> Iterator[ServerProcess]:
    """A server and one worker on the tiny model, in a namespace of this module's own; the
    worker decodes and encodes on threads, so its files equal ``--local``'s that way too."""
    with maskfarm_server(redis_url, "mfexr") as server, _worker(server, tiny_model_dir):
        yield server


@contextlib.contextmanager
def _worker(server: ServerProcess, model: Path) -> Iterator[subprocess.Popen]:
    command = [
        sys.executable,
        "-m",
        "maskfarm.cli",
        "worker",
        "--redis-url",
        server.redis_url,
        "--namespace",
        server.namespace,
        "--model",
        str(model),
        "--device",
        "cpu",
        "--codec-threads",
        "3",
    ]  # decoding and encoding on threads, as beside a GPU
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
        try:
            yield process
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two EXR frames, 40x30 display windows: float with its data window offset inside,
    half filling it; both with a ``diffuse`` layer."""
    folder = tmp_path_factory.mktemp("exr")
    paths = []
    for number, (dtype, origin, size) in {
        1001: (np.float32, (6, 4), (22, 30)),
        1002: (np.float16, (0, 0), (30, 40)),
    }.items():
        channels = {
            f"{layer}{c}": linear_ramp(*size, seed=number + i).astype(dtype)
            for i, (layer, c) in enumerate((prefix, c) for prefix in ("", "diffuse.") for c in "RGB")
        }
        path = folder / f"shot.{number}.exr"
        path.write_bytes(exr_bytes(channels, data_origin=origin, display=(0, 0, 39, 29)))
        paths.append(path)
    return paths


def maskfarm(*args: str, target: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MASKFARM_TARGET": target}
    return subprocess.run(
        [sys.executable, "-m", "maskfarm.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*.*"))}


@pytest.mark.parametrize("fmt, ext", [("exr", ".exr"), ("tiff16", ".tif")])
def test_service_writes_the_local_files_and_previews(service, tiny_model_dir, frames, tmp_path, fmt, ext) -> None:
    flags = [
        *map(str, frames),
        "-p",
        PROMPTS[0],
        "-p",
        PROMPTS[1],
        "--union",
        "--format",
        fmt,
        "--exr-layer",
        "diffuse",
        "--exposure",
        "1.5",
        "--preview",
    ]
    remote = maskfarm("segment", *flags, "-o", str(tmp_path / "service"), target=service.target)
    assert remote.returncode == 0, remote.stderr
    local = maskfarm(
        "segment", *flags, "-o", str(tmp_path / "local"), "--local", "--model", str(tiny_model_dir), "--device", "cpu"
    )
    assert local.returncode == 0, local.stderr

    service_files, local_files = files(tmp_path / "service"), files(tmp_path / "local")
    folders = ["red-car", "sky", "union"]
    masks = sorted(f"{folder}/{frame.stem}{ext}" for folder in folders for frame in frames)
    previews = sorted(f"preview/{folder}/{frame.stem}.jpg" for folder in folders for frame in frames)
    assert sorted(local_files) == sorted(masks + previews)
    assert sorted(service_files) == sorted(local_files)
    for name in masks:
        assert service_files[name] == local_files[name], name
    for name in previews:
        with Image.open(tmp_path / "service" / name) as image:
            assert (image.format, image.size, image.mode) == ("JPEG", (40, 30), "RGB")
    assert "6 previews written" in remote.stderr


def test_exr_masks_of_the_service_read_back_as_float32(service, frames, tmp_path) -> None:
    from maskfarm.client.client import Client

    with Client(service.target) as client:
        exr = client.segment(frames, PROMPTS, format="exr", exr_layer="diffuse")
        raw = client.segment(frames, PROMPTS, format="float32", exr_layer="diffuse")
    for exr_frame, raw_frame in zip(exr, raw):
        assert exr_frame.masks[0].shape == (30, 40)
        for exr_mask, raw_mask in zip(exr_frame.masks, raw_frame.masks):
            np.testing.assert_array_equal(exr_mask, raw_mask)


def test_a_layer_the_frames_lack_is_refused_before_queueing(service, frames, tmp_path) -> None:
    result = maskfarm(
        "segment", str(frames[0]), "-p", "car", "--exr-layer", "specular", "-o", str(tmp_path), target=service.target
    )
    assert result.returncode == 2
    assert "exr.layer" in result.stderr and "no readable layer 'specular'" in result.stderr
