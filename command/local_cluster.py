"""``maskfarm up``: the whole service on one machine, as child processes.

A ``LocalCluster`` uses the Redis at ``redis_url`` (which must answer) or, when none was
given, the default local Redis or, when none answers there (or ``private_redis`` is asked
for) and ``redis-server`` is installed, a private, memory-only one (its own temporary
folder and a free port); then one ``maskfarm server`` and ``workers`` ``maskfarm worker``
processes. It refuses a listen address that something else already holds. It only
spawns and supervises processes: it imports neither torch nor the server, and needs
redis-py only to ask whether a Redis answers.

Children run in their own sessions, so a Ctrl-C at the terminal reaches only ``up``,
which then stops them in order: workers first (SIGTERM: each finishes its current job,
for at most ``stop_timeout_s``), then the server, then a private Redis. A stop asked for
while the cluster is still starting (``stop_requested``) ends the start at once.
"""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from maskfarm.core.defaults import DEFAULT_LISTEN, DEFAULT_NAMESPACE, DEFAULT_REDIS_URL

STARTUP_TIMEOUT_S = 60.0


class ClusterError(RuntimeError):
    """A process of the cluster could not be started or died."""


class ClusterStopped(ClusterError):
    """A stop was asked for while the cluster was starting."""


@dataclass(frozen=True)
class ClusterSettings:
    listen: str = DEFAULT_LISTEN
    redis_url: str = ""
    """The Redis to use; it must answer. Empty: ``DEFAULT_REDIS_URL`` when it answers, else a private one."""
    private_redis: bool = False
    """Always run a private, memory-only Redis (``redis_url`` must then be empty)."""
    namespace: str = DEFAULT_NAMESPACE
    workers: int = 1
    worker_flags: tuple[str, ...] = ()
    """Passed on to every ``maskfarm worker`` (``--model``, ``--device``, ...)."""
    workers_timeout_s: float = 600.0
    """How long workers may take to load their model and register."""
    stop_timeout_s: float = 30.0
    metrics_listen: str = ""
    """host:port of the server's Prometheus /metrics; worker N (from 1) gets port + N. Empty: none."""
    storage_roots: tuple[str, ...] = ()
    """Shared-storage roots, given to the server and every worker alike (empty: their
    ``MASKFARM_STORAGE_ROOTS``, if any)."""

    @property
    def storage_flags(self) -> tuple[str, ...]:
        return tuple(flag for root in self.storage_roots for flag in ("--storage-root", root))

    def metrics_flags(self, process: int) -> tuple[str, ...]:
        """``--metrics-listen`` for process 0 (the server) and 1.. (the workers), or nothing."""
        if not self.metrics_listen:
            return ()
        host, _, port = self.metrics_listen.rpartition(":")
        return ("--metrics-listen", f"{host}:{int(port) + process}")


