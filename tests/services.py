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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maskfarm.v1 import segmentation_pb2_grpc as pb_grpc

STARTUP_TIMEOUT_S = 120.0
"""Generous: it bounds a wait for a process to answer, not its speed (the suite must pass
on a busy machine)."""

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Runs a private, memory-only redis-server; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
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
    credentials: grpc.ChannelCredentials | None = None
    """TLS credentials to reach it with; None: plaintext."""

    def channel(self) -> grpc.Channel:
        if self.credentials is not None:
            return grpc.secure_channel(self.target, self.credentials)
        return grpc.insecure_channel(self.target)

    def stub(self) -> pb_grpc.SegmentationStub:
        return pb_grpc.SegmentationStub(self.channel())

    def health(self) -> int:
        with self.channel() as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return reply.status


@contextlib.contextmanager
def maskfarm_server(
    redis_url: str,
    namespace: str,
    *flags: str,
    serving: bool = True,
    credentials: grpc.ChannelCredentials | None = None,
    target: str = "",
) -> Iterator[ServerProcess]:
    """Runs ``maskfarm server`` on a free port until its health check reports SERVING
    (or, with ``serving=False``, anything); stops it with SIGTERM afterwards (and shows
    its log if it did not start). ``credentials``: how to reach a server started with
    TLS flags. ``target``: where to listen (a restarted server's address), default a free port."""
    target = target or f"127.0.0.1:{free_port()}"
    command = [
        sys.executable,
        "-m",
        "maskfarm.cli",
        "server",
        "--listen",
        target,
        "--redis-url",
        redis_url,
        "--namespace",
        namespace,
        "--grace-s",
        "1",
        *flags,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        server = ServerProcess(target, redis_url, namespace, process, credentials)
        try:
            wanted = (
                {health_pb2.HealthCheckResponse.SERVING}
                if serving
                else set(health_pb2.HealthCheckResponse.ServingStatus.values())
            )
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


@dataclass
class Cluster:
    target: str
    process: subprocess.Popen
    output: Path
    storage: Path
    """The ``--storage-root`` given to ``maskfarm up``."""


@dataclass
class WorkerProcess:
    """A ``maskfarm worker`` process and its combined output."""

    name: str
    process: subprocess.Popen
    log: IO[bytes]

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


@contextlib.contextmanager
def maskfarm_worker(server: ServerProcess, model: os.PathLike | str, name: str, *flags: str) -> Iterator[WorkerProcess]:
    """Runs ``maskfarm worker`` named ``name`` on the CPU against ``server``'s Redis and
    namespace; afterwards SIGTERM (then SIGKILL after 30 s) if it still runs."""
    command = [
        sys.executable,
        "-m",
        "maskfarm.cli",
        "worker",
        "--redis-url",
        server.redis_url,
        "--namespace",
        server.namespace,
        "--name",
        name,
        "--model",
        str(model),
        "--device",
        "cpu",
        *flags,
    ]
    with tempfile.TemporaryFile() as log:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            yield WorkerProcess(name, process, log)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def wait_for(value: Callable[[], T | None], what: str, timeout: float = 300.0) -> T:
    """Polls ``value()`` every 50 ms until it is truthy and returns it; fails the test
    (AssertionError naming ``what``) after ``timeout`` seconds: by default a generous
    bound, since what is awaited is work getting done, whose speed depends on the
    machine and whatever else runs on it."""
    deadline = time.monotonic() + timeout
    while not (result := value()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


class PersistentRedis:
    """A private redis-server on a fixed loopback port whose data lives in ``directory``
    with every write on disk before it is acknowledged (AOF, ``appendfsync always``), so
    it can be killed and started again losing nothing."""

    def __init__(self, directory: os.PathLike | str, port: int | None = None) -> None:
        self.directory = os.fspath(directory)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Starts it and returns once it answers (with its data loaded)."""
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.directory,
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        _wait_until(lambda: _answers(client), f"redis-server on port {self.port}", self.process)
        client.close()

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to save anything more."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def persistent_redis_server() -> Iterator[PersistentRedis]:
    """A started ``PersistentRedis`` in a temporary directory; killed afterwards."""
    with tempfile.TemporaryDirectory(prefix="maskfarm-redis-") as directory:
        server = PersistentRedis(directory)
        server.start()
        try:
            yield server
        finally:
            server.kill()
