"""Callers that attack the server rather than its input, against real server processes with
bearer tokens for two callers: WatchJob streams opened and never read, another caller's
job ids through ListWorkers, and inputs long enough to overflow an error message.

Nothing here depends on the machine's speed: every wait is for a condition, with
generous timeouts, and memory is bounded with a wide margin.
"""

from __future__ import annotations

import asyncio
import os
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
import redis.asyncio

from maskfarm.core.jobs import JobRecord, Provenance, StoredFrame
from maskfarm.jobqueue.store import JobStore
from maskfarm.server.events import JobEvents
from maskfarm.server.watch import follow_job
from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1 import segmentation_pb2_grpc as pb_grpc
from tests.images import encoded_image
from tests.services import ServerProcess, maskfarm_server, maskfarm_worker, wait_for

PNG = encoded_image("PNG")
MALLORY = "mallory-token-" + uuid.uuid4().hex
ALICE = "alice-token-" + uuid.uuid4().hex
WATCH_CAP = 8
CONNECTION_CAP = 4
MASK_BYTES = 2 * 1024 * 1024
UNREAD_WATCHES = 300
CONNECTIONS = 6
RSS_BOUND_MIB = 400
"""Growth of the server's memory allowed with UNREAD_WATCHES unread streams of 2 MiB
frames open: WATCH_CAP streams held cost a few MiB each; without the cap the 300 would
cost well over a GiB."""
RETURNED_BOUND_MIB = 30
"""Growth of the server's memory allowed once the streams have ended (~6 MiB measured; 46
MiB stay with glibc's mmap threshold left to rise, see ``maskfarm.server.memory``)."""


def connection(server: ServerProcess) -> grpc.Channel:
    """A channel with a connection of its own (channels to one target share one unless
    told not to) that keeps HTTP/2's initial 64 KiB windows (no BDP probing), so what an
    unread stream cannot send stays in the server: the worst case for it."""
    return grpc.insecure_channel(
        server.target, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0)]
    )


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tokens = tmp_path_factory.mktemp("tokens") / "tokens"
    tokens.write_text(f"{MALLORY} mallory\n{ALICE} alice\n")
    storage = tmp_path_factory.mktemp("storage")
    with maskfarm_server(
        redis_url,
        f"mfhostile{uuid.uuid4().hex[:8]}",
        "--auth-tokens",
        str(tokens),
        "--max-watches-per-owner",
        str(WATCH_CAP),
        "--max-watches-per-connection",
        str(CONNECTION_CAP),
        "--storage-root",
        str(storage),
    ) as process:
        yield process


@pytest.fixture(scope="module")
def store(server: ServerProcess) -> JobStore:
    return JobStore(redis.Redis.from_url(server.redis_url), server.namespace)


def running_job(server: ServerProcess, store: JobStore, token: str, frames: int, mask_bytes: int) -> str:
    """A job of ``token``'s, running (no worker: its masks stored here, as a worker
    stores them), with every frame stored and the job left running, so its watches stay open."""
    with server.channel() as channel:
        request = pb.SubmitJobRequest(frames=[pb.Frame(data=PNG)] * frames, prompts=["car"])
        job_id = pb_grpc.SegmentationStub(channel).SubmitJob(request, metadata=bearer(token), timeout=30).id
    store.mark_running(
        job_id, Provenance(model="none", dtype="float32", device="cpu", maskfarm_version="", worker="tests")
    )
    for index in range(frames):
        store.store_frame_result(job_id, StoredFrame(index=index, width=8, height=8, masks=[os.urandom(mask_bytes)]))
    return job_id


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def first_event(stub: pb_grpc.SegmentationStub, job_id: str, token: str) -> pb.WatchJobEvent:
    stream = stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=bearer(token), timeout=60)
    try:
        return next(stream)
    finally:
        stream.cancel()


# -- unread WatchJob streams -----------------------------------------------------------


