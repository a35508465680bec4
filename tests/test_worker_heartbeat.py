"""The worker's heartbeat: RQ's beat and maskfarm's worker info together, the info left out
of a beat that has nothing new to say (real Redis, a real RQ worker object)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import redis
from rq.job import Job

from maskfarm.core.jobs import Provenance
from maskfarm.jobqueue.rq_adapter import JOB_FUNCTION, JSONSerializer, MaskfarmQueue, queues_of
from maskfarm.jobqueue.store import JobStore
from maskfarm.worker import runner
from maskfarm.worker.runner import MaskfarmWorker
from tests.recording_redis import RecordingRedis

PROVENANCE = Provenance(model="tiny", dtype="float32", device="cpu", maskfarm_version="0.1.0", worker="w1")


def _worker(client: redis.Redis, namespace: str, store: JobStore | None = None) -> MaskfarmWorker:
    """A maskfarm worker (not started) on the namespace's queues."""
    return MaskfarmWorker(
        list(queues_of(client, namespace).values()),
        name=f"{namespace}-w",
        connection=client,
        serializer=JSONSerializer,
        store=store or JobStore(client, namespace),
        provenance=PROVENANCE,
        heartbeat_s=1.0,
        job_lease_s=30,
    )


def _beat_in_pipeline(worker: MaskfarmWorker, timeout: int) -> None:
    with worker.connection.pipeline() as pipeline:
        worker.heartbeat(timeout, pipeline)
        pipeline.execute()


def test_a_beat_rewrites_the_worker_info_only_when_it_has_something_new(redis_url: str, monkeypatch) -> None:
    monkeypatch.setattr(runner, "HEARTBEAT_SPACING_S", 3600.0)  # every beat here counts as close to the last
    client = redis.Redis.from_url(redis_url)
    namespace = f"beat-{uuid.uuid4().hex[:8]}"
    store = JobStore(client, namespace)
    worker = _worker(client, namespace, store)
    key = store.keys.worker(worker.name)
    try:
        _beat_in_pipeline(worker, 90)
        assert client.hget(key, "model") == b"tiny"
        client.hset(key, "model", "overwritten")

        _beat_in_pipeline(worker, 90)  # the same info and TTL just sent: left out
        worker.heartbeat(90)  # on its own: skipped
        assert client.hget(key, "model") == b"overwritten"
        assert client.exists(worker.key)

        _beat_in_pipeline(worker, 30)  # a new TTL: the info goes with it
        assert client.hget(key, "model") == b"tiny" and 0 < client.ttl(key) <= 30
    finally:
        client.delete(key, worker.key)
        client.close()


def test_a_state_said_again_is_not_written_again(redis_url: str) -> None:
    """RQ says "idle" as a job ends and again as it waits for the next: the second write is
    left out; a new state, or one in a pipeline (RQ's own transactions), is written."""
    client = redis.Redis.from_url(redis_url)
    worker = _worker(client, f"state-{uuid.uuid4().hex[:8]}")
    try:
        worker.set_state("idle")
        assert client.hget(worker.key, "state") == b"idle"
        client.hset(worker.key, "state", "overwritten")
        worker.set_state("idle")
        assert client.hget(worker.key, "state") == b"overwritten"
        worker.set_state("busy")
        assert client.hget(worker.key, "state") == b"busy"
        client.hset(worker.key, "state", "overwritten")
        with client.pipeline() as pipeline:
            worker.set_state("busy", pipeline)
            pipeline.execute()
        assert client.hget(worker.key, "state") == b"busy"
    finally:
        client.delete(worker.key)
        client.close()


def test_a_job_ends_without_round_trips_of_its_own_for_the_state_and_the_beats(redis_url: str) -> None:
    """After a job, RQ writes the job's heartbeat, the worker's "idle" and a beat each on
    its own, then beats again with its suspension check: maskfarm's worker says all of it
    in that last pipeline (a job has no callbacks to keep alive)."""
    client = RecordingRedis.from_url(redis_url)
    worker = _worker(client, f"end-{uuid.uuid4().hex[:8]}")
    job = worker.queues[1].enqueue_call("os.getpid", result_ttl=60)
    try:
        assert worker.work(burst=True, logging_level="WARNING", with_scheduler=False)
        trips = client.round_trips
        started = next(n for n, trip in enumerate(trips) if ("PERSIST", job.key) in map(tuple, trip))
        after = trips[started + 1 :]
        alone = [trip[0] for trip in after if len(trip) == 1]
        assert not [args for args in alone if args[0] == "HSET"], alone
        check = next(trip for trip in after if any(args[0] == "EXISTS" for args in trip))
        assert ("HSET", worker.key, "state", "idle") in [tuple(map(_text, args)) for args in check]
        beats = [trip for trip in after if ("HSET", worker.key, "last_heartbeat") in (args[:3] for args in trip)]
        assert beats == [check]
        assert job.get_status(refresh=True).value == "finished"
    finally:
        client.delete(worker.key, job.key)
        client.close()


