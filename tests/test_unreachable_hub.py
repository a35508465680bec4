"""Every command that loads a model, with the Hugging Face hub unreachable or silent.

Offline, transformers retries the hub for minutes before it gives up. maskfarm asks the hub
one bounded question first, so each command must end with the clear message well within
the generous bound of ``run_bounded`` (what it takes is measured and reported, never asserted). Only
loopback is used: the "hub" is a closed local port, or a local socket that accepts
connections and never answers.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import free_port
from tests.test_up import run_bounded

HUB_MODEL = "CIDAS/clipseg-rd64-refined"


@pytest.fixture(scope="module")
def silent_hub() -> Iterator[str]:
    """A loopback HTTP endpoint that accepts every connection and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:  # the listener was closed: the module is done
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for connection in held:
            connection.close()


@pytest.fixture(scope="module")
def closed_hub() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(params=["closed_hub", "silent_hub"])
def hub(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(request.param)


def hub_env(hub: str, hf_home: Path) -> dict[str, str]:
    """This environment with the hub at ``hub``, an empty Hugging Face cache and no HF_HUB_OFFLINE."""
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    return {**env, "HF_ENDPOINT": hub, "HF_HOME": str(hf_home)}


def maskfarm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_bounded([sys.executable, "-m", "maskfarm.cli", *args], env)


def assert_says_hub_unreachable(stderr: str) -> None:
    assert HUB_MODEL in stderr
    assert "cannot be reached" in stderr or "did not answer" in stderr, stderr
    assert "--model DIR" in stderr and "hf download" in stderr, stderr


@pytest.fixture
def frame(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "shot.1001.png"
    Image.new("RGB", (16, 12), (200, 30, 30)).save(path)
    return path


def test_segment_local_fails_fast(hub: str, frame: Path, tmp_path: Path) -> None:
    result = maskfarm(
        "segment",
        str(frame),
        "-p",
        "car",
        "--local",
        "--model",
        HUB_MODEL,
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "masks"),
        env=hub_env(hub, tmp_path / "hf"),
    )
    assert result.returncode == 2
    assert_says_hub_unreachable(result.stderr)
    assert not (tmp_path / "masks").exists()


def test_worker_fails_fast(hub: str, redis_url: str, tmp_path: Path) -> None:
    result = maskfarm(
        "worker",
        "--redis-url",
        redis_url,
        "--namespace",
        "mfhub",
        "--model",
        HUB_MODEL,
        "--device",
        "cpu",
        env=hub_env(hub, tmp_path / "hf"),
    )
    assert result.returncode == 2
    assert_says_hub_unreachable(result.stderr)


def test_up_fails_fast_before_starting_anything(hub: str, tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    result = maskfarm(
        "up",
        "--listen",
        listen,
        "--private-redis",
        "--model",
        HUB_MODEL,
        "--device",
        "cpu",
        env=hub_env(hub, tmp_path / "hf"),
    )
    assert result.returncode == 2
    assert_says_hub_unreachable(result.stderr)
    assert "serving on" not in result.stdout


def test_segmenter_load_in_python_fails_fast(hub: str, tmp_path: Path) -> None:
    script = (
        "from maskfarm.worker.pipeline import Segmenter\n"
        "from maskfarm.worker.model import ModelLoadError\n"
        "try:\n"
        f"    Segmenter.load({HUB_MODEL!r}, device='cpu')\n"
        "except ModelLoadError as error:\n"
        "    raise SystemExit(f'ModelLoadError: {error}')\n"
    )
    result = run_bounded([sys.executable, "-c", script], hub_env(hub, tmp_path / "hf"))
    assert result.returncode == 1
    assert result.stderr.startswith("ModelLoadError: ")
    assert_says_hub_unreachable(result.stderr)


def test_a_cached_copy_is_used_while_the_hub_is_silent(
    silent_hub: str, tiny_model_dir: Path, frame: Path, tmp_path: Path
) -> None:
    hf_home = tmp_path / "hf"
    snapshot = hf_home / "hub" / f"models--{HUB_MODEL.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for file in tiny_model_dir.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)

    result = maskfarm(
        "segment",
        str(frame),
        "-p",
        "car",
        "--local",
        "--model",
        HUB_MODEL,
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "masks"),
        env=hub_env(silent_hub, hf_home),
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "masks" / "car" / "shot.1001.png").is_file()


@pytest.fixture
def busy_hub() -> Iterator[str]:
    """A loopback HTTP endpoint answering 503 to everything: the hub is there, so the model is
    loaded as ever, and the hub's client retries with a warning each time."""

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_hubs_warnings_come_once_each_under_the_worker(busy_hub: str, redis_url: str, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "maskfarm.cli",
        "worker",
        "--redis-url",
        redis_url,
        "--namespace",
        "mfhub",
        "--model",
        HUB_MODEL,
        "--device",
        "cpu",
        "--log-level",
        "WARNING",
    ]
    worker = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=hub_env(busy_hub, tmp_path / "hf"))
    lines: list[str] = []
    second_retry = threading.Event()

    def read() -> None:
        for line in worker.stderr:
            lines.append(line.strip())
            if "[Retry 2/" in line:
                second_retry.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert second_retry.wait(60), "\n".join(lines[-20:])
    finally:
        worker.kill()
        worker.wait()
    first_retry = [line for line in lines if "[Retry 1/" in line]
    assert len(first_retry) == 1, "\n".join(lines)


def test_model_check_names_a_mistyped_folder_without_a_traceback(tmp_path: Path) -> None:
    typo = tmp_path / "modles" / "clipseg"
    result = maskfarm("model", "check", str(typo), env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    assert f"no such folder: {typo}" in result.stderr
    assert "Traceback" not in result.stderr
