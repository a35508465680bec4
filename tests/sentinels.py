"""A Redis that fails over, for tests: a primary, a replica and three Sentinels on loopback.

Each is a ``redis-server`` of its own (Sentinels are ``redis-server CONF --sentinel``) on a
free port, with its files in a temporary folder; the Sentinels take a primary for dead
after 1 s without an answer, so a SIGKILLed primary is replaced within seconds.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.services import free_port, wait_for

SERVICE_NAME = "mfprimary"
SENTINELS = 3
QUORUM = 2
DOWN_AFTER_MS = 5000
"""Long enough that a primary slowed by a busy machine is not taken for dead: at 1 s, beside
two CPU hogs, the Sentinels failed the new primary over again, to the old one restarted empty."""
FAILOVER_TIMEOUT_MS = 10000


class SentinelGroup:
    """Started by ``sentinel_group()``; ``url`` is the ``redis+sentinel://`` URL of its primary."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: dict[int, subprocess.Popen] = {}
        self.sentinel_ports = [free_port() for _ in range(SENTINELS)]
        self.first_primary = free_port()
        self.first_replica = free_port()

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE_NAME}/0"

    def start(self) -> None:
        self.start_redis(self.first_primary)
        self.start_redis(self.first_replica, replica_of=self.first_primary)
        for port in self.sentinel_ports:
            self._start_sentinel(port)
        for port in self.sentinel_ports:
            with redis.Redis(port=port) as sentinel:
                wait_for(
                    lambda s=sentinel: (
                        len(s.sentinel_slaves(SERVICE_NAME)) == 1
                        and len(s.sentinel_sentinels(SERVICE_NAME)) == SENTINELS - 1
                    ),
                    f"Sentinel {port} to see the replica and the other Sentinels",
                )

    def start_redis(self, port: int, replica_of: int | None = None) -> None:
        """A memory-only redis-server on ``port`` (a replica of ``replica_of``, in sync
        when this returns)."""
        folder = self.directory / f"redis-{port}"
        folder.mkdir(exist_ok=True)
        command = [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        if replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.processes[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        with redis.Redis(port=port) as client:
            wait_for(lambda: _answers(client), f"redis-server on port {port}")
            if replica_of is not None:
                wait_for(
                    lambda: client.info("replication").get("master_link_status") == "up",
                    f"replica {port} in sync with {replica_of}",
                )

    def _start_sentinel(self, port: int) -> None:
        config = self.directory / f"sentinel-{port}.conf"  # Sentinel rewrites it: a file of its own
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self.directory}\n"
            f"sentinel monitor {SERVICE_NAME} 127.0.0.1 {self.first_primary} {QUORUM}\n"
            f"sentinel down-after-milliseconds {SERVICE_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE_NAME} 1\n"
        )
        self.processes[port] = subprocess.Popen(["redis-server", str(config), "--sentinel"], stdout=subprocess.DEVNULL)
        with redis.Redis(port=port) as sentinel:
            wait_for(lambda: _answers(sentinel), f"Sentinel on port {port}")

    def primary_port(self) -> int:
        """The primary's port as the Sentinels report it now."""
        with redis.Redis(port=self.sentinel_ports[0]) as sentinel:
            return int(sentinel.sentinel_get_master_addr_by_name(SERVICE_NAME)[1])

    def kill(self, port: int) -> None:
        """SIGKILL: the Redis on ``port`` dies with whatever it had not passed on."""
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@contextlib.contextmanager
def sentinel_group() -> Iterator[SentinelGroup]:
    """A started ``SentinelGroup``; every process stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="maskfarm-sentinel-") as directory:
        group = SentinelGroup(Path(directory))
        try:
            group.start()
            yield group
        finally:
            group.stop()
