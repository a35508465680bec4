"""docker-compose.yml's own commands, run as local processes against one Redis.

No Docker engine runs here, so this is how the compose wiring is shown to work: the
server, worker and healthcheck commands and environments are read from the compose file,
and only what a container would supply differently is changed (the Redis address, the
listen address on loopback, the CPU and the tiny synthetic model instead of a GPU and the
real weights). A job submitted to that server must come back with its masks.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import yaml

from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1 import segmentation_pb2_grpc as pb_grpc
from tests.images import encoded_image
from tests.services import free_port, redis_server

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
DEADLINE_S = 300.0


def local_argv(command: list[str]) -> list[str]:
    """A compose command with its ``maskfarm`` entry point run by this Python."""
    assert command[0] == "maskfarm", command
    return [sys.executable, "-m", "maskfarm.cli", *command[1:]]


def service_env(service: dict, **changes: str) -> dict[str, str]:
    env = {**os.environ, **{key: str(value) for key, value in service.get("environment", {}).items()}}
    return {**env, **changes}


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen]:
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            if process.wait(timeout=30) not in (0, -15):
                log.seek(0)
                print(log.read().decode(errors="replace"))


def wait_for(check, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen in {DEADLINE_S:.0f} s"
        time.sleep(0.2)


def test_compose_commands_serve_a_job_as_local_processes(tiny_model_dir, tmp_path):
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    server, worker = services["server"], services["worker"]
    assert server["environment"]["MASKFARM_REDIS_URL"] == worker["environment"]["MASKFARM_REDIS_URL"]
    target = f"127.0.0.1:{free_port()}"

    with redis_server() as redis_url:
        server_env = service_env(server, MASKFARM_REDIS_URL=redis_url, MASKFARM_LISTEN=target)
        worker_env = service_env(
            worker,
            MASKFARM_REDIS_URL=redis_url,
            MASKFARM_DEVICE="cpu",
            MASKFARM_MODEL=str(tiny_model_dir),
            HF_HOME=str(tmp_path),
            HF_HUB_OFFLINE="1",
        )
        healthcheck = [part for part in server["healthcheck"]["test"] if part != "CMD"]
        health_env = {**server_env, "MASKFARM_TARGET": target}

        with running(local_argv(server["command"]), server_env), running(local_argv(worker["command"]), worker_env):
            wait_for(
                lambda: subprocess.run(local_argv(healthcheck), env=health_env, capture_output=True).returncode == 0,
                "the server's compose healthcheck passing",
            )
            with grpc.insecure_channel(target) as channel:
                stub = pb_grpc.SegmentationStub(channel)
                frame = pb.Frame(name="shot.1001.png", data=encoded_image("PNG", (40, 30), noise=True))
                job = stub.SubmitJob(pb.SubmitJobRequest(frames=[frame], prompts=["car", "sky"]), timeout=10)

                def get():
                    return stub.GetJob(pb.GetJobRequest(job_id=job.id, include_masks=True), timeout=10)

                wait_for(lambda: get().job.state == pb.JOB_STATE_SUCCEEDED, "the job succeeding")
                reply = get()
    assert [mask.prompt for mask in reply.frames[0].masks] == ["car", "sky"]
    assert all((mask.width, mask.height) == (40, 30) for mask in reply.frames[0].masks)
