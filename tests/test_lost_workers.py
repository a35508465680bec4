"""Nothing lost when a worker dies: SIGKILL mid-job, through real processes.

A private Redis, ``maskfarm server`` and two ``maskfarm worker`` processes on the tiny
model, with short lease and maintenance intervals (recovery bound 3 + 2 x 1 = 5 s) so
the tests are quick; the defaults give the same behaviour within 60 s.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from maskfarm.jobqueue.store import JobStore
from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image
from tests.services import ServerProcess, WorkerProcess, maskfarm_server, maskfarm_worker, wait_for

FAST_RECOVERY = ("--heartbeat-s", "0.5", "--job-lease-s", "3", "--maintenance-s", "1", "--max-batch", "1")
RECOVERY_BOUND_S = 3 + 2 * 1
SLOW_MACHINE_BOUND_S = 6 * RECOVERY_BOUND_S
"""What the recovery bound is checked against: the lease and maintenance timers, with room
for a machine busy enough to slow every process down; a broken lease takes minutes."""
TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
PATIENCE_S = 600.0
"""How long a job of FRAMES frames may take to finish: its speed is the machine's, not tested."""
FRAMES = 300


def get_job(server: ServerProcess, job_id: str, masks: bool = False) -> pb.GetJobResponse:
    return server.stub().GetJob(pb.GetJobRequest(job_id=job_id, include_masks=masks), timeout=10)


def submit_long_job(server: ServerProcess) -> str:
    frame = encoded_image("PNG", (32, 24), noise=True)
    frames = [pb.Frame(name=f"f.{i:04d}.png", data=frame) for i in range(FRAMES)]
    return server.stub().SubmitJob(pb.SubmitJobRequest(frames=frames, prompts=["car"]), timeout=10).id


@contextlib.contextmanager
def two_workers(server: ServerProcess, model: Path) -> Iterator[dict[str, WorkerProcess]]:
    """Two fast-recovery workers, both listed (idle, waiting) before this yields. Their
    names start with the namespace: RQ's worker names are global to the Redis."""
    with (
        maskfarm_worker(server, model, f"{server.namespace}-a", *FAST_RECOVERY) as a,
        maskfarm_worker(server, model, f"{server.namespace}-b", *FAST_RECOVERY) as b,
    ):
        names = {a.name, b.name}

        def listed():
            return {w.name for w in server.stub().ListWorkers(pb.ListWorkersRequest(), timeout=10).workers}

        wait_for(lambda: names <= listed(), "both workers to be listed")
        yield {a.name: a, b.name: b}


def kill_the_runner(server: ServerProcess, job_id: str, workers: dict[str, WorkerProcess]) -> tuple[str, float]:
    """SIGKILLs the worker running ``job_id`` once it stored a few frames; returns its
    name and the kill's monotonic time."""
    reply = wait_for(lambda: (r := get_job(server, job_id)).job.progress.done_frames >= 3 and r, "the first frames")
    runner = workers[reply.job.provenance.worker]
    runner.process.kill()
    runner.process.wait()
    killed_at = time.monotonic()
    assert get_job(server, job_id).job.progress.done_frames < FRAMES, "the job ended before its worker was killed"
    return runner.name, killed_at


def attempts(server: ServerProcess, job_id: str) -> int:
    with redis.Redis.from_url(server.redis_url) as client:
        return JobStore(client, server.namespace).require_job(job_id).attempts


def all_frames(server: ServerProcess, job_id: str) -> list[int]:
    """Every stored frame's index, page by page."""
    indices: list[int] = []
    first = 0
    while first < FRAMES:
        reply = server.stub().GetJob(pb.GetJobRequest(job_id=job_id, include_masks=True, first_frame=first), timeout=10)
        indices += [frame.frame_index for frame in reply.frames]
        first = reply.next_frame
    return indices