@dataclass
class LocalCluster:
    """The processes of one ``maskfarm up``; ``start``, then ``supervise``; always ``stop``."""

    settings: ClusterSettings
    redis_url: str = ""
    server: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    private_redis: subprocess.Popen | None = None
    _redis_dir: tempfile.TemporaryDirectory | None = None
    stop_requested: Callable[[], bool] = lambda: False
    """Polled while starting: true ends ``start``/``wait_for_workers`` with ``ClusterStopped``."""

    @property
    def target(self) -> str:
        return self.settings.listen

    def start(self) -> None:
        """Starts Redis if need be, the server (waiting for SERVING) and the workers
        (waiting until all are registered). Raises ``ClusterError``."""
        if address_taken := _listen_address_taken(self.settings.listen):
            raise ClusterError(
                f"cannot listen on {self.settings.listen}: {address_taken} (is another "
                "maskfarm up or server running? stop it, or pass another --listen)"
            )
        self.redis_url = self._redis()
        self.server = _spawn(
            "server",
            "--listen",
            self.settings.listen,
            "--redis-url",
            self.redis_url,
            "--namespace",
            self.settings.namespace,
            *self.settings.metrics_flags(0),
            *self.settings.storage_flags,
        )
        self._wait_until(self._serving, "the server to report SERVING", STARTUP_TIMEOUT_S)
        for number in range(1, self.settings.workers + 1):
            self.workers.append(
                _spawn(
                    "worker",
                    "--redis-url",
                    self.redis_url,
                    "--namespace",
                    self.settings.namespace,
                    *self.settings.worker_flags,
                    *self.settings.metrics_flags(number),
                    *self.settings.storage_flags,
                )
            )

    def wait_for_workers(self) -> None:
        """Waits until every worker is registered (has loaded its model)."""
        self._wait_until(
            self._workers_ready, f"{self.settings.workers} workers to register", self.settings.workers_timeout_s
        )

    def supervise(self) -> None:
        """Returns when ``stop_requested()`` is true; raises ``ClusterError`` if a process dies."""
        while not self.stop_requested():
            self._check_alive()
            time.sleep(0.2)

    def stop(self) -> None:
        """Stops every process, workers first; kills those that outstay ``stop_timeout_s``."""
        _stop(self.workers, self.settings.stop_timeout_s)
        _stop([self.server] if self.server else [], self.settings.stop_timeout_s)
        _stop([self.private_redis] if self.private_redis else [], 10)
        if self._redis_dir is not None:
            self._redis_dir.cleanup()

    def kill(self) -> None:
        """Kills every process at once (a second Ctrl-C: no job gets to finish)."""
        for process in [*self.workers, self.server, self.private_redis]:
            if process is not None and process.poll() is None:
                process.kill()

    def _redis(self) -> str:
        """The URL of the Redis to use: the one given (it must answer), else the default or a private one."""
        given = self.settings.redis_url
        if self.settings.private_redis:
            if given:
                raise ClusterError("--redis-url and --private-redis exclude each other: use one")
            return self._start_private_redis(reason="--private-redis was asked for")
        if given:
            if not _redis_answers(given):
                raise ClusterError(
                    f"no Redis answers at {given} (given by --redis-url or MASKFARM_REDIS_URL): "
                    "start it, or set neither to use the local one or a private one"
                )
            return given
        if _redis_answers(DEFAULT_REDIS_URL):
            return DEFAULT_REDIS_URL
        return self._start_private_redis(reason=f"no Redis answers at {DEFAULT_REDIS_URL}")

    def _start_private_redis(self, reason: str) -> str:
        executable = shutil.which("redis-server")
        if executable is None:
            raise ClusterError(f"{reason} and redis-server (for a private Redis) is not installed")
        self._redis_dir = tempfile.TemporaryDirectory(prefix="maskfarm-redis-")
        port = _free_port()
        self.private_redis = subprocess.Popen(
            [
                executable,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._redis_dir.name,
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"redis://127.0.0.1:{port}/0"
        self._wait_until(lambda: _redis_answers(url), "the private redis-server to answer", 10.0)
        return url

    def _serving(self) -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.target) as channel:
            try:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)  # type: ignore[attr-defined]  # stubs list no methods
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def _workers_ready(self) -> bool:
        from maskfarm.client.client import Client
        from maskfarm.client.errors import MaskfarmError

        pids = {worker.pid for worker in self.workers}
        with Client(self.target, timeout=5, retries=0) as client:
            try:
                return pids <= {worker.pid for worker in client.workers()}
            except MaskfarmError:
                return False

    def _wait_until(self, ready, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self.stop_requested():
                raise ClusterStopped(f"stopped while waiting for {what}")
            self._check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(f"gave up waiting for {what} after {timeout_s:g} s")
            time.sleep(0.2)

    def _check_alive(self) -> None:
        named = [("redis-server", self.private_redis), ("maskfarm server", self.server)]
        named += [(f"maskfarm worker {n}", worker) for n, worker in enumerate(self.workers, 1)]
        for name, process in named:
            if process is not None and process.poll() is not None:
                raise ClusterError(f"{name} (pid {process.pid}) exited with code {process.returncode}")


def _spawn(command: str, *flags: str) -> subprocess.Popen:
    """A ``maskfarm`` subcommand in its own session; its output goes to ours."""
    return subprocess.Popen([sys.executable, "-m", "maskfarm.cli", command, *flags], start_new_session=True)


def _stop(processes: Sequence[subprocess.Popen], timeout_s: float) -> None:
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + timeout_s
    for process in running:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _redis_answers(url: str) -> bool:
    import redis

    from maskfarm.jobqueue.redis_clients import redis_from_url

    client = redis_from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listen_address_taken(listen: str) -> str | None:
    """Why a server could not listen on ``listen`` (host:port) alone, or None when it can.

    gRPC binds with SO_REUSEPORT, so a second server on a port in use would start without a
    word and share the port with the first; this plain bind fails where that one would not."""
    bracketed, _, port = listen.rpartition(":")
    host = bracketed.strip("[]") or None
    try:
        addresses = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, ValueError) as error:
        return f"not a usable host:port ({error})"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a socket in TIME_WAIT is no owner
            try:
                sock.bind(address)
            except OSError as error:
                if error.errno != errno.EADDRNOTAVAIL:  # e.g. no IPv6 here: not this address's owner
                    return error.strerror or str(error)
    return None
