"""Submitting, reading, cancelling and listing jobs through the real server and Redis."""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterator

import grpc
import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from maskfarm.core.jobs import WorkerRecord
from maskfarm.jobqueue.rq_adapter import JOB_FUNCTION
from maskfarm.jobqueue.store import JobStore
from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image
from tests.services import ServerProcess, maskfarm_server

PNG = encoded_image("PNG")


def submit_request(frames: int = 1, **fields) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(
        frames=[pb.Frame(data=PNG, name=f"sh010.{1001 + i}.png") for i in range(frames)],
        prompts=["car", "sky"],
        **fields,
    )


@pytest.fixture
def connection(server: ServerProcess) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.redis_url)
    yield client
    client.close()


def rq_job(connection: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)


def test_a_job_is_queued_in_rq_with_only_its_id(server: ServerProcess, connection: redis.Redis) -> None:
    job = server.stub().SubmitJob(submit_request(2, priority=pb.PRIORITY_HIGH, labels={"shot": "sh010"}), timeout=10)

    assert job.state == pb.JOB_STATE_QUEUED
    assert (job.progress.done_frames, job.progress.total_frames) == (0, 2)
    assert list(job.frame_names) == ["sh010.1001.png", "sh010.1002.png"]
    assert job.params.threshold == pytest.approx(0.4) and job.params.smooth == 9
    assert job.params.HasField("dilate") and job.params.HasField("blur")
    assert job.format == pb.OUTPUT_FORMAT_PNG8 and job.priority == pb.PRIORITY_HIGH
    assert job.create_time.seconds > 0 and not job.HasField("start_time")

    queued = rq_job(connection, job.id)
    assert queued.func_name == JOB_FUNCTION
    assert queued.args == [job.id] and queued.kwargs == {}
    assert queued.origin == "mftest-high"
    assert queued.retries_left == 2
    assert job.id in Queue("mftest-high", connection=connection).get_job_ids()
    stored = json.loads(zlib.decompress(connection.hget(f"rq:job:{job.id}", "data")))
    assert stored == [JOB_FUNCTION, None, [job.id], {}], "RQ's job data is JSON: no pickle"


def test_a_repeated_request_id_returns_the_same_job_and_queues_it_once(
    server: ServerProcess, connection: redis.Redis
) -> None:
    request_id = str(uuid.uuid4())
    first = server.stub().SubmitJob(submit_request(request_id=request_id), timeout=10)
    again = server.stub().SubmitJob(submit_request(request_id=request_id), timeout=10)
    assert again.id == first.id and again.request_id == request_id
    assert Queue("mftest-normal", connection=connection).get_job_ids().count(first.id) == 1


def test_get_job_reads_a_queued_job(server: ServerProcess) -> None:
    job = server.stub().SubmitJob(
        submit_request(3, params=pb.MaskParams(smooth=0, dilate=-4, union_mask=True), format=pb.OUTPUT_FORMAT_FLOAT32),
        timeout=10,
    )
    reply = server.stub().GetJob(pb.GetJobRequest(job_id=job.id, include_masks=True), timeout=5)
    assert reply.job == job
    assert list(reply.frames) == [] and reply.next_frame == 3
    assert (reply.job.params.smooth, reply.job.params.dilate, reply.job.params.union_mask) == (0, -4, True)


def test_unknown_jobs_are_not_found(server: ServerProcess) -> None:
    stub = server.stub()
    for call in (
        lambda: stub.GetJob(pb.GetJobRequest(job_id=uuid.uuid4().hex), timeout=5),
        lambda: stub.CancelJob(pb.CancelJobRequest(job_id=uuid.uuid4().hex), timeout=5),
        lambda: list(stub.WatchJob(pb.WatchJobRequest(job_id=uuid.uuid4().hex), timeout=5)),
        lambda: stub.GetJob(pb.GetJobRequest(job_id="mftest:jobs"), timeout=5),
    ):
        with pytest.raises(grpc.RpcError) as missing:
            call()
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_cancelled_queued_job_leaves_its_queue(server: ServerProcess, connection: redis.Redis) -> None:
    job = server.stub().SubmitJob(submit_request(priority=pb.PRIORITY_LOW), timeout=10)
    cancelled = server.stub().CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=5)
    assert cancelled.state == pb.JOB_STATE_CANCELLED and cancelled.HasField("finish_time")
    assert job.id not in Queue("mftest-low", connection=connection).get_job_ids()
    assert rq_job(connection, job.id).get_status() == "canceled"
    again = server.stub().CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=5)
    assert again.state == pb.JOB_STATE_CANCELLED


