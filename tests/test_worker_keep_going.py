"""``run_job`` in-process on a real Redis for a ``keep_going`` job: a frame that does
not decode is stored as failed and skipped, and the job succeeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from maskfarm.core.jobs import JobSpec, JobState, Provenance
from maskfarm.jobqueue.store import JobStore
from maskfarm.worker.encoding import frame_result
from maskfarm.worker.frames import decode_frame
from maskfarm.worker.job import run_job
from maskfarm.worker.pipeline import Segmenter
from maskfarm.worker.runtime import WorkerRuntime, install_runtime
from tests.images import encoded_image, png_header_only

PROMPTS = ["a cat", "a dog"]


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir: Path) -> Segmenter:
    return Segmenter.load(str(tiny_model_dir), "cpu", max_batch=4)  # two frames per chunk


@pytest.fixture
def store(redis_url: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url), namespace="mfkeepgoing")


def _job(store: JobStore, keep_going: bool) -> str:
    frames = [encoded_image("PNG", (20 + i, 16), noise=True) for i in range(4)]
    frames[1] = png_header_only(40, 30)
    spec = JobSpec(frames=frames, frame_names=[f"f{i}.png" for i in range(4)], prompts=PROMPTS, keep_going=keep_going)
    job, _ = store.create(spec, queue_ttl=60, inputs_ttl=120, result_ttl=60)
    return job.id


def test_keep_going_skips_the_bad_frame_and_succeeds(store: JobStore, segmenter: Segmenter) -> None:
    job_id = _job(store, keep_going=True)
    install_runtime(WorkerRuntime(segmenter, store, Provenance(worker="w1")))
    run_job(job_id)

    job = store.require_job(job_id)
    assert (job.state, job.done_frames, job.failed_frames) == (JobState.SUCCEEDED, 4, 1)
    results = store.frame_results(job_id, range(4))
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert results[1].masks == [] and results[1].error.startswith("frames[1] (f1.png): ")
    assert all(len(r.masks) == 2 and not r.error for r in results[:1] + results[2:])
    good = [decode_frame(encoded_image("PNG", (20 + i, 16), noise=True)) for i in (0, 2, 3)]
    for index, computed in zip((0, 2, 3), segmenter.segment(good, PROMPTS)):
        assert results[index].masks == frame_result(index, computed.masks, job.format, False).masks


def test_without_keep_going_the_bad_frame_fails_the_job(store: JobStore, segmenter: Segmenter) -> None:
    job_id = _job(store, keep_going=False)
    install_runtime(WorkerRuntime(segmenter, store, Provenance(worker="w1")))
    run_job(job_id)

    job = store.require_job(job_id)
    assert job.state is JobState.FAILED and job.error_code.value == "invalid_input"
    assert "frames[1] (f1.png)" in job.error_message and job.failed_frames == 0
