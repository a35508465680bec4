"""End to end through the real pieces: private Redis, ``maskfarm server``, ``maskfarm worker``.

The jobs are submitted through the generated gRPC stubs before the worker starts, so what
each job meets is deterministic: a cancelled job (cancelled while queued), a job with a
frame only the worker can find broken, then two good jobs (PNG8 with union, FLOAT32),
all in the normal queue, served in that order by one worker on the tiny synthetic model.
The good jobs' masks must equal, byte for byte, what the pipeline makes in-process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis

from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image, png_header_only
from tests.services import ServerProcess

PROMPTS = ["a red car", "the sky"]
FRAMES = [
    pb.Frame(name="shot.1001.png", data=encoded_image("PNG", (40, 30), noise=True)),
    pb.Frame(name="shot.1002.jpg", data=encoded_image("JPEG", (24, 36), noise=True)),
    pb.Frame(name="shot.1003.png", data=encoded_image("PNG", (33, 17))),
]
BROKEN = pb.Frame(name="broken.png", data=png_header_only(64, 48))
"""Passes the server's check (header and chunk checksums) but its pixels do not decode."""
TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
WORKER_NAME = "e2e-worker"
DEADLINE_S = 300.0


@dataclass
class Outcome:
    jobs: dict[str, pb.GetJobResponse]
    worker_exit: int
    worker_log: str
    registered_while_serving: bool
    registered_after_exit: bool


def _get(server: ServerProcess, job_id: str, masks: bool = False) -> pb.GetJobResponse:
    return server.stub().GetJob(pb.GetJobRequest(job_id=job_id, include_masks=masks), timeout=10)


@pytest.fixture(scope="module")
def outcome(server: ServerProcess, tiny_model_dir: Path) -> Outcome:
    stub = server.stub()

    def submit(frames, **kw):
        return stub.SubmitJob(pb.SubmitJobRequest(frames=frames, prompts=PROMPTS, **kw), timeout=10)

    ids = {"cancelled": submit(FRAMES).id}
    stub.CancelJob(pb.CancelJobRequest(job_id=ids["cancelled"]), timeout=10)
    ids["broken"] = submit([FRAMES[0], BROKEN, FRAMES[2]])
    ids["broken"] = ids["broken"].id
    ids["png8"] = submit(FRAMES, params=pb.MaskParams(union_mask=True)).id
    ids["float32"] = submit(FRAMES, format=pb.OUTPUT_FORMAT_FLOAT32, params=pb.MaskParams(soft=True)).id

    command = [
        sys.executable,
        "-m",
        "maskfarm.cli",
        "worker",
        "--redis-url",
        server.redis_url,
        "--namespace",
        server.namespace,
        "--name",
        WORKER_NAME,
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
    ]
    client = redis.Redis.from_url(server.redis_url)
    worker_key = f"{server.namespace}:worker:{WORKER_NAME}"
    with tempfile.TemporaryFile() as log:
        worker = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
        try:
            deadline = time.monotonic() + DEADLINE_S
            while not all(_get(server, i).job.state in TERMINAL for i in ids.values()):
                assert worker.poll() is None, "the worker died"
                assert time.monotonic() < deadline, "jobs did not finish in time"
                time.sleep(0.2)
            registered = bool(client.exists(worker_key))
            worker.send_signal(signal.SIGTERM)
            exit_code = worker.wait(timeout=20)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        log.seek(0)
        worker_log = log.read().decode(errors="replace")
    return Outcome(
        jobs={name: _get(server, job_id, masks=True) for name, job_id in ids.items()},
        worker_exit=exit_code,
        worker_log=worker_log,
        registered_while_serving=registered,
        registered_after_exit=bool(client.exists(worker_key)),
    )


@pytest.fixture(scope="module")
def expected(tiny_model_dir: Path):
    """The in-process pipeline's masks for FRAMES: (default params + union, soft)."""
    from maskfarm.core.params import MaskParams
    from maskfarm.worker.frames import decode_frame
    from maskfarm.worker.pipeline import Segmenter

    segmenter = Segmenter.load(str(tiny_model_dir), "cpu")
    frames = [decode_frame(frame.data) for frame in FRAMES]
    union = segmenter.segment(frames, PROMPTS, MaskParams(union=True))
    soft = segmenter.segment(frames, PROMPTS, MaskParams(soft=True))
    return [r.masks for r in union], [r.masks for r in soft]


def test_masks_equal_the_in_process_pipeline_byte_for_byte(outcome: Outcome, expected) -> None:
    from maskfarm.worker.encoding import encode_file

    union_masks, soft_masks = expected
    for name, per_frame, encode in (
        ("png8", union_masks, lambda m: encode_file(m, "png")),
        ("float32", soft_masks, lambda m: np.asarray(m, "<f4").tobytes()),
    ):
        reply = outcome.jobs[name]
        assert reply.job.state == pb.JOB_STATE_SUCCEEDED, reply.job.error.message
        assert reply.job.progress.done_frames == reply.job.progress.total_frames == 3
        assert [f.frame_index for f in reply.frames] == [0, 1, 2]
        for frame, masks in zip(reply.frames, per_frame):
            height, width = masks.shape[1:]
            assert [m.data for m in frame.masks] == [encode(m) for m in masks], f"{name} frame {frame.frame_index}"
            assert [m.is_union for m in frame.masks] == [False] * len(PROMPTS) + [True] * (len(masks) - len(PROMPTS))
            assert all((m.width, m.height) == (width, height) for m in frame.masks)


def test_provenance_names_the_model_and_the_worker(outcome: Outcome, tiny_model_dir: Path) -> None:
    provenance = outcome.jobs["png8"].job.provenance
    assert provenance.model == str(tiny_model_dir)
    assert (provenance.device, provenance.dtype, provenance.worker) == ("cpu", "float32", WORKER_NAME)
    assert provenance.maskfarm_version


def test_a_frame_that_does_not_decode_fails_its_job_and_the_worker_serves_on(outcome: Outcome) -> None:
    job = outcome.jobs["broken"].job
    assert job.state == pb.JOB_STATE_FAILED
    assert job.error.code == pb.ERROR_CODE_INVALID_INPUT
    assert "frames[1] (broken.png)" in job.error.message
    assert outcome.jobs["png8"].job.state == pb.JOB_STATE_SUCCEEDED  # queued after it, same worker


def test_a_job_cancelled_while_queued_never_runs(outcome: Outcome) -> None:
    reply = outcome.jobs["cancelled"]
    assert reply.job.state == pb.JOB_STATE_CANCELLED
    assert not reply.job.HasField("start_time")
    assert reply.job.provenance.worker == ""
    assert not reply.frames
    assert reply.job.id not in outcome.worker_log


def test_the_worker_registers_and_stops_cleanly_on_sigterm(outcome: Outcome) -> None:
    assert outcome.registered_while_serving
    assert outcome.worker_exit == 0, outcome.worker_log
    assert not outcome.registered_after_exit
