"""bench/redis_traffic.py: Redis's ``MONITOR`` lines parsed, the round trips rebuilt from
them, and a captured run replayed on a real Redis, copy after copy with ids of their own."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import redis_traffic  # noqa: E402
from redis_traffic import Command, RoundTrip  # noqa: E402

from tests.services import redis_server  # noqa: E402

JOB = "8d3dcbbc59b88758a86ca516a7565bc6"
REQUEST = "f65103cc-306f-4c00-8054-39b65b795a4e"
SHA = "d381c00539b15c98a1481a67af4fbf29cceaea73"


def test_monitor_lines_are_parsed_with_their_escapes() -> None:
    lines = [
        b'1796171360.388068 [0 127.0.0.1:58872] "HSET" "k" "a \\"quoted\\" word" "\\x00\\xff" "two\\nlines"',
        b'1796171360.388100 [0 lua] "PTTL" "k"',
        b"OK",
    ]
    first, second = redis_traffic.parse_monitor(lines)
    assert first == Command(
        1796171360.388068, "127.0.0.1:58872", (b"HSET", b"k", b'a "quoted" word', b"\x00\xff", b"two\nlines")
    )
    assert (second.client, second.name) == ("lua", b"PTTL")


def _at(us: float, client: str, *args: str) -> Command:
    return Command(us / 1e6, client, tuple(a.encode() for a in args))


def test_round_trips_are_a_transaction_whole_and_a_pipelines_commands_together() -> None:
    a, b, own = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
    commands = [
        _at(0, own, "INFO", "cpu"),
        _at(1, a, "MULTI"),
        _at(2, b, "GET", "x"),  # another connection's, between the transaction's MULTI and its commands
        _at(400, a, "SET", "k", "v"),
        _at(401, a, "EXEC"),
        _at(402, "lua", "HGET", "k", "f"),
        _at(900, a, "LLEN", "q1"),  # a pipeline: close together, nothing between
        _at(905, a, "LLEN", "q2"),
        _at(2000, a, "BLPOP", "q1", "q2", "15"),
        _at(2001, a, "HGETALL", "job"),  # after a blocking pop: a new request
        _at(2500, b, "HELLO", "3"),
        _at(3000, own, "GET", "k"),  # the connection that read INFO is the bench's own
    ]
    trips = redis_traffic.round_trips(commands)
    assert trips == [
        RoundTrip(a, ((b"MULTI",), (b"SET", b"k", b"v"), (b"EXEC",))),
        RoundTrip(b, ((b"GET", b"x"),)),
        RoundTrip(a, ((b"LLEN", b"q1"), (b"LLEN", b"q2"))),
        RoundTrip(a, ((b"BLPOP", b"q1", b"q2", b"15"),)),
        RoundTrip(a, ((b"HGETALL", b"job"),)),
    ]


def test_copies_get_ids_of_their_own_and_scripts_keep_their_sha() -> None:
    trips = [
        RoundTrip("c", ((b"EVALSHA", SHA.encode(), b"1", f"ns:job:{JOB}".encode(), f"ns:request:{REQUEST}".encode()),))
    ]
    (copy,) = redis_traffic.renamed(trips, 5)
    _, sha, _, job_key, request_key = copy.commands[0]
    assert sha == SHA.encode()
    assert job_key == f"ns:job:{JOB[:-6]}000005".encode()
    assert request_key == f"ns:request:{REQUEST[:-6]}000005".encode()
    assert redis_traffic.distinct_ids(trips)
    twins = [RoundTrip("c", ((b"GET", JOB.encode()), (b"GET", (JOB[:-6] + "abcdef").encode())))]
    assert not redis_traffic.distinct_ids(twins)


def test_a_captured_run_replays_on_a_real_redis_copy_after_copy() -> None:
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        script = client.register_script("redis.call('HSET', KEYS[1], 'state', ARGV[1]) return 1")
        job = uuid.uuid4().hex

        def run() -> None:
            with client.pipeline() as transaction:
                transaction.hset(f"job:{job}", "state", "queued")
                transaction.rpush("queue", job)
                transaction.execute()
            client.blpop(["queue"], timeout=1)
            script(keys=[f"job:{job}"], args=["running"])
            with client.pipeline(transaction=False) as reads:
                reads.hgetall(f"job:{job}")
                reads.llen("queue")
                reads.execute()

        run()  # the script loaded before the capture
        commands, _ = redis_traffic.capture(url, run)
        trips = redis_traffic.round_trips(commands)
        assert [trip.commands[0][0].upper() for trip in trips] == [b"MULTI", b"BLPOP", b"EVALSHA", b"HGETALL"]

        replay = redis_traffic.replay(url, trips, copies=3, in_flight=2, subscribe="events:*")

        assert replay.errors == 0
        assert replay.reads == 3 * len(trips)
        assert replay.commands == 3 * sum(len(trip.commands) for trip in trips) + 3  # + the script's HSET, each copy's
        copies = [f"job:{job[:-6]}{n:06x}" for n in range(3)]
        assert [client.hget(key, "state") for key in copies] == [b"running"] * 3
        client.close()