def test_unread_watches_are_capped_per_caller_bounded_in_memory_and_others_are_served(
    server: ServerProcess, store: JobStore
) -> None:
    mallory_job = running_job(server, store, MALLORY, frames=4, mask_bytes=MASK_BYTES)
    alice_job = running_job(server, store, ALICE, frames=1, mask_bytes=4000)
    before = rss_mib(server.process.pid)
    channels = [connection(server) for _ in range(CONNECTIONS)]
    try:
        stubs = [pb_grpc.SegmentationStub(channel) for channel in channels]
        request = pb.WatchJobRequest(job_id=mallory_job)
        calls = [
            stubs[n % CONNECTIONS].WatchJob(request, metadata=bearer(MALLORY), timeout=600)
            for n in range(UNREAD_WATCHES)
        ]
        wait_for(
            lambda: sum(call.done() for call in calls) >= UNREAD_WATCHES - WATCH_CAP,
            "every watch beyond the cap to be refused",
            timeout=300,
        )
        refused = [call for call in calls if call.done()]
        assert all(call.code() is grpc.StatusCode.RESOURCE_EXHAUSTED for call in refused), {
            (call.code(), call.details()) for call in refused
        }
        assert all("MASKFARM_MAX_WATCHES_PER_" in call.details() for call in refused)
        assert any("MASKFARM_MAX_WATCHES_PER_OWNER" in call.details() for call in refused), {
            call.details() for call in refused
        }
        assert sum(not call.done() for call in calls) == WATCH_CAP

        # Another caller is served at once, watches included (the cap is per caller).
        with server.channel() as channel:
            alice = pb_grpc.SegmentationStub(channel)
            reply = alice.GetJob(pb.GetJobRequest(job_id=alice_job), metadata=bearer(ALICE), timeout=30)
            assert reply.job.id == alice_job
            assert first_event(alice, alice_job, ALICE).job.id == alice_job
        grown = rss_mib(server.process.pid) - before
        assert grown < RSS_BOUND_MIB, f"the server grew by {grown:.0f} MiB"

        # Once the streams end, their slots are free and their memory goes back to the system.
        for call in calls:
            call.cancel()
        wait_for(
            lambda: rss_mib(server.process.pid) - before < RETURNED_BOUND_MIB,
            "the server to give the streams' memory back",
            timeout=120,
        )
        with server.channel() as channel:
            mallory = pb_grpc.SegmentationStub(channel)
            wait_for(lambda: _watch_opens(mallory, mallory_job), "mallory's watches to be released", timeout=60)
    finally:
        for channel in channels:
            channel.close()


def test_watches_on_one_connection_are_capped(server: ServerProcess, store: JobStore) -> None:
    job_id = running_job(server, store, ALICE, frames=1, mask_bytes=4000)
    with connection(server) as one, connection(server) as another:
        stub = pb_grpc.SegmentationStub(one)
        held = [
            stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=bearer(ALICE), timeout=600)
            for _ in range(CONNECTION_CAP)
        ]
        assert all(next(call).job.id == job_id for call in held)  # open, and no longer read
        with pytest.raises(grpc.RpcError) as refused:
            first_event(stub, job_id, ALICE)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "MASKFARM_MAX_WATCHES_PER_CONNECTION" in refused.value.details()
        assert first_event(pb_grpc.SegmentationStub(another), job_id, ALICE).job.id == job_id
        for call in held:
            call.cancel()


def _watch_opens(stub: pb_grpc.SegmentationStub, job_id: str) -> bool:
    try:
        return first_event(stub, job_id, MALLORY).job.id == job_id
    except grpc.RpcError as error:
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error
        return False


