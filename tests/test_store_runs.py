"""JobStore: which run of a job may go on (a worker taken for dead must stop)."""

from __future__ import annotations

import json

import pytest
import redis

from maskfarm.core.jobs import ErrorCode, StoredFrame
from maskfarm.core.params import MaskParams
from maskfarm.jobqueue.store import JobNotFound, JobStore, StopReason
from tests.recording_redis import RecordingRedis
from tests.services import redis_server
from tests.test_store import PROVENANCE, create, result, spec


def test_a_run_goes_on_until_a_later_run_starts_or_the_job_is_cancelled(store: JobStore) -> None:
    job = create(store)
    first = store.mark_running(job.id, PROVENANCE)
    assert store.stop_reason(job.id, first.attempts) is None

    second = store.mark_running(job.id, PROVENANCE)
    assert store.stop_reason(job.id, first.attempts) is StopReason.SUPERSEDED
    assert store.stop_reason(job.id, second.attempts) is None

    store.cancel(job.id)
    assert store.stop_reason(job.id, second.attempts) is StopReason.CANCELLED


def test_a_run_whose_job_ended_or_vanished_stops_without_being_told_it_was_cancelled(store: JobStore) -> None:
    job = create(store)
    run = store.mark_running(job.id, PROVENANCE)
    store.cancel(job.id)  # asked, then the job ended otherwise before this run looked
    store.mark_failed(job.id, ErrorCode.WORKER_LOST, "taken for dead")
    assert store.stop_reason(job.id, run.attempts) is StopReason.NOT_RUNNING
    store.redis.delete(store.keys.job(job.id))
    assert store.stop_reason(job.id, run.attempts) is StopReason.NOT_RUNNING


def test_stop_reasons_keep_the_values_logs_and_callers_know() -> None:
    assert [reason.value for reason in StopReason] == ["not_running", "superseded", "cancelled"]


def _announced(events) -> list[dict]:
    messages = iter(lambda: events.get_message(timeout=0.5), None)
    return [json.loads(message["data"]) for message in messages if message["type"] == "message"]


def test_a_chunk_of_frames_is_stored_in_one_call_and_announced_in_one_event(store: JobStore) -> None:
    job = create(store, spec(4, params=MaskParams(union=True)))
    run = store.mark_running(job.id, PROVENANCE)
    events = store.redis.pubsub()
    events.subscribe(store.keys.events(job.id))
    store.store_frame_result(job.id, StoredFrame.failed(1, "broken"))  # an earlier run skipped it
    chunk = [result(3, union=True), result(1, union=True), StoredFrame.failed(0, "unreadable")]

    assert store.store_frame_results(job.id, chunk, run.attempts) is None

    assert store.done_frames(job.id) == [0, 1, 3]
    assert store.frame_results(job.id, [3, 1, 0]) == chunk
    assert store.require_job(job.id).failed_frames == 1  # frame 1 stored again, no longer failed
    assert _announced(events) == [{"frame": 1}, {"frames": [3, 1, 0]}]


def test_a_chunk_is_stored_only_by_the_jobs_current_run(store: JobStore) -> None:
    job = create(store, spec(4))
    first = store.mark_running(job.id, PROVENANCE)
    second = store.mark_running(job.id, PROVENANCE)
    events = store.redis.pubsub()
    events.subscribe(store.keys.events(job.id))

    assert store.store_frame_results(job.id, [result(0), result(1)], first.attempts) == "superseded"
    assert store.done_frames(job.id) == []
    assert store.store_frame_results(job.id, [result(0), result(1)], second.attempts) is None
    store.cancel(job.id)
    assert store.store_frame_results(job.id, [result(2)], second.attempts) == "cancelled"  # stored, then stop
    assert store.done_frames(job.id) == [0, 1, 2]
    assert _announced(events) == [{"frames": [0, 1]}, {"state": "running"}, {"frame": 2}]  # not the superseded

    store.mark_cancelled(job.id)
    assert store.store_frame_results(job.id, [result(3)], second.attempts) == "not_running"
    assert store.done_frames(job.id) == [0, 1, 2]
    store.redis.delete(store.keys.job(job.id))
    with pytest.raises(JobNotFound):
        store.store_frame_results(job.id, [result(3)], second.attempts)


def test_a_chunk_whose_write_fails_stores_none_of_its_frames(store: JobStore) -> None:
    job = create(store, spec(3))
    run = store.mark_running(job.id, PROVENANCE)
    store.redis.set(store.keys.masks(job.id), "not a hash")  # every mask write fails
    events = store.redis.pubsub()
    events.subscribe(store.keys.events(job.id))

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.store_frame_results(job.id, [result(0), result(1), result(2)], run.attempts)

    assert store.done_frames(job.id) == []
    assert store.require_job(job.id).done_frames == 0
    assert _announced(events) == []


