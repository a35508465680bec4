"""``maskfarm worker --health-file`` and ``maskfarm worker-health``: the liveness probe of
the worker image, through a real worker, a real Redis and the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.services import maskfarm_server, maskfarm_worker, persistent_redis_server, wait_for

QUICK_BEATS = ("--heartbeat-s", "0.5", "--job-lease-s", "3", "--maintenance-s", "1")


def worker_health(path: Path, within: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "maskfarm.cli", "worker-health", "--file", str(path), "--within", str(within)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MASKFARM_HEALTH_FILE": ""},
    )


def test_alive_while_heartbeats_reach_redis_and_not_after(tiny_model_dir, tmp_path):
    health_file = tmp_path / "alive"
    assert worker_health(health_file, 60).returncode == 1, "no file yet: not alive"
    with (
        persistent_redis_server() as redis,
        maskfarm_server(redis.url, "mflive") as server,
        maskfarm_worker(server, tiny_model_dir, "mflive-a", *QUICK_BEATS, "--health-file", str(health_file)) as worker,
    ):
        wait_for(health_file.exists, "the worker's first heartbeat", timeout=120)
        alive = worker_health(health_file, 60)
        assert alive.returncode == 0 and "alive" in alive.stdout, alive.stderr
        first = health_file.stat().st_mtime
        wait_for(lambda: health_file.stat().st_mtime > first, "a later heartbeat to touch the file again")
        redis.kill()
        # The worker lives on, waiting for Redis; its heartbeats no longer arrive.
        stale = wait_for(lambda: (r := worker_health(health_file, 2)).returncode == 1 and r, "the file to go stale")
        assert "last heartbeat" in stale.stderr
        assert worker.process.poll() is None, worker.output()


def test_without_a_file_named_it_says_how_to_name_one(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "maskfarm.cli", "worker-health"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MASKFARM_HEALTH_FILE": ""},
    )
    assert result.returncode == 2 and "MASKFARM_HEALTH_FILE" in result.stderr
