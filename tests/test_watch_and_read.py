"""``watch_and_read``: a ``WATCH`` and reads in one round trip, leaving the pipeline watching
as ``pipe.watch`` does (real Redis); and ``JobStore.create`` deciding on a new job in one
round trip before its transaction."""

from __future__ import annotations

import uuid

import pytest
import redis
from redis.exceptions import WatchError

from maskfarm.core.jobs import JobSpec
from maskfarm.jobqueue.redis_clients import watch_and_read
from maskfarm.jobqueue.store import JobStore
from tests.recording_redis import SendCountingConnection
from tests.test_store import spec


@pytest.fixture
def client(redis_url: str):
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=SendCountingConnection)
    client = redis.Redis(connection_pool=pool)
    client.ping()
    SendCountingConnection.sends = 0
    yield client
    client.close()
    pool.disconnect()


def _key() -> str:
    return f"war-{uuid.uuid4().hex[:8]}"


def test_the_watch_and_the_reads_take_one_round_trip_and_the_transaction_one_more(client: redis.Redis) -> None:
    watched, other = _key(), _key()
    client.set(watched, "a")
    client.rpush(other, 1, 2, 3)
    SendCountingConnection.sends = 0
    with client.pipeline() as pipe:
        assert watch_and_read(pipe, [watched], [("GET", watched), ("LLEN", other), ("GET", _key())]) == [b"a", 3, None]
        assert pipe.watching
        pipe.multi()
        pipe.set(watched, "b")
        assert pipe.execute() == [True]
    assert SendCountingConnection.sends == 2
    assert client.get(watched) == b"b"
    client.delete(watched, other)


def test_a_watched_key_changed_after_the_reads_fails_the_transaction(client: redis.Redis) -> None:
    watched = _key()
    with client.pipeline() as pipe:
        assert watch_and_read(pipe, [watched], [("GET", watched)]) == [None]
        client.set(watched, "someone else")  # another connection (the pool's other one)
        pipe.multi()
        pipe.set(watched, "mine")
        with pytest.raises(WatchError):
            pipe.execute()
    assert client.get(watched) == b"someone else"
    client.delete(watched)


def test_an_error_reply_is_raised_after_every_reply_is_read(client: redis.Redis) -> None:
    hash_key = _key()
    client.hset(hash_key, "f", "v")
    with client.pipeline() as pipe:
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            watch_and_read(pipe, [hash_key], [("LLEN", hash_key), ("GET", "x")])
        assert pipe.connection is not None
        connection = pipe.connection
    connection.send_command("PING")  # nothing left unread on it: the next reply is its own
    assert connection.read_response() in (b"PONG", "PONG")
    client.delete(hash_key)


class _Backlog:
    """An admission reading one list's length, refusing when it holds anything."""

    def __init__(self, key: str) -> None:
        self.key = key

    def reads(self) -> list:
        return [("LLEN", self.key)]

    def check(self, job_spec: JobSpec, replies) -> None:
        if replies[0]:
            raise OverflowError(f"{replies[0]} waiting")


def test_create_decides_in_one_round_trip_and_stores_in_one_more(client: redis.Redis) -> None:
    store = JobStore(client, namespace=f"war-{uuid.uuid4().hex[:8]}")
    waiting = _key()
    SendCountingConnection.sends = 0
    job, created = store.create(
        spec(request_id="r-1"), queue_ttl=60, inputs_ttl=120, result_ttl=300, admit=_Backlog(waiting)
    )
    assert created and SendCountingConnection.sends == 2

    client.rpush(waiting, "a job")
    with pytest.raises(OverflowError, match="1 waiting"):
        store.create(spec(request_id="r-2"), queue_ttl=60, inputs_ttl=120, result_ttl=300, admit=_Backlog(waiting))
    assert store.get_job_for_request("r-2") is None
    again, created = store.create(
        spec(request_id="r-1"), queue_ttl=60, inputs_ttl=120, result_ttl=300, admit=_Backlog(waiting)
    )
    assert not created and again.id == job.id
    client.delete(waiting)
