"""The RQ job function: run one maskfarm job from its id to stored masks.

``run_job(job_id)`` is what the server enqueues (``JOB_FUNCTION``). It uses the
process's ``WorkerRuntime`` (the loaded model, the store), never loads anything itself,
and talks to Redis only through ``JobStore``. Its contract with RQ:

- returns normally whenever the job has reached an end it owns: succeeded, cancelled,
  failed for a reason a retry cannot fix (a frame that does not decode, inputs expired,
  a timeout, a bug);
- raises only for what should spend one of the job's retries: out of memory, and Redis
  becoming unreachable mid-job (``redis.ConnectionError``/``TimeoutError``, re-raised
  untouched). The job record then stays running so the retry (``mark_running`` accepts a
  running job) resumes it; out of memory on the last attempt is failed as
  ``out_of_memory`` first, a lost Redis by ``LostJobHandler`` (``worker_lost``).

A retried job skips the frames already stored, so no frame is computed or announced
twice. Cancellation is cooperative: the flag is checked between frames. So is being
superseded: a run whose worker was wrongly taken for dead (a batch longer than the job
lease) stops at its next frame once a later run has started, so two runs never go on
together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import rq
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.timeouts import JobTimeoutException

from maskfarm.server.jobs import ErrorCode, JobRecord
from maskfarm.server.store import InputsExpired, JobNotFound
from maskfarm.worker.encoding import frame_result
from maskfarm.worker.frames import Frame, decode_frame
from maskfarm.worker.metrics import FRAMES, JOBS_ENDED, STAGE_SECONDS
from maskfarm.worker.runtime import WorkerRuntime, current_runtime

log = logging.getLogger(__name__)


class BadFrame(ValueError):
    """A frame's bytes could not be decoded at the worker (the server's check passed)."""

    def __init__(self, index: int, name: str, reason: str) -> None:
        label = f"frames[{index}]" + (f" ({name})" if name else "")
        super().__init__(f"{label}: {reason}")


def run_job(job_id: str) -> None:
    """Runs job ``job_id`` on the installed runtime (see the module docstring)."""
    runtime = current_runtime()
    job = runtime.store.mark_running(job_id, runtime.provenance)
    if job is None:
        log.info("job %s skipped: not runnable (unknown, expired, finished or cancelled)", job_id)
        return
    log.info("job %s running: attempt %d, %d frames x %d prompts", job_id, job.attempts,
             job.total_frames, len(job.prompts))
    try:
        outcome = _segment(runtime, job)
    except BadFrame as error:
        _fail(runtime, job_id, ErrorCode.INVALID_INPUT, str(error))
    except InputsExpired as error:
        _fail(runtime, job_id, ErrorCode.EXPIRED, str(error))
    except JobNotFound:
        log.warning("job %s vanished from the store while running (expired?)", job_id)
    except JobTimeoutException as error:
        _fail(runtime, job_id, ErrorCode.TIMEOUT, f"the job ran past its time limit: {error}")
    except (RedisConnectionError, RedisTimeoutError) as error:
        log.warning("job %s interrupted: Redis unreachable (%s); it will run again", job_id, error)
        raise
    except MemoryError as error:  # torch.cuda.OutOfMemoryError is a RuntimeError, see below
        _out_of_memory(runtime, job_id, error)
        raise
    except Exception as error:
        if _is_out_of_memory(error):
            _out_of_memory(runtime, job_id, error)
            raise
        log.exception("job %s: internal error", job_id)
        _fail(runtime, job_id, ErrorCode.INTERNAL, f"{type(error).__name__}: {error}")
    else:
        if outcome == "cancelled":
            runtime.store.mark_cancelled(job_id)
            JOBS_ENDED.labels("cancelled").inc()
            log.info("job %s cancelled", job_id)
        elif outcome == "superseded":
            log.warning("job %s stopped: a later run took it over (this worker was taken for dead)", job_id)
        elif runtime.store.mark_succeeded(job_id):
            JOBS_ENDED.labels("succeeded").inc()
            log.info("job %s succeeded", job_id)
        else:
            log.info("job %s finished its frames but was no longer running", job_id)


def _segment(runtime: WorkerRuntime, job: JobRecord) -> str:
    """Computes and stores every frame not stored yet; ``"done"``, or why it stopped
    early: ``"cancelled"``, or ``"superseded"`` (a later run of the job took over)."""
    store, segmenter = runtime.store, runtime.segmenter
    done = set(store.done_frames(job.id))
    pending = [i for i in range(job.total_frames) if i not in done]
    if len(pending) < job.total_frames:
        log.info("job %s resuming: %d of %d frames already stored", job.id, job.total_frames - len(pending),
                 job.total_frames)
    chunk_size = max(1, segmenter.max_batch // len(job.prompts))
    stop: str | None = None

    def should_stop() -> bool:
        nonlocal stop
        stop = stop or store.stop_reason(job.id, job.attempts)
        return stop is not None

    frames = _decoded_frames(runtime, job, pending, chunk_size, should_stop)
    for result in segmenter.stream(frames, job.prompts, job.params):
        index = pending[result.index]
        store_masks(runtime, job, index, result.masks)
        runtime.heartbeat()
        if should_stop():
            break
    return stop or "done"


def _decoded_frames(
    runtime: WorkerRuntime, job: JobRecord, indices: Sequence[int], chunk_size: int, should_stop
) -> Iterator[Frame]:
    """The job's frames at ``indices``, loaded from the store one chunk at a time (so a
    long job never holds all its inputs) and decoded; stops early when ``should_stop()``."""
    for start in range(0, len(indices), chunk_size):
        if should_stop():
            return
        chunk = list(indices[start : start + chunk_size])
        for index, data in zip(chunk, runtime.store.load_frames(job.id, chunk)):
            yield load_frame(job, index, data)


def load_frame(job: JobRecord, index: int, data: bytes) -> Frame:
    """Frame ``index`` of ``job``, decoded from ``data`` (its bytes as the store keeps
    them); raises ``BadFrame``. The one place a job's input becomes a frame."""
    try:
        with STAGE_SECONDS.labels("decode").time():
            return decode_frame(data)
    except ValueError as error:
        raise BadFrame(index, job.frame_names[index], str(error)) from None