def test_jobs_are_listed_by_label_and_state_in_pages(server: ServerProcess) -> None:
    shot = f"shot-{uuid.uuid4().hex[:6]}"
    stub = server.stub()
    jobs = [stub.SubmitJob(submit_request(labels={"shot": shot, "n": str(i)}), timeout=10) for i in range(5)]
    stub.CancelJob(pb.CancelJobRequest(job_id=jobs[0].id), timeout=5)

    listed, token = [], ""
    while True:
        page = stub.ListJobs(pb.ListJobsRequest(labels={"shot": shot}, page_size=2, page_token=token), timeout=5)
        assert len(page.jobs) <= 2
        listed += [job.id for job in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert listed == [job.id for job in reversed(jobs)]

    queued = stub.ListJobs(pb.ListJobsRequest(labels={"shot": shot}, states=[pb.JOB_STATE_QUEUED]), timeout=5)
    assert [job.id for job in queued.jobs] == [job.id for job in reversed(jobs[1:])]
    one = stub.ListJobs(pb.ListJobsRequest(labels={"shot": shot, "n": "3"}), timeout=5)
    assert [job.id for job in one.jobs] == [jobs[3].id]
    cancelled = stub.ListJobs(
        pb.ListJobsRequest(labels={"shot": shot}, states=[pb.JOB_STATE_CANCELLED, pb.JOB_STATE_FAILED]), timeout=5
    )
    assert [job.id for job in cancelled.jobs] == [jobs[0].id]


def test_list_workers_is_empty_without_workers(server: ServerProcess) -> None:
    assert list(server.stub().ListWorkers(pb.ListWorkersRequest(), timeout=5).workers) == []


def test_every_key_in_the_namespace_expires(server: ServerProcess, connection: redis.Redis) -> None:
    stub = server.stub()
    stub.SubmitJob(submit_request(labels={"shot": "ttl"}, request_id=str(uuid.uuid4())), timeout=10)
    job = stub.SubmitJob(submit_request(), timeout=10)
    stub.CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=5)

    keys = connection.keys("mftest:*")
    assert len(keys) > 5
    assert [key for key in keys if connection.ttl(key) < 0] == []


def test_a_full_backlog_is_refused_until_it_drains(redis_url: str) -> None:
    with maskfarm_server(
        redis_url, "mfbacklog", "--max-backlog-jobs", "2", "--max-backlog-mib", "1", "--max-message-mib", "2"
    ) as backlog_server:
        stub = backlog_server.stub()
        noise = encoded_image("PNG", (450, 450), noise=True)
        assert 512 * 1024 < len(noise) < 1024 * 1024
        big = stub.SubmitJob(pb.SubmitJobRequest(frames=[pb.Frame(data=noise)], prompts=["car"]), timeout=10)
        with pytest.raises(grpc.RpcError) as too_heavy:
            stub.SubmitJob(pb.SubmitJobRequest(frames=[pb.Frame(data=noise)], prompts=["car"]), timeout=10)
        assert too_heavy.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "bytes of frames would be waiting" in too_heavy.value.details()
        assert ("retry-after-s", "30") in too_heavy.value.trailing_metadata()

        stub.SubmitJob(submit_request(request_id="second"), timeout=10)
        with pytest.raises(grpc.RpcError) as too_many:
            stub.SubmitJob(submit_request(), timeout=10)
        assert too_many.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 jobs are waiting (limit 2)" in too_many.value.details()
        assert stub.SubmitJob(submit_request(request_id="second"), timeout=10).state == pb.JOB_STATE_QUEUED

        stub.CancelJob(pb.CancelJobRequest(job_id=big.id), timeout=5)
        assert stub.SubmitJob(submit_request(), timeout=10).state == pb.JOB_STATE_QUEUED

        oversized = pb.SubmitJobRequest(frames=[pb.Frame(data=noise)] * 3, prompts=["car"])
        with pytest.raises(grpc.RpcError) as too_large:
            stub.SubmitJob(oversized, timeout=10)
        assert too_large.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_list_workers_shows_live_workers_with_their_device(server: ServerProcess, connection: redis.Redis) -> None:
    queues = [
        Queue(f"mftest-{priority}", connection=connection, serializer=JSONSerializer)
        for priority in ("high", "normal", "low")
    ]
    worker = SimpleWorker(queues, connection=connection, name="gpu0-test", serializer=JSONSerializer)
    worker.register_birth()
    info = WorkerRecord(
        name="gpu0-test",
        device="cuda:0 (NVIDIA H100)",
        model="CIDAS/clipseg-rd64-refined",
        revision="abc",
        dtype="bfloat16",
        maskfarm_version="0.1.0",
    )
    JobStore(connection, "mftest").register_worker(info, ttl=60)
    try:
        [listed] = server.stub().ListWorkers(pb.ListWorkersRequest(), timeout=5).workers
    finally:
        worker.register_death()
    assert (listed.name, listed.device, listed.model, listed.dtype) == (
        "gpu0-test",
        "cuda:0 (NVIDIA H100)",
        "CIDAS/clipseg-rd64-refined",
        "bfloat16",
    )
    assert list(listed.queues) == [pb.PRIORITY_HIGH, pb.PRIORITY_NORMAL, pb.PRIORITY_LOW]
    assert listed.pid > 0 and listed.hostname and listed.HasField("start_time")
