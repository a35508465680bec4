"""Every Redis client of maskfarm, built from its one URL: a plain Redis, or one found
through Sentinel and followed when Sentinel fails it over.

URLs are redis-py's (``redis://[[user]:password@]host:port/db``, ``rediss://``,
``unix://``) or, for a Redis that fails over::

    redis+sentinel://[[user]:password@]host1:26379[,host2:26379...]/service_name[/db][?sentinel_password=...]

The hosts are Sentinels; ``service_name`` is the primary they watch (``sentinel monitor
NAME ...``); the user and password are the Redis servers' (primary and replicas), the
Sentinels' own password, when they have one, is ``sentinel_password``. Every connection
asks the Sentinels for the current primary when it opens, so once a connection to a
failed primary breaks, the next command reaches the promoted replica.

Writes that must survive a failover (the server's SubmitJob) end with ``WAIT``: the
primary answers once a replica holds them (``ReplicaWait``). Server, workers and ``maskfarm
up`` build their clients here, and RQ is handed the same client. Imports only redis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from maskfarm.jobqueue.redis_errors import NotReplicated

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_TIMEOUT_S = 2.0
"""How long a question to one Sentinel may take before the next one is asked."""
REPLICA_WAIT_MS = 2000
"""How long SubmitJob waits for a replica to hold a new job before it answers UNAVAILABLE."""


@dataclass(frozen=True)
class SentinelUrl:
    """A ``redis+sentinel://`` URL, taken apart."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        """Raises ``ValueError`` naming what is wrong with ``url`` (never quoting its password)."""
        parts = urlsplit(url)
        if parts.scheme != SENTINEL_SCHEME:
            raise ValueError(f"a Sentinel URL starts with {SENTINEL_SCHEME}://")
        credentials, _, hosts = parts.netloc.rpartition("@")
        username, _, password = credentials.partition(":")
        sentinels = tuple(_host_port(address) for address in hosts.split(","))
        path = [p for p in parts.path.split("/") if p]
        if not 1 <= len(path) <= 2:
            raise ValueError(
                f"{SENTINEL_SCHEME}:// URL: the path must be /service_name or /service_name/db, got {parts.path!r}"
            )
        if len(path) == 2 and not path[1].isdigit():
            raise ValueError(f"{SENTINEL_SCHEME}:// URL: the database must be a number, got {path[1]!r}")
        query = parse_qs(parts.query)
        unknown = set(query) - {"sentinel_password"}
        if unknown:
            raise ValueError(
                f"{SENTINEL_SCHEME}:// URL: unknown option(s) {', '.join(sorted(unknown))} (known: sentinel_password)"
            )
        return cls(
            sentinels=sentinels,
            service_name=unquote(path[0]),
            db=int(path[1]) if len(path) == 2 else 0,
            username=unquote(username) or None,
            password=unquote(password) or None,
            sentinel_password=query.get("sentinel_password", [None])[0],
        )

    def sentinel_options(self) -> dict[str, Any]:
        """How to reach the Sentinels themselves: a dead one costs at most ``SENTINEL_TIMEOUT_S``."""
        options: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S}
        if self.sentinel_password:
            options["password"] = self.sentinel_password
        return options

    def server_options(self) -> dict[str, Any]:
        """How to log in to the primary and the replicas."""
        return {"db": self.db, "username": self.username, "password": self.password}


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{SENTINEL_SCHEME}:// URL: each Sentinel is host:port, got {address!r}")
    return host.strip("[]"), int(port)


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def redacted_url(url: str) -> str:
    """The Redis URL without its password, for logs and messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at else url


def redis_from_url(url: str, **options: Any) -> redis.Redis:
    """A client of the Redis at ``url`` (``options``: redis-py connection options such as
    ``socket_timeout``); through Sentinel for ``redis+sentinel://``."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    parsed = SentinelUrl.parse(url)
    sentinel = redis.sentinel.Sentinel(parsed.sentinels, sentinel_kwargs=parsed.sentinel_options())
    return sentinel.master_for(parsed.service_name, redis_class=redis.Redis, **parsed.server_options(), **options)


def async_redis_from_url(url: str, **options: Any) -> redis.asyncio.Redis:
    """``redis_from_url`` for asyncio."""
    if not is_sentinel_url(url):
        return redis.asyncio.Redis.from_url(url, **options)
    parsed = SentinelUrl.parse(url)
    sentinel = redis.asyncio.sentinel.Sentinel(parsed.sentinels, sentinel_kwargs=parsed.sentinel_options())
    return sentinel.master_for(
        parsed.service_name, redis_class=redis.asyncio.Redis, **parsed.server_options(), **options
    )


