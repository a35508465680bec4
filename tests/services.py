"""Real services for tests: a private Redis server and maskfarm server processes.

Nothing is faked: each Redis is a ``redis-server`` of its own on a free loopback port,
and each maskfarm server is the ``maskfarm server`` command in a subprocess.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maskfarm.v1 import segmentation_pb2_grpc as pb_grpc

STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Runs a private, memory-only redis-server; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        _wait_until(lambda: _answers(client), f"redis-server on port {port}", process)
        client.close()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class ServerProcess:
    target: str
    redis_url: str
    namespace: str
    process: subprocess.Popen

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def stub(self) -> pb_grpc.SegmentationStub:
        return pb_grpc.SegmentationStub(self.channel())

    def health(self) -> int:
        with self.channel() as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return reply.status


@contextlib.contextmanager
def maskfarm_server(redis_url: str, namespace: str, *flags: str, serving: bool = True) -> Iterator[ServerProcess]:
    """Runs ``maskfarm server`` on a free port until its health check reports SERVING
    (or, with ``serving=False``, anything); stops it with SIGTERM afterwards (and shows
    its log if it did not start)."""
    target = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "maskfarm.client.cli", "server", "--listen", target,
               "--redis-url", redis_url, "--namespace", namespace, "--grace-s", "1", *flags]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        server = ServerProcess(target, redis_url, namespace, process)
        try:
            wanted = {health_pb2.HealthCheckResponse.SERVING} if serving else set(health_pb2.HealthCheckResponse.ServingStatus.values())
            _wait_until(lambda: _health(server) in wanted, f"maskfarm server on {target}", process, log)
            yield server
        finally:
            process.terminate()
            process.wait(timeout=15)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _health(server: ServerProcess) -> int | None:
    try:
        return server.health()
    except grpc.RpcError:
        return None


def _wait_until(ready, what: str, process: subprocess.Popen, log=None) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            output = ""
            if log is not None:
                log.seek(0)
                output = log.read().decode(errors="replace")
            process.kill()
            raise RuntimeError(f"{what} did not start (exit code {process.poll()}):\n{output}")
        time.sleep(0.05)
