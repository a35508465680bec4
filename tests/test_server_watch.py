"""WatchJob and GetJob's masks, with the worker's side written through JobStore (the real
contract a worker uses), against the real server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
import redis

from maskfarm.core.jobs import ErrorCode, Provenance, StoredFrame
from maskfarm.jobqueue.store import JobStore
from maskfarm.server.watch import REPLAY_CHUNK
from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image
from tests.services import ServerProcess

PROVENANCE = Provenance(
    model="tiny", revision="abc123", dtype="float32", device="cpu", maskfarm_version="0.1.0", worker="w1"
)


@pytest.fixture
def store(server: ServerProcess) -> Iterator[JobStore]:
    """The worker's view of the server's Redis."""
    client = redis.Redis.from_url(server.redis_url)
    yield JobStore(client, server.namespace)
    client.close()


def submit(server: ServerProcess, frames: int = 3) -> pb.Job:
    request = pb.SubmitJobRequest(
        frames=[pb.Frame(data=encoded_image(), name=f"f.{1001 + i}.png") for i in range(frames)],
        prompts=["car", "sky"],
        params=pb.MaskParams(union_mask=True),
    )
    return server.stub().SubmitJob(request, timeout=10)


def masks_of(index: int) -> StoredFrame:
    return StoredFrame(
        index=index, width=32, height=24, masks=[b"car%d" % index, b"sky%d" % index], union=b"union%d" % index
    )


def describe(event: pb.WatchJobEvent) -> str:
    if event.HasField("frame"):
        return f"frame {event.frame.frame_index}"
    return f"{pb.JobState.Name(event.job.state)} {event.job.progress.done_frames}"


def test_watch_replays_stored_frames_then_follows_until_the_end(server: ServerProcess, store: JobStore) -> None:
    job = submit(server)
    store.mark_running(job.id, PROVENANCE)
    store.store_frame_result(job.id, masks_of(0))
    store.store_frame_result(job.id, masks_of(1))

    stream = server.stub().WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=20)
    seen = [describe(next(stream)) for _ in range(4)]
    assert seen == ["JOB_STATE_RUNNING 2", "frame 0", "frame 1", "JOB_STATE_RUNNING 2"]

    store.store_frame_result(job.id, masks_of(2))
    frame = next(stream)
    assert describe(frame) == "frame 2"
    assert [(m.prompt_index, m.prompt, m.is_union, m.data) for m in frame.frame.masks] == [
        (0, "car", False, b"car2"),
        (1, "sky", False, b"sky2"),
        (-1, "", True, b"union2"),
    ]
    assert frame.frame.frame_name == "f.1003.png"
    assert (frame.frame.masks[0].width, frame.frame.masks[0].height) == (32, 24)
    assert describe(next(stream)) == "JOB_STATE_RUNNING 3"

    store.mark_succeeded(job.id)
    last = next(stream)
    assert describe(last) == "JOB_STATE_SUCCEEDED 3"
    assert last.job.provenance.model == "tiny" and last.job.provenance.revision == "abc123"
    assert last.job.HasField("start_time") and last.job.HasField("finish_time")
    assert list(stream) == []


def test_a_watch_reads_the_whole_job_once_then_only_what_changes(
    server: ServerProcess, store: JobStore, redis_url: str
) -> None:
    """Each wake-up (a state change, frames stored) reads the job again without its frame
    names, which grow with the job: the record is read whole (HGETALL) once per watch,
    and the watcher still sees every change and count."""
    store = JobStore(redis.Redis.from_url(redis_url, client_name="watch-test"), store.keys.namespace)
    job = submit(server, frames=3)
    key = store.keys.job(job.id)
    running = store.mark_running(job.id, PROVENANCE)
    with store.redis.monitor() as monitor:
        stream = server.stub().WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=20)
        assert describe(next(stream)) == "JOB_STATE_RUNNING 0"
        store.store_frame_results(job.id, [masks_of(0), StoredFrame.failed(1, "broken")], running.attempts)
        assert [describe(next(stream)) for _ in range(3)] == ["frame 0", "frame 1", "JOB_STATE_RUNNING 2"]
        store.cancel(job.id)  # running: the flag, announced as a state change
        cancelling = next(stream)
        assert describe(cancelling) == "JOB_STATE_RUNNING 2" and cancelling.job.cancel_requested
        store.store_frame_result(job.id, masks_of(2))
        assert [describe(next(stream)) for _ in range(2)] == ["frame 2", "JOB_STATE_RUNNING 3"]
        store.mark_failed(job.id, ErrorCode.INTERNAL, "a bug")
        last = next(stream)
        assert list(stream) == []
        store.redis.exists(f"{key}:end")
        ours = {c["addr"] for c in store.redis.client_list() if c["name"] == "watch-test"}
        reads = []  # the record's, by the server's watch (not the store's scripts nor this test's calls)
        while (seen := monitor.next_command())["command"] != f"EXISTS {key}:end":
            command = seen["command"].split()
            client = f"{seen['client_address']}:{seen['client_port']}"
            ours_or_lua = client in ours or seen["client_type"] == "lua"
            if command[1:2] == [key] and command[0] in ("HGETALL", "HMGET") and not ours_or_lua:
                reads.append(command[0])

    assert describe(last) == "JOB_STATE_FAILED 3"
    assert last.job.progress.failed_frames == 1 and last.job.cancel_requested
    assert last.job.error.message == "a bug" and last.job.provenance.worker == "w1"
    assert last.job.HasField("start_time") and last.job.HasField("finish_time")
    assert list(last.job.frame_names) == ["f.1001.png", "f.1002.png", "f.1003.png"]
    assert reads.count("HGETALL") == 1  # catching up; then HMGET of the fields that change
    assert reads.count("HMGET") >= 4  # a wake-up each: 2 chunks of frames, 2 state changes


def test_a_resumed_watch_sends_nothing_twice(server: ServerProcess, store: JobStore) -> None:
    job = submit(server, frames=4)
    store.mark_running(job.id, PROVENANCE)
    for index in (0, 1, 2):
        store.store_frame_result(job.id, masks_of(index))

    first = server.stub().WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=20)
    received = [describe(next(first)) for _ in range(3)]
    assert received == ["JOB_STATE_RUNNING 3", "frame 0", "frame 1"]
    first.cancel()

    resumed = server.stub().WatchJob(pb.WatchJobRequest(job_id=job.id, from_frame=2), timeout=20)
    assert [describe(next(resumed)) for _ in range(3)] == ["JOB_STATE_RUNNING 3", "frame 2", "JOB_STATE_RUNNING 3"]
    store.store_frame_result(job.id, masks_of(3))
    store.store_frame_result(job.id, masks_of(2))  # a retried attempt storing a frame again
    store.mark_succeeded(job.id)
    rest = [describe(event) for event in resumed]
    assert rest[0] == "frame 3" and rest[-1] == "JOB_STATE_SUCCEEDED 4"
    assert [event for event in rest if event.startswith("frame")] == ["frame 3"]


def test_watching_a_finished_job_replays_it_and_ends(server: ServerProcess, store: JobStore) -> None:
    job = submit(server, frames=2)
    store.mark_running(job.id, PROVENANCE)
    store.store_frame_result(job.id, masks_of(1))
    store.store_frame_result(job.id, masks_of(0))
    store.mark_succeeded(job.id)

    events = [describe(e) for e in server.stub().WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=20)]
    assert events == ["JOB_STATE_SUCCEEDED 2", "frame 0", "frame 1", "JOB_STATE_SUCCEEDED 2"]
    later = [describe(e) for e in server.stub().WatchJob(pb.WatchJobRequest(job_id=job.id, from_frame=2), timeout=20)]
    assert later == ["JOB_STATE_SUCCEEDED 2"]


def test_watching_a_cancelled_queued_job_ends_at_once(server: ServerProcess) -> None:
    job = submit(server)
    server.stub().CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=5)
    events = list(server.stub().WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=20))
    assert [describe(e) for e in events] == ["JOB_STATE_CANCELLED 0"]


def test_a_running_job_cancelled_stops_and_keeps_its_masks(server: ServerProcess, store: JobStore) -> None:
    job = submit(server)
    store.mark_running(job.id, PROVENANCE)
    store.store_frame_result(job.id, masks_of(0))
    cancelling = server.stub().CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=5)
    assert cancelling.state == pb.JOB_STATE_RUNNING and cancelling.cancel_requested
    assert store.cancel_requested(job.id)
    store.mark_cancelled(job.id)

    reply = server.stub().GetJob(pb.GetJobRequest(job_id=job.id, include_masks=True), timeout=5)
    assert reply.job.state == pb.JOB_STATE_CANCELLED
    assert [frame.frame_index for frame in reply.frames] == [0]


def test_get_job_pages_masks_by_frame(server: ServerProcess, store: JobStore) -> None:
    job = submit(server, frames=5)
    store.mark_running(job.id, PROVENANCE)
    for index in (0, 1, 2, 4):
        store.store_frame_result(job.id, masks_of(index))

    stub = server.stub()
    plain = stub.GetJob(pb.GetJobRequest(job_id=job.id), timeout=5)
    assert list(plain.frames) == [] and plain.job.progress.done_frames == 4
    page = stub.GetJob(pb.GetJobRequest(job_id=job.id, include_masks=True, first_frame=0, max_frames=2), timeout=5)
    assert [f.frame_index for f in page.frames] == [0, 1] and page.next_frame == 2
    page = stub.GetJob(pb.GetJobRequest(job_id=job.id, include_masks=True, first_frame=2, max_frames=2), timeout=5)
    assert [f.frame_index for f in page.frames] == [2] and page.next_frame == 4
    page = stub.GetJob(pb.GetJobRequest(job_id=job.id, include_masks=True, first_frame=4), timeout=5)
    assert [f.frame_index for f in page.frames] == [4] and page.next_frame == 5
    assert page.frames[0].masks[1].data == b"sky4"


def test_a_watch_without_a_job_id_is_refused(server: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        next(server.stub().WatchJob(pb.WatchJobRequest(), timeout=5))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "job_id: required" in refused.value.details()


def test_frames_stored_while_a_watch_starts_arrive_exactly_once(server: ServerProcess, store: JobStore) -> None:
    job = submit(server, frames=40)
    store.mark_running(job.id, PROVENANCE)

    def work() -> None:
        for index in range(40):
            store.store_frame_result(job.id, masks_of(index))
        store.mark_succeeded(job.id)

    worker = threading.Thread(target=work)
    worker.start()
    events = list(server.stub().WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=30))
    worker.join()
    frames = [event.frame.frame_index for event in events if event.HasField("frame")]
    assert sorted(frames) == list(range(40))
    assert describe(events[-1]) == "JOB_STATE_SUCCEEDED 40"


def test_a_long_replay_comes_in_order_and_complete(server: ServerProcess, store: JobStore) -> None:
    """More stored frames than the server reads at a time (REPLAY_CHUNK), some before from_frame."""
    count = 2 * REPLAY_CHUNK + 8
    job = submit(server, frames=count)
    running = store.mark_running(job.id, PROVENANCE)
    store.store_frame_results(job.id, [masks_of(index) for index in reversed(range(count))], running.attempts)

    stream = server.stub().WatchJob(pb.WatchJobRequest(job_id=job.id, from_frame=3), timeout=20)
    events = [describe(next(stream)) for _ in range(count - 1)]
    running_now = f"JOB_STATE_RUNNING {count}"
    assert events == [running_now] + [f"frame {index}" for index in range(3, count)] + [running_now]
    store.mark_succeeded(job.id)
    assert [describe(event) for event in stream] == [f"JOB_STATE_SUCCEEDED {count}"]


def test_frames_stored_together_arrive_each_once_in_the_order_announced(server: ServerProcess, store: JobStore) -> None:
    """A worker's chunk: one store call, one event listing the frames (more than the server
    reads at a time, REPLAY_CHUNK)."""
    count = REPLAY_CHUNK + 20
    job = submit(server, frames=count)
    running = store.mark_running(job.id, PROVENANCE)
    stream = server.stub().WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=20)
    assert describe(next(stream)) == "JOB_STATE_RUNNING 0"

    order = [7, 3, count - 1, 0, *range(8, count - 1), 1, 2, 4, 5, 6]
    store.store_frame_results(job.id, [masks_of(index) for index in order], running.attempts)
    events = [describe(next(stream)) for _ in range(count + 1)]
    assert events == [f"frame {index}" for index in order] + [f"JOB_STATE_RUNNING {count}"]
    store.mark_succeeded(job.id)
    assert [describe(event) for event in stream] == [f"JOB_STATE_SUCCEEDED {count}"]
