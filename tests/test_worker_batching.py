"""Cross-job batching: small jobs waiting together run as one batch, each still its own job.

The end-to-end part queues small jobs (mixed prompts, parameters and formats, a job with a
frame only the worker finds broken, a cancelled one) through a real ``maskfarm server``
before a burst-mode ``maskfarm worker`` starts, so the worker finds them all waiting and
batches them. Every job must end as it would alone, with masks within one 8-bit level of
the in-process pipeline on >= 99.99% of pixels, and RQ's registries must tell the truth.
The gathering itself is tested against a real Redis, without a worker.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image
from rq.queue import Queue
from rq.registry import FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from maskfarm.core.jobs import JobSpec, JobState, Priority, Provenance
from maskfarm.core.params import MaskParams
from maskfarm.jobqueue.rq_adapter import queue_name
from maskfarm.jobqueue.store import JobStore
from maskfarm.server.queue import JobQueue, QueueLimits
from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image, png_header_only
from tests.services import ServerProcess, maskfarm_server, maskfarm_worker, wait_for

BATCH_FRAMES = 6
TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
BROKEN = png_header_only(64, 48)
BATCH_LINE = re.compile(r"batch of (\d+) jobs: (\w+) with ([\w, ]+)")


@dataclass(frozen=True)
class Request:
    """One small job of the batch test, and what the in-process pipeline is asked."""

    name: str
    frames: list[bytes]
    prompts: list[str]
    params: pb.MaskParams
    local: MaskParams
    format: int = pb.OUTPUT_FORMAT_PNG8


def _frame(seed: int) -> bytes:
    """A noise image of its own size and pixels, PNG or (every third) JPEG."""
    size = (24 + 4 * (seed % 5), 20 + 3 * (seed % 4))
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG" if seed % 3 == 0 else "PNG")
    return buffer.getvalue()


REQUESTS = [
    Request("plain", [_frame(0)], ["a red car"], pb.MaskParams(), MaskParams()),
    Request("union", [_frame(1)], ["a red car", "the sky"], pb.MaskParams(union_mask=True), MaskParams(union=True)),
    Request(
        "soft", [_frame(2)], ["the sky"], pb.MaskParams(soft=True), MaskParams(soft=True), pb.OUTPUT_FORMAT_FLOAT32
    ),
    Request("blurred", [_frame(3)], ["a tree"], pb.MaskParams(blur=6, dilate=2), MaskParams(blur=6, dilate=2)),
    Request(
        "inverted",
        [_frame(4)],
        ["a red car", "a tree"],
        pb.MaskParams(invert=True, union_mask=True),
        MaskParams(invert=True, union=True),
    ),
    Request("two-frames", [_frame(5), _frame(6)], ["a red car"], pb.MaskParams(), MaskParams()),
    Request(
        "threshold",
        [_frame(7)],
        ["the sky", "a red car"],
        pb.MaskParams(threshold=0.55, smooth=3),
        MaskParams(threshold=0.55, smooth=3),
    ),
    Request("soft-png", [_frame(8)], ["a tree"], pb.MaskParams(soft=True), MaskParams(soft=True)),
    Request(
        "shrunk", [_frame(9)], ["a red car"], pb.MaskParams(dilate=-2), MaskParams(dilate=-2), pb.OUTPUT_FORMAT_FLOAT32
    ),
    Request("again", [_frame(10)], ["a red car"], pb.MaskParams(), MaskParams()),
    Request("sky", [_frame(11)], ["the sky"], pb.MaskParams(smooth=0), MaskParams(smooth=0)),
    Request("last", [_frame(12)], ["a tree", "the sky"], pb.MaskParams(union_mask=True), MaskParams(union=True)),
]
"""Good jobs, queued in this order with two more after the first two: ``broken`` (a frame
that does not decode) and ``cancelled-in-store`` (cancelled after the server queued it, as
a cancel that races the worker's gathering leaves it)."""


@dataclass
class Run:
    ids: dict[str, str]
    jobs: dict[str, pb.GetJobResponse]
    log: str
    exit_code: int
    started: list[str]
    finished: set[str]


def _get(server: ServerProcess, job_id: str) -> pb.GetJobResponse:
    return server.stub().GetJob(pb.GetJobRequest(job_id=job_id, include_masks=True), timeout=10)


def _submit(server: ServerProcess, request: Request) -> str:
    frames = [pb.Frame(name=f"{request.name}.{i}.png", data=data) for i, data in enumerate(request.frames)]
    reply = server.stub().SubmitJob(
        pb.SubmitJobRequest(frames=frames, prompts=request.prompts, params=request.params, format=request.format),
        timeout=10,
    )
    return reply.id


def _run_burst_worker(server: ServerProcess, model: Path, name: str, ids: dict[str, str], *flags: str) -> Run:
    with maskfarm_worker(server, model, name, "--burst", *flags) as worker:
        worker.process.wait(timeout=120)
        log = worker.output()
    client = redis.Redis.from_url(server.redis_url)
    queue = Queue(queue_name(Priority.NORMAL, server.namespace), connection=client, serializer=JSONSerializer)
    return Run(
        ids=ids,
        jobs={label: _get(server, job_id) for label, job_id in ids.items()},
        log=log,
        exit_code=worker.process.returncode,
        started=StartedJobRegistry(queue=queue).get_job_ids(),
        finished=set(FinishedJobRegistry(queue=queue).get_job_ids()),
    )


@pytest.fixture(scope="module")
def batch_server(redis_url: str) -> Iterator[ServerProcess]:
    with maskfarm_server(redis_url, f"mfbatch{uuid.uuid4().hex[:6]}") as server:
        yield server


@pytest.fixture(scope="module")
def batched(batch_server: ServerProcess, tiny_model_dir: Path) -> Run:
    ids = {request.name: _submit(batch_server, request) for request in REQUESTS[:2]}
    ids["broken"] = _submit(
        batch_server, Request("broken", [_frame(13), BROKEN], ["a red car"], pb.MaskParams(), MaskParams())
    )
    ids["cancelled-in-store"] = _submit(batch_server, REQUESTS[0])
    store = JobStore(redis.Redis.from_url(batch_server.redis_url), batch_server.namespace)
    store.cancel(ids["cancelled-in-store"])
    ids["cancelled"] = _submit(batch_server, REQUESTS[0])
    batch_server.stub().CancelJob(pb.CancelJobRequest(job_id=ids["cancelled"]), timeout=10)
    ids.update({request.name: _submit(batch_server, request) for request in REQUESTS[2:]})
    return _run_burst_worker(
        batch_server,
        tiny_model_dir,
        f"{batch_server.namespace}-on",
        ids,
        "--batch-frames",
        str(BATCH_FRAMES),
        "--batch-wait-ms",
        "20",
    )


@pytest.fixture(scope="module")
def expected(tiny_model_dir: Path) -> dict[str, list[np.ndarray]]:
    """Each good request's masks from the in-process pipeline, one request at a time."""
    from maskfarm.worker.frames import decode_frame
    from maskfarm.worker.pipeline import Segmenter

    segmenter = Segmenter.load(str(tiny_model_dir), "cpu")
    return {
        request.name: [
            r.masks
            for r in segmenter.segment([decode_frame(f) for f in request.frames], request.prompts, request.local)
        ]
        for request in REQUESTS
    }


def _as_8bit(data: bytes, fmt: int, shape: tuple[int, int]) -> np.ndarray:
    if fmt == pb.OUTPUT_FORMAT_FLOAT32:
        return np.round(np.frombuffer(data, "<f4").reshape(shape) * 255).astype(np.int16)
    return np.asarray(Image.open(io.BytesIO(data))).astype(np.int16)


def _batches(log: str) -> list[list[str]]:
    return [[lead, *others.split(", ")] for _, lead, others in BATCH_LINE.findall(log)]


def test_waiting_small_jobs_run_in_batches_within_the_frame_budget(batched: Run) -> None:
    batches = _batches(batched.log)
    assert batches and max(len(batch) for batch in batches) > 2, batched.log
    frames = {request.name: len(request.frames) for request in REQUESTS} | {"broken": 2}
    by_id = {job_id: label for label, job_id in batched.ids.items()}
    for batch in batches:
        assert sum(frames.get(by_id[job_id], 1) for job_id in batch) <= BATCH_FRAMES
    assert batched.ids["cancelled"] not in batched.log  # the server took it off the queue


def test_every_batched_job_gets_its_own_masks_within_one_level(batched: Run, expected) -> None:
    close = total = 0
    for request in REQUESTS:
        reply = batched.jobs[request.name]
        assert reply.job.state == pb.JOB_STATE_SUCCEEDED, (request.name, reply.job.error.message)
        count = len(request.frames)
        assert reply.job.progress.done_frames == reply.job.progress.total_frames == count
        assert [f.frame_index for f in reply.frames] == list(range(count))
        for frame, masks in zip(reply.frames, expected[request.name]):
            assert len(frame.masks) == len(masks), request.name
            for mask, want in zip(frame.masks, masks):
                assert (mask.height, mask.width) == want.shape
                got = _as_8bit(mask.data, request.format, want.shape)
                close += int(np.sum(np.abs(got - np.round(want * 255)) <= 1))
                total += want.size
    assert close / total >= 0.9999, f"{total - close} of {total} pixels differ by more than one level"


def test_co_jobs_succeed_with_their_last_frames_in_the_batch(batched: Run) -> None:
    """A co-job whose frames were all stored in the batch ends there (its last store and
    its success in one call), so its own run that follows has nothing to do."""
    good = {batched.ids[request.name] for request in REQUESTS}
    co_jobs = {job_id for batch in _batches(batched.log) for job_id in batch[1:]} & good
    assert co_jobs, batched.log
    for job_id in co_jobs:
        assert f"job {job_id} succeeded (in a batch)" in batched.log
        assert f"job {job_id} finishing its run from a batch" not in batched.log


def test_a_broken_frame_fails_only_its_own_job(batched: Run) -> None:
    job = batched.jobs["broken"].job
    assert job.state == pb.JOB_STATE_FAILED
    assert job.error.code == pb.ERROR_CODE_INVALID_INPUT
    assert "frames[1] (broken.1.png)" in job.error.message
    assert any(batched.ids["broken"] in batch for batch in _batches(batched.log)), batched.log


def test_cancelled_jobs_end_cancelled_and_are_not_dropped(batched: Run) -> None:
    for name in ("cancelled", "cancelled-in-store"):
        reply = batched.jobs[name]
        assert reply.job.state == pb.JOB_STATE_CANCELLED, name
        assert not reply.frames
    # Cancelled after it was queued, it was still taken off the queue and ended by RQ.
    assert batched.ids["cancelled-in-store"] in batched.finished


def test_rq_registries_stay_true(batched: Run) -> None:
    assert batched.exit_code == 0, batched.log
    assert batched.started == []
    ran = {job_id for name, job_id in batched.ids.items() if name != "cancelled"}
    assert ran <= batched.finished


def test_attempts_are_counted_once_per_run(batched: Run, batch_server: ServerProcess) -> None:
    store = JobStore(redis.Redis.from_url(batch_server.redis_url), batch_server.namespace)
    for request in REQUESTS:
        assert store.require_job(batched.ids[request.name]).attempts == 1, request.name


def test_without_batching_every_job_runs_alone_as_before(
    batch_server: ServerProcess, tiny_model_dir: Path, expected
) -> None:
    from maskfarm.worker.encoding import encode_file

    chosen = [REQUESTS[0], REQUESTS[1], REQUESTS[2]]
    ids = {request.name: _submit(batch_server, request) for request in chosen}
    run = _run_burst_worker(batch_server, tiny_model_dir, f"{batch_server.namespace}-off", ids, "--batch-frames", "1")
    assert run.exit_code == 0, run.log
    assert not _batches(run.log) and "no batching" in run.log
    for request in chosen:
        reply = run.jobs[request.name]
        assert reply.job.state == pb.JOB_STATE_SUCCEEDED
        encode = (
            (lambda m: np.asarray(m, "<f4").tobytes())
            if request.format == pb.OUTPUT_FORMAT_FLOAT32
            else (lambda m: encode_file(m, "png"))
        )
        for frame, masks in zip(reply.frames, expected[request.name]):
            assert [m.data for m in frame.masks] == [encode(m) for m in masks], request.name
    assert set(ids.values()) <= run.finished and run.started == []


def test_a_killed_workers_batch_runs_again_elsewhere(redis_url: str, tiny_model_dir: Path) -> None:
    """SIGKILL mid-batch: the lead and its co-job were both RQ-started on the dead worker's
    lease, so a live worker's maintenance re-queues both and they finish there."""
    fast = (
        "--heartbeat-s",
        "0.5",
        "--job-lease-s",
        "3",
        "--maintenance-s",
        "1",
        "--max-batch",
        "1",
        "--batch-frames",
        "400",
    )
    frame = _frame(1)
    with maskfarm_server(redis_url, f"mfbatchlost{uuid.uuid4().hex[:6]}") as server:

        def submit():
            return (
                server.stub()
                .SubmitJob(
                    pb.SubmitJobRequest(  # noqa: E731
                        frames=[pb.Frame(name=f"f.{i}.png", data=frame) for i in range(100)], prompts=["car"]
                    ),
                    timeout=10,
                )
                .id
            )

        lead, co_job = submit(), submit()
        with maskfarm_worker(server, tiny_model_dir, f"{server.namespace}-a", *fast) as doomed:
            wait_for(lambda: _get(server, lead).job.progress.done_frames >= 3, "the batch to start", timeout=60)
            assert _get(server, co_job).job.state == pb.JOB_STATE_RUNNING, doomed.output()
            doomed.process.kill()
            doomed.process.wait()
        with maskfarm_worker(server, tiny_model_dir, f"{server.namespace}-b", *fast):
            for job_id in (lead, co_job):
                wait_for(lambda: _get(server, job_id).job.state in TERMINAL, "the jobs to end", timeout=120)
        store = JobStore(redis.Redis.from_url(server.redis_url), server.namespace)
        for job_id in (lead, co_job):
            job = _get(server, job_id).job
            assert job.state == pb.JOB_STATE_SUCCEEDED, job.error.message
            assert job.progress.done_frames == 100
            assert job.provenance.worker == f"{server.namespace}-b"
            assert store.require_job(job_id).attempts == 2


# -- the gathering, against a real Redis ------------------------------------------------

LIMITS = QueueLimits(
    queue_ttl=60,
    inputs_ttl=120,
    result_ttl=300,
    job_timeout=60,
    retries=1,
    max_backlog_jobs=1000,
    max_backlog_bytes=1 << 30,
)
PROVENANCE = Provenance(model="tiny", dtype="float32", device="cpu", worker="w1")


@pytest.fixture
def jobs(redis_url: str) -> Iterator[JobQueue]:
    client = redis.Redis.from_url(redis_url)
    yield JobQueue(client, JobStore(client, namespace=f"gather-{uuid.uuid4().hex[:8]}"), LIMITS)
    client.close()


def _queue(jobs: JobQueue, frames: int = 1, priority: Priority = Priority.NORMAL) -> str:
    spec = JobSpec(
        frames=[encoded_image() for _ in range(frames)],
        frame_names=[f"f{i}.png" for i in range(frames)],
        prompts=["car"],
        priority=priority,
    )
    return jobs.submit(spec).id


def _gatherer(jobs: JobQueue, frames: int, wait_s: float = 0.0):
    from maskfarm.worker.batching import Gatherer

    return Gatherer(jobs.store, list(jobs.queues.values()), frames, wait_s)


def _waiting(jobs: JobQueue, priority: Priority = Priority.NORMAL) -> list[str]:
    return jobs.queues[priority].get_job_ids()


def test_nothing_is_gathered_from_empty_queues_and_nothing_waited_for(jobs: JobQueue) -> None:
    import time

    gatherer = _gatherer(jobs, 8, wait_s=60.0)
    start = time.monotonic()
    assert gatherer.gather(1) == []
    assert time.monotonic() - start < 30.0, "it waited for jobs although none were queued"


def test_gathering_takes_at_most_the_frame_budget_in_queue_order(jobs: JobQueue) -> None:
    ids = [_queue(jobs) for _ in range(5)]
    claimed = _gatherer(jobs, 4).gather(1)
    assert [c.job_id for c in claimed] == ids[:3]
    assert _waiting(jobs) == ids[3:]
    intermediate = jobs.queues[Priority.NORMAL].intermediate_queue_key
    assert [raw.decode() for raw in jobs.redis.lrange(intermediate, 0, -1)] == ids[:3]


def test_gathering_never_takes_a_big_job_nor_skips_past_one(jobs: JobQueue) -> None:
    small = _queue(jobs)
    big = _queue(jobs, frames=4)
    after = _queue(jobs)
    claimed = _gatherer(jobs, 4).gather(1)
    assert [c.job_id for c in claimed] == [small]
    assert _waiting(jobs) == [big, after]


def test_a_big_lead_gathers_nothing_and_batching_off_gathers_nothing(jobs: JobQueue) -> None:
    waiting = [_queue(jobs) for _ in range(2)]
    assert _gatherer(jobs, 4).gather(4) == []
    assert _gatherer(jobs, 1).gather(0) == []
    assert _gatherer(jobs, 0).gather(0) == []
    assert _waiting(jobs) == waiting


def test_gathering_follows_priority_order(jobs: JobQueue) -> None:
    low = _queue(jobs, priority=Priority.LOW)
    normal = _queue(jobs)
    high = _queue(jobs, priority=Priority.HIGH)
    claimed = _gatherer(jobs, 3).gather(1)
    assert [c.job_id for c in claimed] == [high, normal]
    assert _waiting(jobs, Priority.LOW) == [low]


def test_a_job_that_will_not_run_is_still_claimed_for_its_own_run(jobs: JobQueue) -> None:
    cancelled = _queue(jobs, frames=3)
    jobs.store.cancel(cancelled)  # the record only: its RQ job is still queued
    claimed = _gatherer(jobs, 3).gather(1)
    assert [(c.job_id, c.frames) for c in claimed] == [(cancelled, 1)]


def test_a_co_jobs_run_continues_without_counting_a_new_attempt(jobs: JobQueue) -> None:
    job_id = _queue(jobs)
    started = jobs.store.mark_running(job_id, PROVENANCE)
    assert started.attempts == 1
    assert jobs.store.mark_running(job_id, PROVENANCE, continuing=1).attempts == 1
    assert jobs.store.mark_running(job_id, PROVENANCE).attempts == 2  # a lost worker's retry
    assert jobs.store.mark_running(job_id, PROVENANCE, continuing=1) is None  # superseded
    assert jobs.store.require_job(job_id).state is JobState.RUNNING


def test_one_stream_carries_frames_with_their_own_prompts_and_params(tiny_model_dir: Path) -> None:
    from maskfarm.worker.frames import decode_frame
    from maskfarm.worker.pipeline import FrameRequest, Segmenter

    segmenter = Segmenter.load(str(tiny_model_dir), "cpu", max_batch=5)
    frames = {request.name: [decode_frame(f) for f in request.frames] for request in REQUESTS}
    alone = {
        request.name: segmenter.segment(frames[request.name], request.prompts, request.local) for request in REQUESTS
    }
    requests = [
        FrameRequest(frame, request.prompts, request.local, (request.name, i))
        for request in REQUESTS
        for i, frame in enumerate(frames[request.name])
    ]
    together = list(segmenter.stream_requests(requests))
    assert [r.index for r in together] == list(range(len(requests)))
    for result in together:
        name, i = result.tag
        want = alone[name][i].masks
        assert result.masks.shape == want.shape
        assert np.mean(np.abs(result.masks - want) <= 1 / 255) >= 0.9999


def test_a_lead_known_to_be_big_costs_no_round_trip_to_gather(redis_url: str) -> None:
    """The server puts the job's frame count on its RQ job: a worker handed a job with a
    batch's frames or more asks Redis nothing about batching (small jobs waiting or not)."""
    from maskfarm.jobqueue.rq_adapter import Job, JSONSerializer
    from maskfarm.worker.runner import MaskfarmWorker
    from tests.recording_redis import RecordingRedis

    client = RecordingRedis.from_url(redis_url)
    jobs = JobQueue(client, JobStore(client, namespace=f"gather-{uuid.uuid4().hex[:8]}"), LIMITS)
    big, small = _queue(jobs, frames=4), _queue(jobs)
    worker = MaskfarmWorker(
        list(jobs.queues.values()),
        connection=client,
        serializer=JSONSerializer,
        store=jobs.store,
        provenance=PROVENANCE,
        heartbeat_s=1.0,
        job_lease_s=30,
        gatherer=_gatherer(jobs, 4),
    )
    lead = Job.fetch(big, connection=client, serializer=JSONSerializer)
    assert lead.meta == {"frames": 4}
    before = len(client.round_trips)
    assert worker._gather(lead) == []
    assert client.round_trips[before:] == []
    assert _waiting(jobs) == [big, small]
    client.close()
