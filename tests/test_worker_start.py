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
            "maskfarm.client.cli",
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
