"""``maskfarm up`` refusing what it cannot do, and stopping when asked, as a real process.

(The service it runs is tried end to end in test_client_e2e.py.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services import free_port

BOUND_S = 60.0


def up(*args: str, model: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "maskfarm.cli",
        "up",
        "--model",
        str(model),
        "--device",
        "cpu",
        "--stop-timeout",
        "10",
        *args,
    ]


def run_up(*args: str, model: Path) -> subprocess.CompletedProcess:
    return run_bounded(up(*args, model=model), {**os.environ, "HF_HUB_OFFLINE": "1"})


def run_bounded(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``argv`` run to its end, failing the test if that takes over ``BOUND_S``; then it and the
    processes it started (``up``'s run in sessions of their own) are killed."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        stdout, stderr = process.communicate(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        kill_with_children(process)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(argv[2:5])} was still running after {BOUND_S:g} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def kill_with_children(process: subprocess.Popen) -> None:
    for pid in children(process.pid) if Path("/proc/self/task").is_dir() else ():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.kill()


def test_a_listen_address_in_use_is_refused(tiny_model_dir: Path) -> None:
    with socket.socket() as taken:  # as a gRPC server holds its port: SO_REUSEPORT, which a second one may share
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_up("--listen", listen, "--private-redis", model=tiny_model_dir)
    assert result.returncode == 1
    assert f"cannot listen on {listen}" in result.stderr and "in use" in result.stderr
    assert "serving on" not in result.stdout


def test_an_explicit_redis_that_does_not_answer_is_an_error(tiny_model_dir: Path) -> None:
    silent_redis = f"redis://127.0.0.1:{free_port()}/0"
    result = run_up("--listen", f"127.0.0.1:{free_port()}", "--redis-url", silent_redis, model=tiny_model_dir)
    assert result.returncode == 1
    assert f"no Redis answers at {silent_redis}" in result.stderr
    assert "serving on" not in result.stdout


def children(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads a process's children from /proc")
def test_ctrl_c_while_the_workers_load_stops_everything(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The interrupt arrives as soon as the server answers, while the worker is still loading."""
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            up("--listen", f"127.0.0.1:{free_port()}", "--private-redis", model=tiny_model_dir),
            stdout=out,
            stderr=err,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    try:
        deadline = time.monotonic() + BOUND_S
        while "serving on" not in stdout.read_text():
            assert process.poll() is None and time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.05)
        spawned = children(process.pid)  # the private Redis, the server and the worker
        process.send_signal(signal.SIGINT)
        returncode = process.wait(timeout=BOUND_S)
    finally:
        if process.poll() is None:
            kill_with_children(process)
            process.wait()
    assert returncode == 130, stderr.read_text()
    assert "stopped before it was ready" in stderr.read_text()
    assert "ready" not in stdout.read_text()
    assert len(spawned) == 3 and all(gone(pid) for pid in spawned), spawned