def test_a_killed_workers_job_runs_again_elsewhere_and_every_frame_is_stored_once(redis_url, tiny_model_dir):
    with maskfarm_server(redis_url, "mflost") as server, two_workers(server, tiny_model_dir) as workers:
        job_id = submit_long_job(server)
        killed, killed_at = kill_the_runner(server, job_id, workers)
        (survivor,) = set(workers) - {killed}
        wait_for(lambda: get_job(server, job_id).job.provenance.worker == survivor, "the job to run again")
        recovered_s = time.monotonic() - killed_at
        wait_for(lambda: get_job(server, job_id).job.state in TERMINAL, "the job to end", timeout=PATIENCE_S)
        print(
            f"\nrecovery after SIGKILL: running again on {survivor} {recovered_s:.1f} s later "
            f"(bound {RECOVERY_BOUND_S} s + one poll)"
        )

        job = get_job(server, job_id).job
        assert job.state == pb.JOB_STATE_SUCCEEDED, job.error.message
        assert job.progress.done_frames == job.progress.total_frames == FRAMES
        assert all_frames(server, job_id) == list(range(FRAMES))
        assert attempts(server, job_id) == 2, "the job ran more often than once per worker"
        assert recovered_s < SLOW_MACHINE_BOUND_S
        assert workers[survivor].process.poll() is None


def test_a_job_whose_worker_dies_with_no_retries_left_fails_as_worker_lost(redis_url, tiny_model_dir):
    with (
        maskfarm_server(redis_url, "mflost0", "--retries", "0") as server,
        two_workers(server, tiny_model_dir) as workers,
    ):
        job_id = submit_long_job(server)
        _, killed_at = kill_the_runner(server, job_id, workers)
        wait_for(lambda: get_job(server, job_id).job.state in TERMINAL, "the job to end", timeout=PATIENCE_S)
        failed_s = time.monotonic() - killed_at
        print(f"\nfailed as worker lost {failed_s:.1f} s after SIGKILL")

        job = get_job(server, job_id).job
        assert job.state == pb.JOB_STATE_FAILED
        assert job.error.code == pb.ERROR_CODE_WORKER_LOST
        assert "worker stopped" in job.error.message
        assert 3 <= job.progress.done_frames < FRAMES, "the masks made before the kill are kept"
        assert failed_s < SLOW_MACHINE_BOUND_S


def test_a_job_taken_by_a_worker_killed_before_it_started_runs_all_the_same(redis_url, tiny_model_dir):
    """RQ pops a job off a worker's several queues with BLPOP; a SIGKILL before the
    worker's next write leaves it in no list. Simulated: the id is taken off the queue
    with no worker running; a worker started afterwards finds it by its sweep."""
    with maskfarm_server(redis_url, "mforphan") as server:
        frame = encoded_image("PNG", (32, 24), noise=True)
        job_id = (
            server.stub()
            .SubmitJob(pb.SubmitJobRequest(frames=[pb.Frame(name="f.png", data=frame)], prompts=["car"]), timeout=10)
            .id
        )
        with redis.Redis.from_url(redis_url) as connection:
            assert connection.lrem(f"rq:queue:{server.namespace}-normal", 1, job_id) == 1
        with maskfarm_worker(server, tiny_model_dir, f"{server.namespace}-a", *FAST_RECOVERY):
            reply = wait_for(
                lambda: (r := get_job(server, job_id)).job.state in TERMINAL and r,
                "the orphan to run",
                timeout=PATIENCE_S,
            )
        assert reply.job.state == pb.JOB_STATE_SUCCEEDED and reply.job.progress.done_frames == 1


def test_the_default_settings_rerun_a_lost_job_within_a_minute():
    from maskfarm.worker.settings import WorkerSettings

    assert WorkerSettings().recovery_bound_s <= 60
    with pytest.raises(ValueError, match="heartbeat"):
        WorkerSettings(heartbeat_s=30, job_lease_s=30)