@contextlib.contextmanager
def _ran_one_job(redis_url: str, prefix: str) -> Iterator[tuple[MaskfarmWorker, Job, list[list[tuple[str, ...]]]]]:
    """A no-op RQ job run by a maskfarm worker in burst mode: the worker, the job (checked
    finished on the way out) and the worker's round trips, as text."""
    client = RecordingRedis.from_url(redis_url)
    worker = _worker(client, f"{prefix}-{uuid.uuid4().hex[:8]}")
    job = worker.queues[1].enqueue_call("os.getpid", result_ttl=60)
    try:
        assert worker.work(burst=True, logging_level="WARNING", with_scheduler=False)
        yield worker, job, [[tuple(map(_text, args)) for args in trip] for trip in client.round_trips]
        assert job.get_status(refresh=True).value == "finished"
    finally:
        client.delete(worker.key, job.key)
        client.close()


def test_a_job_starts_in_one_round_trip(redis_url: str) -> None:
    """RQ registers a job's execution and the worker "busy" in one transaction, then marks
    the job started in another: maskfarm's worker sends both as one."""
    with _ran_one_job(redis_url, "start") as (worker, job, trips):
        started = [trip for trip in trips if ("PERSIST", job.key) in trip]
        busy = [trip for trip in trips if ("HSET", worker.key, "state", "busy") in trip]
        assert len(started) == 1 and busy == started, busy
        assert any(args[0] == "ZADD" and args[1].startswith("rq:wip:") for args in started[0]), started[0]


def test_a_dequeued_job_starts_without_a_beat_of_its_own(redis_url: str, monkeypatch) -> None:
    """RQ beats on its own as it dequeues a job; the job's start transaction, a moment
    later, beats too: maskfarm's worker sends only the second."""
    monkeypatch.setattr(runner, "HEARTBEAT_SPACING_S", 0.0)  # as when the job came after a long wait
    with _ran_one_job(redis_url, "dequeue") as (worker, job, trips):
        fetched = next(n for n, trip in enumerate(trips) if ("HGETALL", job.key) in trip)
        started = next(n for n, trip in enumerate(trips) if ("PERSIST", job.key) in trip)
        beats = [n for n, trip in enumerate(trips) if ("HSET", worker.key, "last_heartbeat") in (a[:3] for a in trip)]
        assert [n for n in beats if fetched < n <= started] == [started], trips[fetched : started + 1]


def test_a_maskfarm_job_that_ends_moves_no_dependents_without_reading_them(redis_url: str) -> None:
    """maskfarm's jobs have no dependents, so their queue does not read the set RQ keeps
    of them when one ends; any other job's are read as RQ reads them."""
    client = RecordingRedis.from_url(redis_url)
    namespace = f"deps-{uuid.uuid4().hex[:8]}"
    queue = list(queues_of(client, namespace).values())[1]
    assert isinstance(queue, MaskfarmQueue)
    ours = queue.enqueue_call(JOB_FUNCTION, args=["a-job"])
    theirs = queue.enqueue_call("os.getpid")
    try:
        for job, reads in ((ours, False), (theirs, True)):
            client.round_trips.clear()
            with client.pipeline() as pipeline:
                pipeline.watch(job.dependents_key)
                assert queue.move_dependents_to_ready(job, pipeline=pipeline) == {}
            assert any(trip[0][0] == "SMEMBERS" for trip in client.round_trips) is reads
    finally:
        queue.empty()
        client.delete(ours.key, theirs.key)
        client.close()


def _text(value) -> str:
    """A command argument as the text Redis gets (RQ passes its enums)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(getattr(value, "value", value))
