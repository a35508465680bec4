"""``run_job`` in-process on a real Redis: resuming a retried job, cooperative cancel, the
start of a job in the worker's RQ transaction."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from maskfarm.core.jobs import JobSpec, JobState, Provenance, StoredFrame
from maskfarm.jobqueue.rq_adapter import JSONSerializer, MaskfarmQueue
from maskfarm.jobqueue.store import JobStore
from maskfarm.server.queue import JobQueue
from maskfarm.worker.batching import CoJobs
from maskfarm.worker.job import run_job
from maskfarm.worker.pipeline import Segmenter
from maskfarm.worker.runner import MaskfarmWorker
from maskfarm.worker.runtime import RunStarts, WorkerRuntime, install_runtime
from tests.images import encoded_image
from tests.recording_redis import RecordingRedis
from tests.services import redis_server
from tests.test_orphans import LIMITS

PROMPTS = ["a cat", "a dog"]


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir: Path) -> Segmenter:
    return Segmenter.load(str(tiny_model_dir), "cpu", max_batch=2)  # one frame per chunk


@pytest.fixture
def store(redis_url: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url), namespace="mfjobtest")


def _new_job(store: JobStore) -> str:
    frames = [encoded_image("PNG", (20 + i, 16), noise=True) for i in range(3)]
    spec = JobSpec(frames=frames, frame_names=[f"f{i}.png" for i in range(3)], prompts=PROMPTS)
    job, _ = store.create(spec, queue_ttl=60, inputs_ttl=120, result_ttl=60)
    return job.id


def test_a_retried_job_keeps_the_frames_it_already_stored(store: JobStore, segmenter: Segmenter) -> None:
    job_id = _new_job(store)
    install_runtime(WorkerRuntime(segmenter, store, Provenance(worker="w1")))
    store.mark_running(job_id, Provenance(worker="lost"))  # the first attempt died after frame 0
    marker = StoredFrame(0, 1, 1, [b"first", b"attempt"])
    store.store_frame_result(job_id, marker)

    run_job(job_id)

    job = store.require_job(job_id)
    assert (job.state, job.attempts, job.provenance.worker) == (JobState.SUCCEEDED, 2, "w1")
    assert store.frame_results(job_id, [0]) == [marker]
    assert [r.index for r in store.frame_results(job_id, range(3))] == [0, 1, 2]


def test_cancel_is_honoured_between_frames(store: JobStore, segmenter: Segmenter) -> None:
    job_id = _new_job(store)

    class CancelsAfterFirstFrame:
        max_batch = segmenter.max_batch

        def stream(self, frames, prompts, params) -> Iterator:
            for result in segmenter.stream(frames, prompts, params):
                yield result
                store.cancel(job_id)  # as CancelJob does for a running job

    install_runtime(WorkerRuntime(CancelsAfterFirstFrame(), store, Provenance(worker="w1")))
    run_job(job_id)

    assert store.require_job(job_id).state is JobState.CANCELLED
    assert store.done_frames(job_id) == [0]


@pytest.fixture(scope="module")
def two_frame_chunks(tiny_model_dir: Path) -> Segmenter:
    return Segmenter.load(str(tiny_model_dir), "cpu", max_batch=4)  # two frames per chunk (two prompts)


def test_the_frames_of_a_model_chunk_are_stored_and_announced_together(
    store: JobStore, two_frame_chunks: Segmenter
) -> None:
    job_id = _new_job(store)
    events = store.redis.pubsub()
    events.subscribe(store.keys.events(job_id))
    install_runtime(WorkerRuntime(two_frame_chunks, store, Provenance(worker="w1")))

    run_job(job_id)

    assert store.require_job(job_id).state is JobState.SUCCEEDED
    assert [r.index for r in store.frame_results(job_id, range(3))] == [0, 1, 2]
    messages = iter(lambda: events.get_message(timeout=0.5), None)
    announced = [json.loads(m["data"]) for m in messages if m["type"] == "message"]
    assert announced == [{"state": "running"}, {"frames": [0, 1]}, {"frame": 2}, {"state": "succeeded"}]


def test_the_last_chunk_and_the_jobs_success_are_one_script_run(redis_url: str, two_frame_chunks: Segmenter) -> None:
    """A run writes its start, each chunk but the last, then the last chunk with the
    job's success (``JobStore.finish_run``): three calls for two chunks, not four."""
    store = JobStore(RecordingRedis.from_url(redis_url), namespace="mfjobtest")
    install_runtime(WorkerRuntime(two_frame_chunks, store, Provenance(worker="w1")))
    run_job(_new_job(store))  # the scripts loaded in Redis
    job_id = _new_job(store)
    store.redis.round_trips.clear()

    run_job(job_id)

    assert store.require_job(job_id).state is JobState.SUCCEEDED
    assert [r.index for r in store.frame_results(job_id, range(3))] == [0, 1, 2]
    assert sum(trip[0][0] == "EVALSHA" for trip in store.redis.round_trips) == 3