@dataclass(frozen=True)
class ReplicaWait:
    """A transaction counts as done once ``replicas`` replicas hold it (Redis ``WAIT``),
    waiting at most ``timeout_ms``."""

    replicas: int = 1
    timeout_ms: int = REPLICA_WAIT_MS

    @classmethod
    def of_setting(cls, setting: str, url: str) -> ReplicaWait | None:
        """The wait the ``replicated_submit`` setting asks for: ``auto`` (on for Sentinel
        URLs, whose primary has a replica to wait for), ``on`` or ``off``."""
        choice = setting.strip().lower()
        if choice not in ("auto", "on", "off"):
            raise ValueError(f"replicated_submit must be auto, on or off, got {setting!r}")
        if choice == "on" or (choice == "auto" and is_sentinel_url(url)):
            return cls()
        return None


class _ReplicatedPipeline(Pipeline):
    """A transaction that, on the connection that ran it, waits for replicas to hold it."""

    def __init__(self, client: redis.Redis, wait: ReplicaWait) -> None:
        super().__init__(client.connection_pool, client.response_callbacks, transaction=True, shard_hint=None)
        self.replica_wait = wait

    def _execute_transaction(self, connection, commands, raise_on_error):  # noqa: ANN001, ANN202 (redis-py's)
        results = super()._execute_transaction(connection, commands, raise_on_error)
        connection.send_command("WAIT", self.replica_wait.replicas, self.replica_wait.timeout_ms)
        held_by = int(connection.read_response())
        if held_by < self.replica_wait.replicas:
            raise NotReplicated(held_by, self.replica_wait.replicas, self.replica_wait.timeout_ms)
        return results


def transaction(client: redis.Redis, wait: ReplicaWait | None) -> Pipeline:
    """A MULTI/EXEC pipeline of ``client``; with ``wait``, its ``execute`` returns only once
    the replicas hold the writes, and raises ``NotReplicated`` when they do not in time
    (the writes are then on the primary alone: they may or may not survive a failover)."""
    if wait is None:
        return client.pipeline()
    return _ReplicatedPipeline(client, wait)


Command = tuple[EncodableT, ...]
"""A Redis command as sent: its name and arguments, e.g. ``("LLEN", key)``."""


def watch_and_read(pipe: Pipeline, watched: Sequence[str], reads: Sequence[Command]) -> list[Any]:
    """``WATCH watched`` (unless empty) and then ``reads`` (commands, e.g. ``("GET", key)``)
    sent together on ``pipe``'s connection: one round trip where ``pipe.watch`` and a
    command each would take one apiece. Returns the reads' raw replies, in order.

    Redis runs a connection's commands in the order sent, so the reads see what they would
    after a separate ``WATCH``, and ``pipe`` is left watching as ``pipe.watch`` leaves it: its
    ``multi()``/``execute()`` run on that connection and raise ``WatchError`` if a watched
    key changed since. The exchange holds no write, so a connection error is retried whole
    on a new connection (redis-py's retry of the connection); a command's error reply is
    raised after all replies are read, the connection left usable."""
    if pipe.explicit_transaction or pipe.command_stack:
        raise RuntimeError("watch_and_read comes before the pipeline's MULTI and commands")
    commands: list[Command] = [("WATCH", *watched)] if watched else []
    commands += reads
    if pipe.connection is None:  # as redis-py's own first WATCH does; pipe.reset() gives it back
        pipe.connection = pipe.connection_pool.get_connection()
    connection = pipe.connection

    def exchange() -> list[Any]:
        connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as error:
                replies.append(error)
        return replies

    replies = connection.retry.call_with_retry(exchange, lambda _error: connection.disconnect())
    if watched:
        pipe.watching = True
        replies = replies[1:]
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply
    return replies


def script_and_reads(
    client: redis.Redis,
    script: Script,
    keys: Sequence[EncodableT],
    args: Sequence[EncodableT],
    reads: Callable[[Pipeline], None],
) -> list[Any]:
    """``script``'s answer, then the replies of the commands ``reads`` queues, from one
    transaction (``MULTI``, ``EVALSHA``, the reads, ``EXEC``): one round trip, the reads
    seeing exactly what the script left. A script pays for every value it hands back
    through Lua; plain reads after it do not. redis-py's pipelines ask whether their
    scripts exist (``SCRIPT EXISTS``, a round trip) on every run: this calls the script by
    its SHA and, only when Redis lacks it (restarted, failed over, flushed), loads it and
    sends the transaction again. Error replies raise as ``pipe.execute()`` raises them."""

    def send() -> list[Any]:
        with client.pipeline() as pipe:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            reads(pipe)
            return pipe.execute()

    try:
        return send()
    except NoScriptError:
        client.script_load(script.script)
        return send()