def test_a_runs_last_frames_and_its_success_are_one_call(store: JobStore, redis_url: str) -> None:
    """``finish_run``: the frames stored and announced, then the job ended as succeeded and
    announced, as ``store_frame_results`` and ``mark_succeeded`` would, in one round trip."""
    recorded = JobStore(RecordingRedis.from_url(redis_url), store.keys.namespace)
    warm = create(store, spec(1))  # the script loaded in Redis by a first call
    recorded.finish_run(warm.id, [result(0)], store.mark_running(warm.id, PROVENANCE).attempts)
    job = create(store, spec(3))
    run = store.mark_running(job.id, PROVENANCE)
    store.store_frame_results(job.id, [result(0)], run.attempts)
    events = store.redis.pubsub()
    events.subscribe(store.keys.events(job.id))
    recorded.redis.round_trips.clear()

    assert recorded.finish_run(job.id, [result(2), result(1)], run.attempts) is None

    assert [trip[0][0] for trip in recorded.redis.round_trips] == ["EVALSHA"]
    ended = store.require_job(job.id)
    assert ended.state.value == "succeeded" and ended.done_frames == 3 and ended.finished_at
    assert store.frame_results(job.id, [1, 2]) == [result(1), result(2)]
    assert not store.redis.exists(store.keys.inputs(job.id))  # a terminal state's clean-up
    assert 0 < store.redis.ttl(store.keys.done(job.id)) <= ended.result_ttl
    assert _announced(events) == [{"frames": [2, 1]}, {"state": "succeeded"}]


def test_a_run_that_may_not_finish_leaves_its_job_as_it_was(store: JobStore) -> None:
    job = create(store, spec(2))
    first = store.mark_running(job.id, PROVENANCE)
    second = store.mark_running(job.id, PROVENANCE)
    assert store.finish_run(job.id, [result(0)], first.attempts) is StopReason.SUPERSEDED
    assert store.done_frames(job.id) == [] and store.require_job(job.id).state.value == "running"

    store.cancel(job.id)
    assert store.finish_run(job.id, [result(0)], second.attempts) is StopReason.CANCELLED  # stored, not ended
    assert store.done_frames(job.id) == [0] and store.require_job(job.id).state.value == "running"

    store.mark_cancelled(job.id)
    assert store.finish_run(job.id, [], second.attempts) is StopReason.NOT_RUNNING
    assert store.finish_run(job.id, [result(1)], second.attempts) is StopReason.NOT_RUNNING
    store.redis.delete(store.keys.job(job.id))
    with pytest.raises(JobNotFound):
        store.finish_run(job.id, [result(1)], second.attempts)


def test_a_run_with_nothing_left_to_store_still_finishes(store: JobStore) -> None:
    job = create(store, spec(1))
    run = store.mark_running(job.id, PROVENANCE)
    store.store_frame_results(job.id, [result(0)], run.attempts)
    assert store.finish_run(job.id, [], run.attempts) is None
    assert store.require_job(job.id).state.value == "succeeded"


def test_pending_frames_are_read_without_the_records(store: JobStore) -> None:
    """What the batch gatherer weighs a waiting job by: its frames not stored yet; 0 for
    a job that will not run (unknown, ended, asked to cancel, queued past its deadline)."""
    queued = create(store, spec(3))
    running = create(store, spec(4))
    run = store.mark_running(running.id, PROVENANCE)
    store.store_frame_results(running.id, [result(0), result(2)], run.attempts)
    asked = create(store, spec(2))
    store.mark_running(asked.id, PROVENANCE)
    store.cancel(asked.id)
    ended = create(store, spec(2))
    store.mark_cancelled(ended.id)
    late = create(store, spec(2), queue_ttl=-1)

    ids = [queued.id, running.id, asked.id, ended.id, late.id, "0" * 32]
    assert store.pending_frames(ids) == [3, 2, 0, 0, 0, 0]


def test_a_start_reads_the_record_back_in_its_own_transaction(store: JobStore, redis_url: str) -> None:
    """The start script answers only its outcome; the record as it left it comes from
    plain reads in the same transaction: one round trip, nothing converted through Lua."""
    recorded = JobStore(RecordingRedis.from_url(redis_url), store.keys.namespace)
    job = create(store, spec(2))
    store.mark_running(create(store, spec(1)).id, PROVENANCE)  # the script loaded in Redis

    running = recorded.mark_running(job.id, PROVENANCE)

    assert running is not None and running.state.value == "running" and running.attempts == 1
    assert running.frame_names == job.frame_names and running.provenance == PROVENANCE
    (trip,) = recorded.redis.round_trips
    assert [command[0] for command in trip] == ["EVALSHA", "HGETALL", "HLEN", "HLEN"]


def test_a_redis_that_lost_its_scripts_still_starts_and_ends_jobs() -> None:
    """A restarted or failed-over Redis has no scripts: the transaction that calls one by
    its SHA loads it and goes again."""
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        lost = JobStore(client, "lost-scripts")
        job, _ = lost.create(spec(1), queue_ttl=60, inputs_ttl=120, result_ttl=300)
        client.script_flush()
        run = lost.mark_running(job.id, PROVENANCE)
        assert run is not None and run.attempts == 1
        client.script_flush()
        assert lost.finish_run(job.id, [result(0)], run.attempts) is None
        assert lost.require_job(job.id).state.value == "succeeded"
        client.close()