def test_a_run_taken_over_mid_chunk_stores_nothing_of_that_chunk(store: JobStore, two_frame_chunks: Segmenter) -> None:
    job_id = _new_job(store)

    class TakenOverAfterFirstFrame:
        max_batch = two_frame_chunks.max_batch

        def stream(self, frames, prompts, params) -> Iterator:
            for result in two_frame_chunks.stream(frames, prompts, params):
                yield result
                if result.index == 0:  # this worker was taken for dead: another run starts
                    store.mark_running(job_id, Provenance(worker="w2"))

    install_runtime(WorkerRuntime(TakenOverAfterFirstFrame(), store, Provenance(worker="w1")))
    run_job(job_id)

    job = store.require_job(job_id)
    assert (job.state, job.attempts, job.provenance.worker) == (JobState.RUNNING, 2, "w2")
    assert store.done_frames(job_id) == []


def test_a_finished_job_is_not_run_again(store: JobStore, segmenter: Segmenter) -> None:
    job_id = _new_job(store)
    store.cancel(job_id)
    install_runtime(WorkerRuntime(segmenter, store, Provenance(worker="w1")))
    run_job(job_id)
    assert store.require_job(job_id).state is JobState.CANCELLED
    assert store.done_frames(job_id) == []


def test_corrupt_png_pixel_data_is_a_value_error_not_a_crash() -> None:
    """torchvision's decode_png segfaults on such data; decode_frame must refuse it first."""
    from maskfarm.worker.frames import decode_frame
    from tests.images import png_header_only

    with pytest.raises(ValueError, match="cannot decode"):
        decode_frame(png_header_only(64, 48))


def test_the_hosts_memory_error_fails_the_job_at_once_without_a_retry(store: JobStore, segmenter: Segmenter) -> None:
    job_id = _new_job(store)

    class HostOutOfMemory:
        max_batch = segmenter.max_batch

        def stream(self, frames, prompts, params) -> Iterator:
            next(iter(frames))
            raise MemoryError("cannot allocate 19.2 GiB")
            yield

    install_runtime(WorkerRuntime(HostOutOfMemory(), store, Provenance(worker="w1")))
    run_job(job_id)  # returns: raising would spend a retry, and the next worker would run out too

    job = store.require_job(job_id)
    assert (job.state, job.error_code.value) == (JobState.FAILED, "out_of_memory")
    assert job.error_message == "the worker's host ran out of memory (not retried): cannot allocate 19.2 GiB"


def test_a_job_of_path_frames_reads_them_from_storage_not_from_the_store(
    store: JobStore, segmenter: Segmenter, tmp_path: Path
) -> None:
    """Path frames keep nothing in the store's inputs but markers: the worker reads the
    files and does not ask Redis for them (it runs with the inputs hash gone)."""
    from maskfarm.core.storage import StorageRoots
    from maskfarm.worker.shared_storage import SharedStorage

    paths = []
    for i in range(3):
        path = tmp_path / f"plate.{i}.png"
        path.write_bytes(encoded_image("PNG", (20 + i, 16), noise=True))
        paths.append(str(path))
    spec = JobSpec(
        frames=[b""] * 3, frame_names=[f"plate.{i}.png" for i in range(3)], prompts=PROMPTS, frame_paths=paths
    )
    job, _ = store.create(spec, queue_ttl=60, inputs_ttl=120, result_ttl=60)
    store.redis.delete(store.keys.inputs(job.id))
    storage = SharedStorage(StorageRoots((str(tmp_path),)))
    install_runtime(WorkerRuntime(segmenter, store, Provenance(worker="w1"), storage=storage))

    run_job(job.id)

    assert store.require_job(job.id).state is JobState.SUCCEEDED
    assert [(r.index, r.width) for r in store.frame_results(job.id, range(3))] == [(0, 20), (1, 21), (2, 22)]


