"""Nothing lost when Redis or the server restarts, through real processes.

Redis here keeps every write on disk before acknowledging it (AOF, ``appendfsync
always``) and is killed with SIGKILL, then started again on the same port. The server
must answer UNAVAILABLE (health NOT_SERVING) meanwhile and recover by itself; the worker
must survive and the interrupted job run again from its stored frames; a watcher whose
stream ended with UNAVAILABLE resumes with ``from_frame`` and misses nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2

from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1 import segmentation_pb2_grpc as pb_grpc
from tests.images import encoded_image
from tests.services import (
    PersistentRedis,
    ServerProcess,
    maskfarm_server,
    maskfarm_worker,
    persistent_redis_server,
    wait_for,
)

FAST_RECOVERY = ("--heartbeat-s", "0.5", "--job-lease-s", "3", "--maintenance-s", "1", "--max-batch", "1")
TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
LONG_JOB_FRAMES = 200
PATIENCE_S = 600.0
"""How long any wait for work to be done may take: generous, as it bounds a wait for a
condition and never a measure of speed (the suite passes beside CPU hogs)."""
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def redis_store() -> Iterator[PersistentRedis]:
    with persistent_redis_server() as server:
        yield server


def submit(server: ServerProcess, frames: int, **fields) -> str:
    data = encoded_image("PNG", (32, 24), noise=True)
    request = pb.SubmitJobRequest(
        frames=[pb.Frame(name=f"f.{i:04d}.png", data=data) for i in range(frames)], prompts=["car"], **fields
    )
    return server.stub().SubmitJob(request, timeout=60).id


def job_state(server: ServerProcess, job_id: str) -> pb.Job:
    return server.stub().GetJob(pb.GetJobRequest(job_id=job_id), timeout=60).job


def health_or_none(server: ServerProcess) -> int | None:
    try:
        return server.health()
    except grpc.RpcError:
        return None


@dataclass
class Watcher:
    """A WatchJob stream read in a thread: the frame indices seen, and how it ended."""

    server: ServerProcess
    job_id: str
    from_frame: int = 0
    frames: list[int] = field(default_factory=list)
    ended_with: grpc.StatusCode | None = None
    last_state: int = pb.JOB_STATE_UNSPECIFIED

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        request = pb.WatchJobRequest(job_id=self.job_id, from_frame=self.from_frame)
        try:
            for event in self.server.stub().WatchJob(request, timeout=PATIENCE_S):
                if event.WhichOneof("event") == "frame":
                    self.frames.append(event.frame.frame_index)
                else:
                    self.last_state = event.job.state
            self.ended_with = grpc.StatusCode.OK
        except grpc.RpcError as error:
            self.ended_with = error.code()

    def join(self) -> None:
        self.thread.join(timeout=PATIENCE_S)
        assert not self.thread.is_alive(), "the watch stream did not end"


def test_a_redis_crash_loses_nothing_and_everything_recovers_by_itself(redis_store, tiny_model_dir):
    with (
        maskfarm_server(redis_store.url, "mfrestart") as server,
        maskfarm_worker(server, tiny_model_dir, "mfrestart-a", *FAST_RECOVERY) as worker,
    ):
        finished = submit(server, 2)
        wait_for(
            lambda: job_state(server, finished).state == pb.JOB_STATE_SUCCEEDED, "the first job", timeout=PATIENCE_S
        )
        running = submit(server, LONG_JOB_FRAMES)
        queued = submit(server, 2, priority=pb.PRIORITY_LOW)
        watcher = Watcher(server, running)
        wait_for(lambda: len(watcher.frames) >= 3, "the first watched frames", timeout=PATIENCE_S)

        redis_store.kill()
        with pytest.raises(grpc.RpcError) as refused:
            job_state(server, finished)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        watcher.join()
        assert watcher.ended_with == grpc.StatusCode.UNAVAILABLE
        wait_for(lambda: health_or_none(server) == NOT_SERVING, "health NOT_SERVING", timeout=120)
        time.sleep(2)

        redis_store.start()
        restarted_at = time.monotonic()
        wait_for(lambda: health_or_none(server) == SERVING, "health SERVING again", timeout=120)
        print(f"\nSERVING again {time.monotonic() - restarted_at:.1f} s after Redis restarted")
        assert job_state(server, finished).state == pb.JOB_STATE_SUCCEEDED

        resumed = Watcher(server, running, from_frame=len(watcher.frames))
        resumed.join()
        print(f"long job ended {time.monotonic() - restarted_at:.1f} s after Redis restarted")
        assert resumed.ended_with == grpc.StatusCode.OK
        assert resumed.last_state == pb.JOB_STATE_SUCCEEDED
        assert watcher.frames + resumed.frames == list(range(LONG_JOB_FRAMES))
        wait_for(
            lambda: job_state(server, queued).state == pb.JOB_STATE_SUCCEEDED, "the queued job", timeout=PATIENCE_S
        )
        assert worker.process.poll() is None, worker.output()


def test_a_job_runs_on_through_a_server_restart_and_the_client_reconnects(redis_store, tiny_model_dir):
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(maskfarm_server(redis_store.url, "mfserverrestart"))
        stack.enter_context(maskfarm_worker(server, tiny_model_dir, "mfserverrestart-a", *FAST_RECOVERY))
        stub = pb_grpc.SegmentationStub(stack.enter_context(server.channel()))
        job_id = submit(server, LONG_JOB_FRAMES)
        wait_for(lambda: job_state(server, job_id).progress.done_frames >= 3, "the first frames", timeout=PATIENCE_S)

        server.process.terminate()
        server.process.wait(timeout=15)
        with maskfarm_server(redis_store.url, "mfserverrestart", target=server.target):
            request = pb.GetJobRequest(job_id=job_id)
            job = wait_for(
                lambda: (j := stub.GetJob(request, timeout=10, wait_for_ready=True).job).state in TERMINAL and j,
                "the job, through the client's channel from before the restart",
                timeout=PATIENCE_S,
            )
        assert job.state == pb.JOB_STATE_SUCCEEDED
        assert job.progress.done_frames == LONG_JOB_FRAMES


def test_a_worker_stops_cleanly_on_sigterm_while_redis_is_down(redis_store, tiny_model_dir):
    with (
        maskfarm_server(redis_store.url, "mfredisdown") as server,
        maskfarm_worker(server, tiny_model_dir, "mfredisdown-a", *FAST_RECOVERY) as worker,
    ):
        served = submit(server, 1)
        wait_for(
            lambda: job_state(server, served).state == pb.JOB_STATE_SUCCEEDED, "the worker to serve", timeout=PATIENCE_S
        )
        redis_store.kill()
        try:
            time.sleep(2)
            worker.process.send_signal(signal.SIGTERM)
            assert worker.process.wait(timeout=120) == 0, worker.output()
        finally:
            redis_store.start()
