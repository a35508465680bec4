"""The farm's Redis traffic, captured as Redis got it and replayed on Redis alone.

Why: in the control-plane bench the farm's Python processes (workers, servers, clients)
run on the same small machine as Redis and make each of its requests dearer (shared
caches, a VM's CPUs); on a Redis host nothing else runs beside it. Replaying the very
requests the farm made, with the farm stopped, measures Redis's part alone; the round
trips and commands per job it counts check the replay against the farm's run
(docs/BENCHMARKS.md, "The goal case's traffic on Redis alone").

``capture`` records a run with ``MONITOR``; ``round_trips`` rebuilds from it what each
connection sent in one write: a transaction (``MULTI`` .. ``EXEC``) whole, and commands of
one connection that follow each other with no other connection's between and within
``PIPELINE_GAP_S``; ``replay`` sends those round trips again on connections of its own,
``copies`` times with fresh job, execution and request ids, ``in_flight`` copies at once,
each copy in the captured order, and reads Redis's CPU, commands and reads around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

PIPELINE_GAP_S = 100e-6
"""Commands of one connection this close together, with nothing else between, came in one
write (a pipeline); a new request of a Python client takes longer than that to follow a reply."""
SKIPPED = {b"INFO", b"CONFIG", b"MONITOR", b"HELLO", b"CLIENT"}
"""Commands of the bench's own snapshots and of connection setup, not of the farm's traffic
(the replay's connections are set up before it is timed)."""

_LINE = re.compile(rb"^(\d+\.\d+) \[\d+ ([^\]]+)\] (.*)$")
_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b", b'"': b'"', b"\\": b"\\"}
_IDS = re.compile(
    rb"(?<![0-9a-f-])(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?![0-9a-f-])"
)
"""Job and execution ids (32 hex digits) and request ids (UUIDs); a script's SHA (40) is not one."""


@dataclass
class RedisSnapshot:
    """What Redis says of itself at one moment: its CPU, and per command its calls and the
    time spent inside it; subtract two to know what happened between."""

    cpu_s: float
    calls: dict[str, int]
    usec: dict[str, int]
    """Microseconds spent inside each command (the rest of the CPU is I/O and the event loop)."""
    reads: int
    """Reads of a client's requests (``total_reads_processed``): the round trips, a command on
    its own or a pipeline (a transaction) read at once."""

    @classmethod
    def take(cls, client) -> RedisSnapshot:
        """Three ``INFO`` calls on ``client`` (a synchronous redis-py client)."""
        cpu = client.info("cpu")
        stats = {name.removeprefix("cmdstat_"): value for name, value in client.info("commandstats").items()}
        return cls(
            float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
            {name: int(value["calls"]) for name, value in stats.items()},
            {name: int(value["usec"]) for name, value in stats.items()},
            int(client.info("stats")["total_reads_processed"]),
        )


@dataclass(frozen=True)
class Command:
    at: float
    client: str
    """The connection's address, or "lua" for a command a script ran."""
    args: tuple[bytes, ...]

    @property
    def name(self) -> bytes:
        return self.args[0].upper()


@dataclass(frozen=True)
class RoundTrip:
    client: str
    commands: tuple[tuple[bytes, ...], ...]


def parse_monitor(lines: Iterable[bytes]) -> list[Command]:
    """``MONITOR``'s lines as commands (their quoted, escaped arguments decoded)."""
    commands = []
    for line in lines:
        match = _LINE.match(line)
        if match:
            args = tuple(_unescape(arg) for arg in _ARG.findall(match[3]))
            commands.append(Command(float(match[1]), match[2].decode(), args))
    return commands


def _unescape(text: bytes) -> bytes:
    out, at = bytearray(), 0
    while at < len(text):
        if text[at : at + 1] != b"\\":
            out += text[at : at + 1]
            at += 1
        elif text[at + 1 : at + 2] == b"x":
            out.append(int(text[at + 2 : at + 4], 16))
            at += 4
        else:
            out += _ESCAPES[text[at + 1 : at + 2]]
            at += 2
    return bytes(out)


@contextlib.contextmanager
def monitoring(redis_url: str) -> Iterator[list[bytes]]:
    """``MONITOR``'s raw lines while inside (the list fills as they arrive). Monitoring
    costs Redis CPU: a captured run is for its traffic, never for its figures."""
    import redis

    client = redis.Redis.from_url(redis_url, protocol=2)
    connection = client.connection_pool.get_connection()
    connection.send_command("MONITOR")
    connection.read_response()
    lines: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            lines.append(connection.read_response())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield lines
    finally:
        time.sleep(0.2)  # the run's last commands reach the monitor
        done.set()
        client.echo(_END)  # the reader takes its line and stops; it and what follows are not the run's
        reader.join(timeout=5)
        del lines[next((n for n, line in enumerate(lines) if _END in line), len(lines)) :]
        connection.disconnect()
        client.close()


_END = b"maskfarm-monitor-end"


def capture(redis_url: str, run: Callable[[], T]) -> tuple[list[Command], T]:
    """The commands Redis ran during ``run()``, and what it returned."""
    with monitoring(redis_url) as lines:
        result = run()
    return parse_monitor(lines), result


def round_trips(commands: Sequence[Command]) -> list[RoundTrip]:
    """What each connection sent in one write, in the order Redis began each; commands a
    script ran, connection setup and any connection that read ``INFO`` (the bench's own)
    left out. A transaction is placed where its ``MULTI`` came: Redis shows its commands
    when ``EXEC`` runs them, and nothing after it can depend on it earlier than that."""
    own = {c.client for c in commands if c.name == b"INFO"}
    trips: list[tuple[str, list[tuple[bytes, ...]]]] = []
    open_transaction: dict[str, list[tuple[bytes, ...]]] = {}
    last: Command | None = None
    for command in commands:
        if command.client == "lua" or command.client in own or command.name in SKIPPED:
            continue
        if command.client in open_transaction:
            open_transaction[command.client].append(command.args)
            if command.name in (b"EXEC", b"DISCARD"):
                del open_transaction[command.client]
        elif (
            last is not None
            and last.client == command.client
            and command.at - last.at < PIPELINE_GAP_S
            and last.name not in (b"BLPOP", b"EXEC")
        ):
            trips[-1][1].append(command.args)
        else:
            trips.append((command.client, [command.args]))
        if command.name == b"MULTI":
            open_transaction[command.client] = trips[-1][1]
        last = command
    return [RoundTrip(client, tuple(sent)) for client, sent in trips]


def renamed(trips: Sequence[RoundTrip], copy: int) -> list[RoundTrip]:
    """The trips with every job, execution and request id made this copy's own (its last
    six hex digits replaced by the copy's number), so copies touch keys of their own."""
    suffix = b"%06x" % copy

    def rename(arg: bytes) -> bytes:
        return _IDS.sub(lambda m: m[0][:-6] + suffix, arg)

    return [RoundTrip(t.client, tuple(tuple(rename(a) for a in args) for args in t.commands)) for t in trips]


def distinct_ids(trips: Sequence[RoundTrip]) -> bool:
    """Whether the captured ids stay distinct once renamed (their first digits differ)."""
    ids = {m for t in trips for args in t.commands for a in args for m in _IDS.findall(a)}
    return len({i[:-6] for i in ids}) == len(ids)


@dataclass
class Replay:
    """What Redis said of one replay: its CPU, the commands it ran (scripts' own included)
    and the requests it read, over the replay's wall time; ``usec`` per command."""

    copies: int
    in_flight: int
    wall_s: float
    redis_cpu_s: float
    commands: int
    reads: int
    errors: int
    usec: dict[str, int]

    @property
    def busy(self) -> float:
        """The share of one CPU Redis used while the replay ran."""
        return self.redis_cpu_s / self.wall_s


def replay(
    redis_url: str, trips: Sequence[RoundTrip], copies: int, in_flight: int, subscribe: str | None = None
) -> Replay:
    """Sends ``copies`` renamed copies of ``trips``, ``in_flight`` at once, each copy's in
    order on connections of its own (one per captured connection, so a ``WATCH`` guards its
    transaction as it did), with a ``PSUBSCRIBE`` of ``subscribe`` read throughout as the
    server's; a ``BLPOP`` waits at most a second. Counts error replies; Redis's CPU,
    commands and reads are read around the sends."""
    return asyncio.run(_replay(redis_url, trips, copies, in_flight, subscribe))


async def _replay(
    redis_url: str, trips: Sequence[RoundTrip], copies: int, in_flight: int, subscribe: str | None
) -> Replay:
    import redis
    import redis.asyncio as aioredis
    from redis.connection import Connection
    from redis.exceptions import ResponseError

    packer = Connection()  # packs commands, never connects
    prepared = [[_packed(packer, t) for t in renamed(trips, copy)] for copy in range(copies)]
    clients = sorted({t.client for t in trips})
    pool = aioredis.ConnectionPool.from_url(redis_url, protocol=3, max_connections=in_flight * len(clients) + 4)
    control = aioredis.Redis(connection_pool=pool)
    slots = [{client: await pool.get_connection() for client in clients} for _ in range(in_flight)]
    pubsub = control.pubsub()
    if subscribe:
        await pubsub.psubscribe(subscribe)
    draining = asyncio.create_task(_drain(pubsub)) if subscribe else None
    queue: asyncio.Queue[int] = asyncio.Queue()
    for copy in range(copies):
        queue.put_nowait(copy)
    errors = [0]

    async def run(slot: dict) -> None:
        while not queue.empty():
            copy = queue.get_nowait()
            for client, count, packed in prepared[copy]:
                connection = slot[client]
                await connection.send_packed_command(packed, check_health=False)
                for _ in range(count):
                    try:
                        reply = await connection.read_response(disable_decoding=True)
                    except ResponseError:
                        errors[0] += 1
                    else:
                        errors[0] += isinstance(reply, list) and any(isinstance(r, Exception) for r in reply)

    with redis.Redis.from_url(redis_url) as snapshots:
        before = RedisSnapshot.take(snapshots)
        start = time.perf_counter()
        await asyncio.gather(*(run(slot) for slot in slots))
        wall = time.perf_counter() - start
        after = RedisSnapshot.take(snapshots)
    if draining:
        draining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await draining
        await pubsub.aclose()
    for slot in slots:
        for connection in slot.values():
            await pool.release(connection)
    await control.aclose()
    await pool.disconnect()
    usec = {name: n - before.usec.get(name, 0) for name, n in after.usec.items()}
    calls = {name: n - before.calls.get(name, 0) for name, n in after.calls.items() if name != "info"}
    reads = after.reads - before.reads - 3  # less the after snapshot's own three INFO
    return Replay(copies, in_flight, wall, after.cpu_s - before.cpu_s, sum(calls.values()), reads, errors[0], usec)


def _packed(packer, trip: RoundTrip) -> tuple[str, int, list[bytes]]:
    commands = [(*args[:-1], b"1") if args[0].upper() == b"BLPOP" else args for args in trip.commands]
    return trip.client, len(commands), packer.pack_commands(commands)


async def _drain(pubsub) -> None:
    while True:
        await pubsub.get_message(timeout=1.0)
