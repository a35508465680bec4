"""A job's state changes, each one script call (``maskfarm.jobqueue.transitions``): what the
start of a run decides, what an end releases, and that concurrent changes never lose one."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from maskfarm.core.jobs import ErrorCode, JobState
from maskfarm.jobqueue import records
from maskfarm.jobqueue.store import JobNotFound, JobStore
from tests.test_store import PROVENANCE, create, result, spec


def _announced(events) -> list[dict]:
    return [json.loads(m["data"]) for m in iter(lambda: events.get_message(timeout=1), None) if m["type"] == "message"]


def test_a_run_starts_with_the_record_as_stored_and_releases_the_backlog(store: JobStore) -> None:
    job = create(store)
    running = store.mark_running(job.id, PROVENANCE)
    assert running == store.require_job(job.id)
    assert store.queued_bytes() == 0
    assert store.redis.hlen(store.keys.backlog_jobs()) == 0
    assert store.queued_before(time.time() + 1, 10) == []


def test_a_restart_of_a_run_whose_cancel_was_asked_ends_it_cancelled(store: JobStore) -> None:
    job = create(store)
    store.mark_running(job.id, PROVENANCE)
    store.cancel(job.id)
    events = store.redis.pubsub()
    events.subscribe(store.keys.events(job.id))
    events.get_message(timeout=1)

    assert store.mark_running(job.id, PROVENANCE) is None
    cancelled = store.require_job(job.id)
    assert cancelled.state is JobState.CANCELLED and cancelled.attempts == 1 and cancelled.finished_at
    assert not store.redis.exists(store.keys.inputs(job.id))
    assert _announced(events) == [{"state": "cancelled"}]


def test_a_start_past_the_queue_deadline_fails_the_job_as_expired(store: JobStore) -> None:
    job = create(store, queue_ttl=0)
    time.sleep(0.01)
    assert store.mark_running(job.id, PROVENANCE) is None
    expired = store.require_job(job.id)
    assert (expired.state, expired.error_code) == (JobState.FAILED, ErrorCode.EXPIRED)
    assert expired.error_message == records.expiry_message(job)
    assert expired.attempts == 0 and store.queued_bytes() == 0


def test_an_end_deletes_the_inputs_and_keeps_the_rest_for_the_result_ttl(store: JobStore) -> None:
    job = create(store, spec(request_id="r-end"))
    store.mark_running(job.id, PROVENANCE)
    store.store_frame_result(job.id, result(0))
    keys = store.keys
    store.redis.hset(keys.failed(job.id), "1", "a frame skipped")
    assert store.redis.ttl(keys.job(job.id)) > 300

    assert store.mark_failed(job.id, ErrorCode.INTERNAL, "a bug")
    assert not store.redis.exists(keys.inputs(job.id))
    for key in (keys.job(job.id), keys.done(job.id), keys.masks(job.id), keys.failed(job.id), keys.request("r-end")):
        assert 0 < store.redis.ttl(key) <= 300, key
    ended = store.require_job(job.id)
    assert (ended.done_frames, ended.failed_frames, ended.error_message) == (1, 1, "a bug")


def test_only_the_changes_that_answer_with_the_job_read_its_whole_record(store: JobStore) -> None:
    """The script reads the fields it decides on; the whole record (its frame names grow
    with the job) is read, beside the script and never through it, only where the job is
    returned: starting a run, cancelling (once: a refusal's read says what the job is)."""
    job = create(store, spec(3))
    key = store.keys.job(job.id)
    with store.redis.monitor() as monitor:
        running = store.mark_running(job.id, PROVENANCE)
        assert store.mark_succeeded(job.id)
        assert not store.mark_failed(job.id, ErrorCode.INTERNAL, "too late")  # refused
        assert store.cancel(job.id).state is JobState.SUCCEEDED  # refused, the job read beside
        store.redis.exists(f"{key}:end")
        whole = []  # the calls reading the record whole, by whom
        while (seen := monitor.next_command())["command"] != f"EXISTS {key}:end":
            if seen["command"] == f"HGETALL {key}":
                whole.append(seen["client_type"])
    assert (running.state, running.attempts, running.total_frames) == (JobState.RUNNING, 1, 3)
    assert whole == ["tcp", "tcp"]  # mark_running's read-back; cancel's


def test_a_change_of_an_unknown_job_says_so(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        store.mark_succeeded("0" * 32)
    assert store.mark_running("0" * 32, PROVENANCE) is None


def test_concurrent_starts_count_every_attempt_and_one_end_wins(store: JobStore) -> None:
    job = create(store)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: store.mark_running(job.id, PROVENANCE), range(40)))
    assert store.require_job(job.id).attempts == 40

    with ThreadPoolExecutor(8) as pool:
        ends = list(
            pool.map(lambda n: store.mark_succeeded(job.id) if n % 2 else store.mark_cancelled(job.id), range(16))
        )
    assert ends.count(True) == 1
    assert store.require_job(job.id).state in (JobState.SUCCEEDED, JobState.CANCELLED)
