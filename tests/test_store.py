"""JobStore against a real Redis: the contract the server and the worker share."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable

import pytest

from maskfarm.core.jobs import ErrorCode, JobSpec, JobState, Provenance, StoredFrame, WorkerRecord
from maskfarm.core.params import MaskParams
from maskfarm.jobqueue import records
from maskfarm.jobqueue.store import InputsExpired, JobNotFound, JobStore
from tests.images import encoded_image

PROVENANCE = Provenance(model="tiny", dtype="float32", device="cpu", maskfarm_version="0.1.0", worker="w1")


def spec(frames: int = 2, **fields) -> JobSpec:
    return JobSpec(
        frames=[encoded_image() for _ in range(frames)],
        frame_names=[f"f.{1001 + i}.png" for i in range(frames)],
        prompts=["car", "sky"],
        **fields,
    )


def create(store: JobStore, job_spec: JobSpec | None = None, *, queue_ttl: int = 60):
    job, created = store.create(job_spec or spec(), queue_ttl=queue_ttl, inputs_ttl=120, result_ttl=300)
    assert created
    return job


def result(index: int, union: bool = False) -> StoredFrame:
    return StoredFrame(
        index=index,
        width=32,
        height=24,
        masks=[b"mask0-%d" % index, b"mask1-%d" % index],
        union=b"union-%d" % index if union else None,
    )


def test_a_new_job_is_queued_with_its_frames_stored(store: JobStore) -> None:
    job_spec = spec(3, params=MaskParams(smooth=3), labels={"shot": "sh010"})
    job = create(store, job_spec)

    stored = store.require_job(job.id)
    assert stored.state is JobState.QUEUED
    assert (stored.total_frames, stored.done_frames) == (3, 0)
    assert stored.params == MaskParams(smooth=3)
    assert stored.labels == {"shot": "sh010"}
    assert store.load_frames(job.id, [2, 0]) == [job_spec.frames[2], job_spec.frames[0]]
    assert store.queued_bytes() == job_spec.input_bytes
    assert len(job.id) == 32


def test_a_queued_job_whose_record_vanished_releases_its_backlog_bytes_when_forgotten(store: JobStore) -> None:
    kept, lost = create(store, spec(2)), create(store, spec(3))
    assert store.queued_bytes() == kept.input_bytes + lost.input_bytes
    store.redis.delete(store.keys.job(lost.id))  # expired during a long outage, say
    store.forget_queued([lost.id])
    assert store.queued_bytes() == kept.input_bytes, "a phantom backlog is left"
    assert store.queued_before(float("inf"), 10) == [kept.id]
    store.forget_queued([lost.id])  # twice: nothing more released
    assert store.queued_bytes() == kept.input_bytes
    store.cancel(kept.id)  # leaving the queue the usual way releases it too, once
    store.forget_queued([kept.id])
    assert store.queued_bytes() == 0


def test_the_same_request_id_gives_the_same_job(store: JobStore) -> None:
    first, created = store.create(spec(request_id="r-1"), queue_ttl=60, inputs_ttl=120, result_ttl=300)
    again, created_again = store.create(spec(request_id="r-1"), queue_ttl=60, inputs_ttl=120, result_ttl=300)
    assert created and not created_again
    assert again.id == first.id
    assert store.get_job_for_request("r-1").id == first.id


def test_a_job_is_stored_and_queued_together_or_not_at_all(store: JobStore) -> None:
    queue_key = f"{store.keys.namespace}:test-queue"

    def enqueue(pipe, job) -> None:
        pipe.rpush(queue_key, job.id)

    def broken_enqueue(pipe, job) -> None:
        pipe.rpush(queue_key, job.id)
        raise ConnectionError("Redis went away while queuing")

    job, _ = store.create(spec(), queue_ttl=60, inputs_ttl=120, result_ttl=300, enqueue=enqueue)
    assert store.redis.lrange(queue_key, 0, -1) == [job.id.encode()]
    with pytest.raises(ConnectionError):
        store.create(spec(request_id="r-2"), queue_ttl=60, inputs_ttl=120, result_ttl=300, enqueue=broken_enqueue)
    assert store.redis.lrange(queue_key, 0, -1) == [job.id.encode()]
    assert store.get_job_for_request("r-2") is None
    assert [listed.id for listed in store.list_jobs()[0]] == [job.id]
    store.redis.delete(queue_key)


def test_admit_refuses_a_new_job_but_not_a_repeated_request(store: JobStore) -> None:
    class Refused(Exception):
        pass

    class Refuse:
        def reads(self) -> list:
            return [("GET", "no-such-key")]

        def check(self, job_spec: JobSpec, replies) -> None:
            assert replies == [None]
            raise Refused(job_spec.request_id)

    refuse = Refuse()

    first = create(store, spec(request_id="r-3"))
    again, created = store.create(spec(request_id="r-3"), queue_ttl=60, inputs_ttl=120, result_ttl=300, admit=refuse)
    assert not created and again.id == first.id
    with pytest.raises(Refused):
        store.create(spec(request_id="r-4"), queue_ttl=60, inputs_ttl=120, result_ttl=300, admit=refuse)
    assert store.get_job_for_request("r-4") is None
    assert store.queued_bytes() == first.input_bytes


def test_a_worker_runs_a_job_frame_by_frame(store: JobStore) -> None:
    job = create(store)
    events = store.redis.pubsub()
    events.subscribe(store.keys.events(job.id))

    running = store.mark_running(job.id, PROVENANCE)
    assert running.state is JobState.RUNNING and running.provenance == PROVENANCE
    assert running.attempts == 1 and running.started_at is not None
    assert store.queued_bytes() == 0
    store.store_frame_result(job.id, result(1, union=True))
    assert store.done_frames(job.id) == [1]
    store.store_frame_result(job.id, result(0))
    assert store.mark_succeeded(job.id)

    done = store.require_job(job.id)
    assert done.state is JobState.SUCCEEDED and done.done_frames == 2 and done.finished_at is not None
    assert store.frame_results(job.id, [0, 1]) == [result(0), result(1, union=True)]
    with pytest.raises(InputsExpired):
        store.load_frames(job.id, [0])
    assert 0 < store.redis.ttl(store.keys.job(job.id)) <= 300
    announced = [
        json.loads(m["data"]) for m in iter(lambda: events.get_message(timeout=1), None) if m["type"] == "message"
    ]
    assert announced == [{"state": "running"}, {"frame": 1}, {"frame": 0}, {"state": "succeeded"}]


def test_frame_results_read_with_the_job_match_those_read_without(store: JobStore) -> None:
    job = create(store, spec(4, params=MaskParams(union=True)))
    store.mark_running(job.id, PROVENANCE)
    store.store_frame_result(job.id, result(0, union=True))
    store.store_frame_result(job.id, StoredFrame.failed(1, "broken"))
    odd = StoredFrame(index=3, width=32, height=24, masks=[b"a", b"b", b"c"])  # not the job's shape
    store.store_frame_result(job.id, odd)
    job = store.require_job(job.id)

    wanted = [3, 2, 1, 0]
    expected = [odd, StoredFrame.failed(1, "broken"), result(0, union=True)]
    assert store.frame_results(job.id, wanted) == expected
    assert store.frame_results(job.id, wanted, job) == expected
    assert store.frame_results(job.id, [], job) == []


def test_frame_results_of_a_job_whose_masks_are_files_read_with_the_job(store: JobStore) -> None:
    job = create(store, spec(3, output_dir="/shows/masks"))
    store.mark_running(job.id, PROVENANCE)
    on_disk = StoredFrame(index=0, width=32, height=24, masks=[], mask_paths=["/shows/masks/car/f.1001.png"])
    store.store_frame_results(job.id, [on_disk, result(1)])  # 1: bytes after all, read too
    job = store.require_job(job.id)
    assert store.frame_results(job.id, [0, 1, 2], job) == [on_disk, result(1)]
    assert store.job_with_frames(job.id, [1, 0], job)[1] == [result(1), on_disk]


def test_a_job_is_read_again_with_its_announced_frames(store: JobStore) -> None:
    job = create(store, spec(3))
    running = store.mark_running(job.id, PROVENANCE)
    store.store_frame_result(job.id, result(2))

    again, results = store.job_with_frames(job.id, [2, 0], running)
    assert again.done_frames == 1 and again.state is JobState.RUNNING
    assert results == [result(2)]
    assert store.job_with_frames(job.id, [], running) == (again, [])
    with pytest.raises(JobNotFound):
        store.job_with_frames("0" * 32, [0], running)


def test_a_job_read_again_with_its_frames_has_every_change_and_no_new_frame_names(store: JobStore) -> None:
    job = create(store, spec(3))
    caught_up = store.require_job(job.id)  # as a watcher reads it first, queued
    running = store.mark_running(job.id, PROVENANCE)
    store.store_frame_results(job.id, [result(0), StoredFrame.failed(1, "broken")], running.attempts)
    store.cancel(job.id)  # running: the flag only
    store.mark_failed(job.id, ErrorCode.INTERNAL, "a bug")

    again, results = store.job_with_frames(job.id, [0], caught_up)
    assert again == store.require_job(job.id)  # state, times, attempts, provenance, error, flag, counts
    assert (again.state, again.done_frames, again.failed_frames) == (JobState.FAILED, 2, 1)
    assert again.cancel_requested and again.provenance == PROVENANCE and again.started_at == running.started_at
    assert results == [result(0)]
    renamed = dataclasses.replace(caught_up, frame_names=["a", "b", "c"])  # what never changes is not read again
    assert store.job_with_frames(job.id, [], renamed)[0].frame_names == ["a", "b", "c"]

    store.redis.delete(store.keys.job(job.id))
    with pytest.raises(JobNotFound):
        store.job_with_frames(job.id, [0], caught_up)


def test_a_queued_job_read_again_past_its_deadline_fails_as_expired(store: JobStore) -> None:
    job = create(store, queue_ttl=0)
    time.sleep(0.01)
    expired, _ = store.job_with_frames(job.id, [], job)
    assert expired.state is JobState.FAILED and expired.error_code is ErrorCode.EXPIRED
    assert expired == store.require_job(job.id)


def test_state_changes_write_only_the_fields_that_change(store: JobStore) -> None:
    """``records.MUTABLE_FIELDS``, all that a reader holding the job reads again, is what
    the state changes write."""

    def changed(job_id: str, change: Callable[[], object]) -> set[str]:
        before = store.redis.hgetall(store.keys.job(job_id))
        change()
        after = store.redis.hgetall(store.keys.job(job_id))
        assert set(before) == set(after)
        return {name.decode() for name in after if after[name] != before[name]}

    expired = create(store, queue_ttl=0)
    time.sleep(0.01)
    written = changed(expired.id, lambda: store.require_job(expired.id))
    cancelled, succeeded, failed = create(store), create(store), create(store)
    written |= changed(cancelled.id, lambda: store.mark_running(cancelled.id, PROVENANCE))
    written |= changed(cancelled.id, lambda: store.mark_running(cancelled.id, Provenance(worker="w2")))
    written |= changed(cancelled.id, lambda: store.cancel(cancelled.id))
    written |= changed(cancelled.id, lambda: store.mark_cancelled(cancelled.id))
    written |= changed(succeeded.id, lambda: store.mark_running(succeeded.id, PROVENANCE))
    written |= changed(succeeded.id, lambda: store.mark_succeeded(succeeded.id))
    written |= changed(failed.id, lambda: store.mark_failed(failed.id, ErrorCode.INTERNAL, "a bug"))
    assert written == set(records.MUTABLE_FIELDS)


def test_a_job_started_again_after_a_lost_worker_counts_attempts(store: JobStore) -> None:
    job = create(store)
    first = store.mark_running(job.id, PROVENANCE)
    again = store.mark_running(job.id, PROVENANCE)
    assert again.attempts == 2 and again.started_at == first.started_at


def test_a_queued_job_past_its_deadline_fails_as_expired(store: JobStore) -> None:
    job = create(store, queue_ttl=0)
    time.sleep(0.01)
    expired = store.require_job(job.id)
    assert expired.state is JobState.FAILED and expired.error_code is ErrorCode.EXPIRED
    assert "queue time" in expired.error_message
    assert store.mark_running(job.id, PROVENANCE) is None
    assert store.queued_bytes() == 0


def test_cancelling_a_queued_job_ends_it(store: JobStore) -> None:
    job = create(store)
    assert store.cancel(job.id).state is JobState.CANCELLED
    assert store.mark_running(job.id, PROVENANCE) is None


def test_cancelling_a_running_job_asks_the_worker_to_stop(store: JobStore) -> None:
    job = create(store)
    store.mark_running(job.id, PROVENANCE)
    assert not store.cancel_requested(job.id)
    cancelling = store.cancel(job.id)
    assert cancelling.state is JobState.RUNNING and cancelling.cancel_requested
    assert store.cancel_requested(job.id)
    store.store_frame_result(job.id, result(0))
    assert store.mark_cancelled(job.id)
    assert store.require_job(job.id).state is JobState.CANCELLED
    assert store.frame_results(job.id, [0]) == [result(0)]


def test_a_finished_job_stays_finished(store: JobStore) -> None:
    job = create(store)
    store.mark_running(job.id, PROVENANCE)
    assert store.mark_failed(job.id, ErrorCode.OUT_OF_MEMORY, "CUDA out of memory")
    assert not store.mark_succeeded(job.id)
    assert store.cancel(job.id).state is JobState.FAILED
    failed = store.require_job(job.id)
    assert (failed.error_code, failed.error_message) == (ErrorCode.OUT_OF_MEMORY, "CUDA out of memory")


def test_unknown_jobs(store: JobStore) -> None:
    assert store.get_job("0" * 32) is None
    assert store.get_job("x:inputs") is None
    with pytest.raises(JobNotFound):
        store.cancel("0" * 32)
    with pytest.raises(JobNotFound):
        store.store_frame_result("0" * 32, result(0))


def test_frame_pages_respect_the_byte_budget(store: JobStore) -> None:
    job = create(store, spec(5))
    store.mark_running(job.id, PROVENANCE)
    for index in (0, 1, 3, 4):
        store.store_frame_result(job.id, result(index))
    job = store.require_job(job.id)
    one_frame = result(0).nbytes

    page, next_frame = store.frame_page(job, first=0, max_frames=0, max_bytes=2 * one_frame)
    assert [r.index for r in page] == [0, 1] and next_frame == 3
    page, next_frame = store.frame_page(job, first=next_frame, max_frames=0, max_bytes=2 * one_frame)
    assert [r.index for r in page] == [3, 4] and next_frame == 5
    page, next_frame = store.frame_page(job, first=1, max_frames=2, max_bytes=1)
    assert [r.index for r in page] == [1] and next_frame == 3


def test_jobs_are_listed_newest_first_by_state_and_label_in_pages(store: JobStore) -> None:
    shot_a = [create(store, spec(1, labels={"shot": "a"})) for _ in range(5)]
    create(store, spec(1, labels={"shot": "b"}))
    store.cancel(shot_a[1].id)

    pages, token = [], ""
    while True:
        jobs, token = store.list_jobs(labels={"shot": "a"}, page_size=2, page_token=token)
        pages.append([job.id for job in jobs])
        if not token:
            break
    assert [job_id for page in pages for job_id in page] == [job.id for job in reversed(shot_a)]
    assert all(len(page) <= 2 for page in pages)

    queued, _ = store.list_jobs(states={JobState.QUEUED}, labels={"shot": "a"})
    assert [job.id for job in queued] == [job.id for job in reversed(shot_a) if job.id != shot_a[1].id]
    everything, _ = store.list_jobs()
    assert len(everything) == 6
    with pytest.raises(ValueError):
        store.list_jobs(page_token="not-a-token")


def test_workers_register_with_a_ttl(store: JobStore) -> None:
    info = WorkerRecord(name="gpu0", device="cuda:0", model="tiny", dtype="bfloat16", current_job="j1")
    store.register_worker(info, ttl=30)
    assert store.worker_infos(["gpu0", "gone"]) == {"gpu0": info}
    assert 0 < store.redis.ttl(store.keys.worker("gpu0")) <= 30
    store.unregister_worker("gpu0")
    assert store.worker_infos(["gpu0"]) == {}


def test_every_key_expires(store: JobStore) -> None:
    running, finished, queued = create(store, spec(request_id="r-2")), create(store), create(store)
    store.mark_running(running.id, PROVENANCE)
    store.store_frame_result(running.id, result(0))
    store.mark_running(finished.id, PROVENANCE)
    store.store_frame_result(finished.id, result(0))
    store.mark_succeeded(finished.id)
    store.register_worker(WorkerRecord(name="w"), ttl=30)
    store.cancel(queued.id)

    keys = store.redis.keys(f"{store.keys.namespace}:*")
    assert len(keys) >= 10
    assert {key: store.redis.ttl(key) for key in keys if store.redis.ttl(key) < 0} == {}
