"""The service's promises, end to end: priorities, cancelling a running job, watching.

Real pieces only: a private Redis, ``maskfarm server`` in a namespace of this module's
own (so no other test's jobs are in its queues) and ``maskfarm worker`` processes on the
tiny synthetic model.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image
from tests.services import ServerProcess, maskfarm_server

TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
DEADLINE_S = 300.0


@pytest.fixture(scope="module")
def service(redis_url: str) -> Iterator[ServerProcess]:
    with maskfarm_server(redis_url, "mfservice") as server:
        yield server


@contextlib.contextmanager
def worker(service: ServerProcess, model: Path, *flags: str) -> Iterator[subprocess.Popen]:
    command = [
        sys.executable,
        "-m",
        "maskfarm.cli",
        "worker",
        "--redis-url",
        service.redis_url,
        "--namespace",
        service.namespace,
        "--model",
        str(model),
        "--device",
        "cpu",
        *flags,
    ]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)


def submit(service: ServerProcess, frames: int, **fields) -> str:
    data = [pb.Frame(name=f"f.{i:04d}.png", data=encoded_image("PNG", (32, 24), noise=True)) for i in range(frames)]
    return service.stub().SubmitJob(pb.SubmitJobRequest(frames=data, prompts=["car"], **fields), timeout=10).id


def job(service: ServerProcess, job_id: str, masks: bool = False) -> pb.GetJobResponse:
    return service.stub().GetJob(pb.GetJobRequest(job_id=job_id, include_masks=masks), timeout=10)


def wait_terminal(service: ServerProcess, *job_ids: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not all(job(service, i).job.state in TERMINAL for i in job_ids):
        assert time.monotonic() < deadline, "jobs did not finish in time"
        time.sleep(0.1)


def test_higher_priority_jobs_run_first(service, tiny_model_dir):
    low = submit(service, 1, priority=pb.PRIORITY_LOW)
    normal = submit(service, 1)
    high = submit(service, 1, priority=pb.PRIORITY_HIGH)
    with worker(service, tiny_model_dir, "--burst") as process:
        assert process.wait(timeout=DEADLINE_S) == 0
    started = {
        name: job(service, i).job.start_time.ToNanoseconds()
        for name, i in (("low", low), ("normal", normal), ("high", high))
    }
    assert started["high"] < started["normal"] < started["low"]


def test_cancelling_a_running_job_stops_it_and_keeps_its_finished_masks(service, tiny_model_dir):
    total = 400
    job_id = submit(service, total)
    with worker(service, tiny_model_dir, "--max-batch", "1"):
        for event in service.stub().WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=DEADLINE_S):
            if event.WhichOneof("event") == "frame":
                service.stub().CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=10)
                break
        wait_terminal(service, job_id)
    reply = job(service, job_id, masks=True)
    assert reply.job.state == pb.JOB_STATE_CANCELLED
    done = reply.job.progress.done_frames
    assert 1 <= done < total
    assert [frame.frame_index for frame in reply.frames] == list(range(done))


def test_watch_streams_every_frame_once_and_a_late_watcher_replays(service, tiny_model_dir):
    frames = 6
    job_id = submit(service, frames)
    with worker(service, tiny_model_dir):
        live = list(service.stub().WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=DEADLINE_S))
    seen = [event.frame.frame_index for event in live if event.WhichOneof("event") == "frame"]
    assert seen == list(range(frames))
    assert live[-1].WhichOneof("event") == "job" and live[-1].job.state == pb.JOB_STATE_SUCCEEDED

    late = list(service.stub().WatchJob(pb.WatchJobRequest(job_id=job_id, from_frame=4), timeout=10))
    assert [e.frame.frame_index for e in late if e.WhichOneof("event") == "frame"] == [4, 5]
    assert late[-1].job.state == pb.JOB_STATE_SUCCEEDED


def test_list_workers_shows_a_live_worker_with_its_model(service, tiny_model_dir):
    with worker(service, tiny_model_dir, "--name", "listed-worker"):
        deadline = time.monotonic() + DEADLINE_S
        while not (
            workers := [
                w
                for w in service.stub().ListWorkers(pb.ListWorkersRequest(), timeout=10).workers
                if w.name == "listed-worker"
            ]
        ):
            assert time.monotonic() < deadline, "the worker never showed up"
            time.sleep(0.2)
    (listed,) = workers
    assert (listed.device, listed.model) == ("cpu", str(tiny_model_dir))
    assert listed.dtype and listed.maskfarm_version
    assert list(listed.queues) == [pb.PRIORITY_HIGH, pb.PRIORITY_NORMAL, pb.PRIORITY_LOW]


def test_a_job_submitted_to_one_server_is_watched_whole_through_another(service, tiny_model_dir):
    frames = 5
    with maskfarm_server(service.redis_url, service.namespace) as other:
        job_id = submit(service, frames)
        stream = other.stub().WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=DEADLINE_S)
        assert next(stream).job.state == pb.JOB_STATE_QUEUED  # followed on the other server before it runs
        with worker(service, tiny_model_dir):
            rest = list(stream)
    seen = [event.frame.frame_index for event in rest if event.WhichOneof("event") == "frame"]
    assert seen == list(range(frames))
    assert rest[-1].job.state == pb.JOB_STATE_SUCCEEDED
    assert all(event.frame.masks[0].data for event in rest if event.WhichOneof("event") == "frame")
