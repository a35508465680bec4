"""Scaling down: SIGTERM to a busy worker finishes its job, takes no other, and exits 0.

Real processes: a private Redis, ``maskfarm server`` and one ``maskfarm worker`` on the
tiny model, one frame per batch so the job lasts a few seconds.
"""

from __future__ import annotations

import signal

from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image
from tests.services import ServerProcess, maskfarm_server, maskfarm_worker, wait_for

FRAMES = 120
DEADLINE_S = 60.0


def get_job(server: ServerProcess, job_id: str) -> pb.GetJobResponse:
    return server.stub().GetJob(pb.GetJobRequest(job_id=job_id), timeout=10)


def submit(server: ServerProcess, frames: int) -> str:
    data = encoded_image("PNG", (32, 24), noise=True)
    request = pb.SubmitJobRequest(
        frames=[pb.Frame(name=f"f.{i:04d}.png", data=data) for i in range(frames)], prompts=["car"]
    )
    return server.stub().SubmitJob(request, timeout=10).id


def test_sigterm_lets_a_busy_worker_finish_its_job_then_exit(redis_url, tiny_model_dir):
    with (
        maskfarm_server(redis_url, "mfshutdown") as server,
        maskfarm_worker(server, tiny_model_dir, "mfshutdown-a", "--max-batch", "1") as worker,
    ):
        running = submit(server, FRAMES)
        waiting = submit(server, 1)
        wait_for(lambda: get_job(server, running).job.progress.done_frames >= 1, "the first frame")
        worker.process.send_signal(signal.SIGTERM)
        exit_code = worker.process.wait(timeout=DEADLINE_S)

        finished = get_job(server, running).job
        assert exit_code == 0, worker.output()
        assert finished.state == pb.JOB_STATE_SUCCEEDED, finished.error.message
        assert finished.progress.done_frames == FRAMES
        assert get_job(server, waiting).job.state == pb.JOB_STATE_QUEUED
