"""``maskfarm worker`` started against a Redis that does not answer: a plain message, exit 2,
before the model is loaded (a real process)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.services import free_port


def test_a_worker_whose_redis_does_not_answer_says_so_and_exits(tiny_model_dir):
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "maskfarm.cli",
            "worker",
            "--redis-url",
            url,
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2, result.stderr
    assert "cannot reach Redis at redis://***@127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout, "the password is not shown"
    assert "ready" not in result.stderr, "asked before the model was loaded"


def test_a_bad_worker_variable_is_the_workers_usage_error_not_other_commands_crash():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MASKFARM_HEARTBEAT_S": "ten", "MASKFARM_MAX_BATCH": "x"}

    def maskfarm(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "maskfarm.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)

    health = maskfarm("health", "--target", f"127.0.0.1:{free_port()}")
    assert "Traceback" not in health.stderr and "MASKFARM_HEARTBEAT_S" not in health.stderr, health.stderr
    assert health.returncode == 1, health.stderr  # the server is not there: that, and only that, is reported
    worker = maskfarm("worker")
    assert worker.returncode == 2 and "Traceback" not in worker.stderr
    assert "--heartbeat-s: expected a number, got 'ten' (the flag, or MASKFARM_HEARTBEAT_S)" in worker.stderr