def test_a_follower_holds_about_one_large_frame_whatever_it_has_to_send(server: ServerProcess, store: JobStore) -> None:
    """What an unread stream costs beyond its message: the frames its follower read ahead
    (before: 16 at a time, whatever their size)."""
    job_id = running_job(server, store, MALLORY, frames=8, mask_bytes=MASK_BYTES)

    async def held_with_the_first_frame() -> int:
        events = JobEvents(redis.asyncio.Redis.from_url(server.redis_url), server.namespace)
        events.start()
        updates = follow_job(store, events, job_id)
        try:
            assert isinstance(await anext(updates), JobRecord)
            tracemalloc.start()
            try:
                frame = await anext(updates)
                assert len(frame.masks[0]) == MASK_BYTES
                return tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
        finally:
            await updates.aclose()
            await events.close()

    held = asyncio.run(held_with_the_first_frame())
    assert held < 3 * MASK_BYTES, f"{held / MASK_BYTES:.1f} frames held"


# -- ListWorkers ------------------------------------------------------------------------


def test_list_workers_shows_a_running_job_only_to_its_owner(server: ServerProcess, tiny_model_dir: Path) -> None:
    with server.channel() as channel:
        stub = pb_grpc.SegmentationStub(channel)
        request = pb.SubmitJobRequest(frames=[pb.Frame(data=PNG)] * 200, prompts=["car"])
        job_id = stub.SubmitJob(request, metadata=bearer(ALICE), timeout=30).id

        def current_jobs(token: str) -> list[str]:
            reply = stub.ListWorkers(pb.ListWorkersRequest(), metadata=bearer(token), timeout=30)
            return [worker.current_job_id for worker in reply.workers]

        def seen_by_alice_around_mallory() -> bool:
            """alice sees her job running both before and after mallory lists the workers."""
            first = job_id in current_jobs(ALICE)
            mallorys = current_jobs(MALLORY)
            assert job_id not in mallorys, "mallory saw alice's running job id"
            return first and job_id in current_jobs(ALICE) and any(not job for job in mallorys)

        with maskfarm_worker(server, tiny_model_dir, f"hostile-{uuid.uuid4().hex[:6]}"):
            wait_for(seen_by_alice_around_mallory, "alice's job running between two of mallory's listings", timeout=120)
            stub.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=bearer(ALICE), timeout=30)


# -- long input in error messages -------------------------------------------------------


LONG = "x" * 16384


@pytest.mark.parametrize(
    "call", ["GetJob", "WatchJob", "CancelJob", "label key", "label filter", "frame path", "output_dir"]
)
def test_a_16_kb_input_is_invalid_argument_with_a_short_message(server: ServerProcess, call: str) -> None:
    requests = {
        "GetJob": lambda stub: stub.GetJob(pb.GetJobRequest(job_id=LONG), metadata=bearer(ALICE), timeout=30),
        "WatchJob": lambda stub: next(
            stub.WatchJob(pb.WatchJobRequest(job_id=LONG), metadata=bearer(ALICE), timeout=30)
        ),
        "CancelJob": lambda stub: stub.CancelJob(pb.CancelJobRequest(job_id=LONG), metadata=bearer(ALICE), timeout=30),
        "label key": lambda stub: stub.SubmitJob(
            pb.SubmitJobRequest(frames=[pb.Frame(data=PNG)], prompts=["car"], labels={LONG: "v"}),
            metadata=bearer(ALICE),
            timeout=30,
        ),
        "label filter": lambda stub: stub.ListJobs(
            pb.ListJobsRequest(labels={LONG: "v"}), metadata=bearer(ALICE), timeout=30
        ),
        "frame path": lambda stub: stub.SubmitJob(
            pb.SubmitJobRequest(frames=[pb.Frame(path="/" + LONG)], prompts=["car"]), metadata=bearer(ALICE), timeout=30
        ),
        "output_dir": lambda stub: stub.SubmitJob(
            pb.SubmitJobRequest(
                frames=[pb.Frame(data=PNG, name="a.png")], prompts=["car"], output_dir="relative/" + LONG
            ),
            metadata=bearer(ALICE),
            timeout=30,
        ),
    }
    with server.channel() as channel:
        with pytest.raises(grpc.RpcError) as raised:
            requests[call](pb_grpc.SegmentationStub(channel))
    error = raised.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
    assert len(error.details()) < 600, error.details()
