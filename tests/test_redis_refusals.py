"""Redis refusing writes (its ``maxmemory`` reached, with ``noeviction``), through real
processes: a private redis-server, a ``maskfarm server`` and a worker.

SubmitJob answers UNAVAILABLE with a plain message (no Redis key names), which clients
retry; reads go on (a read-only replica likewise). A running job whose masks no longer fit waits, running, its inputs
kept, and finishes once memory is freed. Every wait is for a condition (Redis's own
count of refused commands, the job's state), never for a time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from maskfarm.client.client import Client
from maskfarm.client.errors import Unavailable
from maskfarm.client.retries import Retries
from maskfarm.jobqueue.store import JobStore
from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image
from tests.services import ServerProcess, free_port, maskfarm_server, maskfarm_worker, redis_server, wait_for

FRAME = encoded_image("PNG", (256, 256))
FRAMES = 60
MASK_BYTES = 256 * 256 * 4
"""One FLOAT32 mask of a FRAME: the job's masks (~15 MiB) far outgrow the room left."""
ROOM_BYTES = 3 * 1024 * 1024
"""Memory Redis may still take once the job runs: a few frames' masks."""


@pytest.fixture(scope="module")
def store_redis() -> Iterator[redis.Redis]:
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        client.config_set("maxmemory-policy", "noeviction")
        yield client
        client.close()


@pytest.fixture(scope="module")
def server(store_redis: redis.Redis) -> Iterator[ServerProcess]:
    url = "redis://{host}:{port}/0".format(**store_redis.connection_pool.connection_kwargs)
    with maskfarm_server(url, f"mfoom{uuid.uuid4().hex[:8]}") as process:
        yield process


@pytest.fixture(params=["out of memory", "read-only"])
def refusing(request: pytest.FixtureRequest, store_redis: redis.Redis) -> Iterator[str]:
    """Redis refusing writes: at its maxmemory (every command that would grow it is
    refused), or a read-only replica (of a master that is not there); yields what the
    refusal's message says."""
    if request.param == "out of memory":
        store_redis.config_set("maxmemory", 1)
    else:
        store_redis.replicaof("127.0.0.1", free_port())
    try:
        yield request.param
    finally:
        store_redis.config_set("maxmemory", 0)
        store_redis.replicaof("NO", "ONE")


def refused_writes(store_redis: redis.Redis) -> int:
    """How many commands Redis has refused for want of memory."""
    return int(store_redis.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


def test_submit_is_unavailable_with_a_plain_message_and_reads_go_on(server: ServerProcess, refusing: str) -> None:
    stub = server.stub()
    with pytest.raises(grpc.RpcError) as refused:
        stub.SubmitJob(pb.SubmitJobRequest(frames=[pb.Frame(data=FRAME)], prompts=["car"]), timeout=30)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, refused.value
    assert refusing in refused.value.details() and server.namespace not in refused.value.details()
    with pytest.raises(grpc.RpcError) as unknown:
        stub.GetJob(pb.GetJobRequest(job_id="0" * 32), timeout=30)
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
    with Client(server.target, timeout=30, retries=Retries(attempts=2, initial_s=0.05)) as client:
        with pytest.raises(Unavailable, match=refusing):
            client.submit([("a.png", FRAME)], ["car"])


def test_a_running_job_waits_while_its_masks_do_not_fit_and_finishes_once_memory_is_freed(
    server: ServerProcess, store_redis: redis.Redis, tiny_model_dir: Path
) -> None:
    stub = server.stub()
    request = pb.SubmitJobRequest(
        frames=[pb.Frame(name=f"f.{i:03d}.png", data=FRAME) for i in range(FRAMES)],
        prompts=["car"],
        format=pb.OUTPUT_FORMAT_FLOAT32,
    )
    store_redis.config_set(
        "maxmemory", int(store_redis.info("memory")["used_memory"]) + FRAMES * len(FRAME) + ROOM_BYTES
    )
    try:
        job_id = stub.SubmitJob(request, timeout=30).id
        refused_before = refused_writes(store_redis)
        with maskfarm_worker(server, tiny_model_dir, f"oom-{uuid.uuid4().hex[:6]}", "--max-batch", "2") as worker:
            # Refused more than once: the worker tried again after its first refusal.
            wait_for(
                lambda: refused_writes(store_redis) >= refused_before + 2,
                "Redis to refuse the job's masks twice",
                timeout=300,
            )
            job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30).job
            assert job.state == pb.JOB_STATE_RUNNING, (job, worker.output()[-3000:])
            assert 0 < job.progress.done_frames < FRAMES
            assert store_redis.exists(f"{server.namespace}:job:{job_id}:inputs")
            store_redis.config_set("maxmemory", 0)
            wait_for(
                lambda: stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30).job.state != pb.JOB_STATE_RUNNING,
                "the job to end once memory is freed",
                timeout=600,
            )
            job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30).job
            assert job.state == pb.JOB_STATE_SUCCEEDED, (job, worker.output()[-3000:])
            assert job.progress.done_frames == FRAMES and job.progress.failed_frames == 0
            # by the run that met the refusal: it waited instead of failing and being run again
            assert JobStore(store_redis, server.namespace).require_job(job_id).attempts == 1
    finally:
        store_redis.config_set("maxmemory", 0)