def store_masks(runtime: WorkerRuntime, job: JobRecord, index: int, masks: np.ndarray) -> None:
    """Encodes frame ``index``'s (K, H, W) masks in the job's format and stores them (the
    one place a job's output is written); announced to watchers at once."""
    with STAGE_SECONDS.labels("encode").time():
        encoded = frame_result(index, masks, job.format, job.params.union)
    with STAGE_SECONDS.labels("store").time():
        runtime.store.store_frame_result(job.id, encoded)
    FRAMES.inc()
    log.debug("job %s frame %d stored", job.id, index)


def _fail(runtime: WorkerRuntime, job_id: str, code: ErrorCode, message: str) -> None:
    runtime.store.mark_failed(job_id, code, message)
    JOBS_ENDED.labels("failed").inc()
    log.warning("job %s failed (%s): %s", job_id, code.value, message)


def _is_out_of_memory(error: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - the worker always has torch
        return False
    return isinstance(error, torch.cuda.OutOfMemoryError)


def _out_of_memory(runtime: WorkerRuntime, job_id: str, error: BaseException) -> None:
    """Out of memory spends a retry: the record stays running for the retry to resume,
    unless this was the last attempt, which fails the job as ``out_of_memory``."""
    rq_job = rq.get_current_job()
    retries_left = (rq_job.retries_left or 0) if rq_job is not None else 0
    if retries_left > 0:
        log.warning("job %s out of memory, %d retries left: %s", job_id, retries_left, error)
    else:
        _fail(runtime, job_id, ErrorCode.OUT_OF_MEMORY, f"out of memory: {error}")