@contextlib.contextmanager
def _worker_with_a_job(redis_url: str, segmenter: Segmenter) -> Iterator[tuple[MaskfarmWorker, str]]:
    """An in-process maskfarm worker (not started) wired as ``build_worker`` wires it, on
    a namespace of its own whose queue holds one submitted job; every round trip of the
    worker and its job recorded (``RecordingRedis``)."""
    client = RecordingRedis.from_url(redis_url)
    store = JobStore(client, namespace=f"mfstart-{uuid.uuid4().hex[:8]}")
    jobs = JobQueue(client, store, LIMITS)
    frames = [encoded_image("PNG", (20 + i, 16), noise=True) for i in range(2)]
    job_id = jobs.submit(JobSpec(frames=frames, frame_names=["a.png", "b.png"], prompts=PROMPTS)).id
    starts, co_jobs = RunStarts(), CoJobs()
    worker = MaskfarmWorker(
        list(jobs.queues.values()),
        name=f"{store.keys.namespace}-w",
        connection=client,
        serializer=JSONSerializer,
        queue_class=MaskfarmQueue,
        store=store,
        provenance=Provenance(worker="w1"),
        heartbeat_s=1.0,
        job_lease_s=30,
        co_jobs=co_jobs,
        starts=starts,
    )
    install_runtime(WorkerRuntime(segmenter, store, Provenance(worker="w1"), co_jobs=co_jobs, starts=starts))
    try:
        yield worker, job_id
    finally:
        for queue in jobs.queues.values():
            queue.empty()
        client.delete(worker.key)
        client.close()


def test_a_job_is_started_in_rqs_own_start_transaction(redis_url: str, segmenter: Segmenter) -> None:
    """The worker's start of a job in RQ's registries and the start of its run in the job
    store go to Redis as one transaction; the job function runs the job so started
    (one attempt, not a second start)."""
    with _worker_with_a_job(redis_url, segmenter) as (worker, job_id):
        store = worker.store
        store.redis.round_trips.clear()
        assert worker.work(burst=True, logging_level="WARNING", with_scheduler=False)

        job = store.require_job(job_id)
        assert (job.state, job.attempts, job.provenance.worker) == (JobState.SUCCEEDED, 1, "w1")
        starts = [
            trip for trip in store.redis.round_trips if any(args[:2] == ("EVALSHA", store._change.sha) for args in trip)
        ]
        start = [trip for trip in starts if "start" in trip[-4]]
        assert len(start) == 1, starts
        assert ("PERSIST", f"rq:job:{job_id}") in [tuple(map(str, args)) for args in start[0]], start[0]
        assert worker.starts.take(job_id) == (False, None), "taken by the job function"


def test_a_job_whose_start_script_redis_lost_still_starts_once(segmenter: Segmenter) -> None:
    """A Redis that lost its scripts (restarted, failed over) answers the start in RQ's
    transaction with NOSCRIPT: RQ's own start holds, and the job function starts the
    run itself (loading the script), once. (A private Redis: the scripts are flushed.)"""
    with redis_server() as url, _worker_with_a_job(url, segmenter) as (worker, job_id):
        store = worker.store
        store.redis.script_flush()
        assert worker.work(burst=True, logging_level="WARNING", with_scheduler=False)

        job = store.require_job(job_id)
        assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)
        assert worker.queues[1].finished_job_registry.get_job_ids() == [job_id]
