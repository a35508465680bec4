"""The RQ job function: run one maskfarm job from its id to stored masks.

``run_job(job_id)`` is what the server enqueues (``JOB_FUNCTION``). It uses the
process's ``WorkerRuntime`` (the loaded model, the store), never loads anything itself,
and talks to Redis only through ``JobStore``. Its contract with RQ:

- returns normally whenever the job has reached an end it owns: succeeded, cancelled,
  failed for a reason a retry cannot fix (a frame that does not decode, inputs expired,
  a timeout, a bug);
- raises only for what should spend one of the job's retries: out of device memory
  (``torch.cuda.OutOfMemoryError``; the host's own ``MemoryError`` fails the job at once,
  as ``out_of_memory``: another worker would run out too), and Redis becoming
  unreachable mid-job (``redis.ConnectionError``/``TimeoutError``, re-raised
  untouched). The job record then stays running so the retry (``mark_running`` accepts a
  running job) resumes it; out of memory on the last attempt is failed as
  ``out_of_memory`` first, a lost Redis by ``LostJobHandler`` (``worker_lost``);
- waits while Redis refuses a write (its own maxmemory reached, a read-only replica,
  loading: ``maskfarm.worker.refusals``): a frame's masks, or the job's start or end,
  and goes on once it can, inputs kept.

A run stores its frames a model chunk at a time, each chunk in one store call announced
in one event (``maskfarm.worker.chunk_writer``), the last chunk with the job's success
(``JobStore.finish_run``: one script run, not two). A retried job skips the frames already
stored, so no frame is computed or announced twice. Cancellation is cooperative: it is
seen when a chunk is stored and before the next chunk is loaded. So is being superseded:
a run whose worker was wrongly taken for dead (a batch longer than the job lease) stores
nothing more once a later run has started (the store call is fenced by the run) and stops
there, so two runs never go on together.

Cross-job batching (``maskfarm.worker.batching``): when the runner gathered co-jobs for
this job (the lead), their runs start inside the lead's (``mark_running``: attempts
counted once) and their pending frames are computed in the same model batches, each
job's frames of a chunk stored to it together once the chunk is made. The lead ends exactly as it would alone. A
co-job only leaves the batch (cancelled, superseded, a frame that does not decode, its
inputs or record gone, an error storing it), and an error of the batch as a whole makes
the lead finish alone: nothing of a co-job fails here. A co-job whose frames were all
stored in the batch ends there, succeeded with its last chunk, and its own ``run_job``
that follows has nothing to do; any other co-job's own ``run_job`` follows
(``mark_running(continuing=)``, the same run) and computes what the batch left.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import cast

import numpy as np
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from maskfarm.core.jobs import ErrorCode, JobRecord, JobState, StoredFrame
from maskfarm.core.prompts import Prompt
from maskfarm.core.storage import StoragePathError
from maskfarm.jobqueue.rq_adapter import JobTimeoutException, get_current_job
from maskfarm.jobqueue.store import InputsExpired, JobNotFound, JobStore, StopReason
from maskfarm.worker.chunk_writer import ChunkWriter
from maskfarm.worker.encoding import frame_result
from maskfarm.worker.frames import Frame, decode_frame, to_rgb_uint8
from maskfarm.worker.metrics import JOBS_ENDED, STAGE_SECONDS
from maskfarm.worker.pipeline import FrameRequest
from maskfarm.worker.refusals import beat_if_allowed, while_refused
from maskfarm.worker.runtime import WorkerRuntime, current_runtime
from maskfarm.worker.shared_storage import read_job_frame, write_frame_masks

log = logging.getLogger(__name__)


class RunEnd(str, enum.Enum):
    """How a run's frame loop ended when nothing in the store stopped it (``StopReason``)."""

    DONE = "done"
    """Every frame is stored."""
    SUCCEEDED = "succeeded"
    """Every frame is stored, and the job recorded as succeeded with the last of them."""
    LEFT_BATCH = "left"
    """A co-job left its lead's batch; its own run goes on with it."""


RunOutcome = RunEnd | StopReason


class BadPrompt(ValueError):
    """An image prompt's file could not be read at the worker (the server's check passed)."""


class BadFrame(ValueError):
    """A frame could not be read or decoded, or its masks written, at the worker (the
    server's check passed)."""

    def __init__(self, index: int, name: str, reason: str) -> None:
        label = f"frames[{index}]" + (f" ({name})" if name else "")
        super().__init__(f"{label}: {reason}")


def run_job(job_id: str) -> None:
    """Runs job ``job_id`` on the installed runtime (see the module docstring)."""
    runtime = current_runtime()
    if runtime.co_jobs.take_succeeded(job_id):
        log.debug("job %s: already succeeded in its lead's batch", job_id)
        return
    continuing = runtime.co_jobs.take_attempt(job_id)
    started, job = runtime.starts.take(job_id)
    if not started:
        job = while_refused(
            lambda: runtime.store.mark_running(job_id, runtime.provenance, continuing=continuing),
            f"job {job_id} start",
            runtime.heartbeat,
        )
    if job is None:
        log.info("job %s skipped: not runnable (unknown, expired, finished, cancelled or taken over)", job_id)
        return
    log.info(
        "job %s %s: attempt %d, %d frames x %d prompts",
        job_id,
        "running" if continuing is None else "finishing its run from a batch",
        job.attempts,
        job.total_frames,
        len(job.prompts),
    )
    try:
        outcome = _segment_with(runtime, job, _start_co_jobs(runtime, job))
    except (BadFrame, BadPrompt) as error:
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
    except MemoryError as error:  # the host's memory; torch.cuda.OutOfMemoryError is a RuntimeError, see below
        _fail(
            runtime,
            job_id,
            ErrorCode.OUT_OF_MEMORY,
            f"the worker's host ran out of memory (not retried): {error or 'MemoryError'}",
        )
    except Exception as error:
        if _is_out_of_memory(error):
            _out_of_memory(runtime, job_id, error)
            raise
        log.exception("job %s: internal error", job_id)
        _fail(runtime, job_id, ErrorCode.INTERNAL, f"{type(error).__name__}: {error}")
    else:
        if outcome is StopReason.CANCELLED:
            while_refused(lambda: runtime.store.mark_cancelled(job_id), f"job {job_id} cancelled", runtime.heartbeat)
            JOBS_ENDED.labels(JobState.CANCELLED.value).inc()
            log.info("job %s cancelled", job_id)
        elif outcome is StopReason.SUPERSEDED:
            log.warning("job %s stopped: a later run took it over (this worker was taken for dead)", job_id)
        elif outcome is StopReason.NOT_RUNNING:
            log.warning("job %s stopped: it is no longer running (it ended while this worker was busy)", job_id)
        elif outcome is RunEnd.SUCCEEDED or while_refused(
            lambda: runtime.store.mark_succeeded(job_id), f"job {job_id} success", runtime.heartbeat
        ):
            JOBS_ENDED.labels(JobState.SUCCEEDED.value).inc()
            log.info("job %s succeeded", job_id)
        else:
            log.info("job %s finished its frames but was no longer running", job_id)


def _segment(runtime: WorkerRuntime, job: JobRecord) -> RunOutcome:
    """Computes and stores every frame not stored yet, a model chunk per store call
    (``maskfarm.worker.chunk_writer``), the last with the job's success;
    ``RunEnd.SUCCEEDED``, or why it stopped early (``JobStore.stop_reason``)."""
    store, segmenter = runtime.store, runtime.segmenter
    pending = _pending(store, job)
    if len(pending) < job.total_frames:
        log.info(
            "job %s resuming: %d of %d frames already stored", job.id, job.total_frames - len(pending), job.total_frames
        )
    chunk_size = max(1, segmenter.max_batch // len(job.prompts))
    writer = ChunkWriter(runtime, job)
    error: BaseException | None = None
    try:
        decoded: list[int] = []
        # The next chunk's frames decode (on the codec threads) while the model runs this one.
        frames = runtime.codec.ahead(
            _decoded_frames(runtime, job, pending, chunk_size, writer, decoded, fresh=True), chunk_size
        )
        prompts = job_prompts(runtime, job)
        made = (
            (decoded[result.index], result.masks, result.chunk_end)
            for result in segmenter.stream(frames, prompts, job.params)
        )
        encode = lambda frame: encode_masks(runtime, job, frame[0], frame[1])  # noqa: E731
        last = pending[-1] if pending else None
        for (index, _, chunk_end), encoded in runtime.codec.in_order(encode, made):
            _add_or_skip(writer, job, index, encoded)
            if chunk_end and index != last:  # the last chunk goes with the job's end
                writer.flush()
            beat_if_allowed(runtime.heartbeat)
            if writer.stop is not None:
                break
        if writer.stop is None and writer.finish():
            return RunEnd.SUCCEEDED
    except BaseException as raised:
        error = raised
        raise
    finally:
        writer.close(error)
    return writer.stop or RunEnd.DONE


def _pending(store: JobStore, job: JobRecord) -> list[int]:
    """The job's frames not stored yet, ascending (the stored ones are read only when
    its record counts some)."""
    done = set(store.done_frames(job.id)) if job.done_frames else set()
    return [i for i in range(job.total_frames) if i not in done]


_OWN_ENDS = (
    BadFrame,
    InputsExpired,
    JobNotFound,
    JobTimeoutException,
    RedisConnectionError,
    RedisTimeoutError,
    MemoryError,
)
"""What ends a lead's run in a batch exactly as it would end it alone."""


def _start_co_jobs(runtime: WorkerRuntime, lead: JobRecord) -> list[JobRecord]:
    """Starts the runs of the co-jobs the runner gathered for ``lead`` (those still
    runnable; the others' own runs end them) and returns them, running."""
    started = []
    for co_job_id in runtime.co_jobs.of(lead.id):
        try:
            co_job = runtime.store.mark_running(co_job_id, runtime.provenance)
        except JobNotFound:
            co_job = None
        if co_job is not None:
            runtime.co_jobs.started(co_job.id, co_job.attempts)
            started.append(co_job)
    if started:
        log.info("job %s batching with %d job(s): %s", lead.id, len(started), ", ".join(co.id for co in started))
    return started


def _segment_with(runtime: WorkerRuntime, job: JobRecord, co_jobs: Sequence[JobRecord]) -> RunOutcome:
    """``_segment``, with ``co_jobs`` in the same batches when there are any; should the
    batch fail as a whole, the job finishes alone (the co-jobs in their own runs)."""
    if not co_jobs:
        return _segment(runtime, job)
    try:
        return _segment_batch(runtime, job, co_jobs)
    except _OWN_ENDS:
        raise
    except Exception as error:
        if _is_out_of_memory(error):
            raise
        log.exception("job %s: its batch with %d other job(s) failed; finishing it alone", job.id, len(co_jobs))
        return _segment(runtime, job)


class _Share:
    """One job's part of a batch: its pending frames, its writer, and why it stopped,
    once it has."""

    def __init__(self, runtime: WorkerRuntime, job: JobRecord, lead: bool) -> None:
        self.job, self.lead, self._runtime = job, lead, runtime
        self.pending = _pending(runtime.store, job)
        self.writer = ChunkWriter(runtime, job)
        self.left = False
        self.complete = False
        """Every pending frame's masks were added: the next store ends the job."""

    @property
    def stop(self) -> RunOutcome | None:
        return RunEnd.LEFT_BATCH if self.left else self.writer.stop

    def should_stop(self) -> bool:
        return self.writer.should_stop()

    def add(self, lead_id: str, index: int, masks: np.ndarray) -> None:
        """Frame ``index``'s masks, encoded, to store with its chunk: for the lead as it
        would be alone; a co-job whose masks cannot be had leaves the batch instead."""
        encode = lambda: encode_masks(self._runtime, self.job, index, masks)  # noqa: E731
        if self.lead:
            _add_or_skip(self.writer, self.job, index, encode)
        else:
            self._as_co_job(lead_id, lambda: self.writer.add(encode()))
        self.complete = index == self.pending[-1]

    def flush(self, lead_id: str) -> None:
        """Stores what waits, with the job's success once its last frame is in
        (``ChunkWriter.finish``); a co-job that cannot be stored leaves the batch, the
        lead's errors propagate."""
        if self.complete and self.stop is None and not self.writer.succeeded:
            self._write(lead_id, self._finish)
        else:
            self._write(lead_id, self.writer.flush)

    def _finish(self) -> None:
        if self.writer.finish() and not self.lead:  # the lead's own run counts its end
            self._runtime.co_jobs.succeeded(self.job.id)
            JOBS_ENDED.labels(JobState.SUCCEEDED.value).inc()
            log.info("job %s succeeded (in a batch)", self.job.id)

    def close(self, lead_id: str, error: BaseException | None) -> None:
        """``ChunkWriter.close`` as the batch ends, errors as ``flush``'s."""
        self._write(lead_id, lambda: self.writer.close(error))

    def _write(self, lead_id: str, write: Callable[[], None]) -> None:
        if self.stop is RunEnd.LEFT_BATCH:
            return
        if self.lead:
            write()
        else:
            self._as_co_job(lead_id, write)

    def _as_co_job(self, lead_id: str, step: Callable[[], None]) -> None:
        try:
            step()
        except (RedisConnectionError, RedisTimeoutError):
            raise
        except Exception as error:
            self.leave(lead_id, error)

    def leave(self, lead_id: str, error: BaseException) -> None:
        """A co-job leaves the batch and stores nothing more: its own run computes what
        it had not stored, meets the same problem and ends it."""
        self.left = True
        log.warning("job %s left job %s's batch: %s: %s", self.job.id, lead_id, type(error).__name__, error)


def _segment_batch(runtime: WorkerRuntime, lead: JobRecord, co_jobs: Sequence[JobRecord]) -> RunOutcome:
    """``_segment`` for ``lead`` with ``co_jobs`` (see the module docstring): the lead's
    frames first, then each co-job's, in shared model batches, each job's frames of a
    chunk stored together; returns the lead's outcome."""
    shares = [_Share(runtime, lead, lead=True)] + [_Share(runtime, co_job, lead=False) for co_job in co_jobs]
    error: BaseException | None = None
    try:
        for result in runtime.segmenter.stream_requests(_batch_requests(runtime, shares)):
            share, index = cast("tuple[_Share, int]", result.tag)  # as _batch_requests tagged it
            if share.stop is None:
                share.add(lead.id, index, result.masks)
            if result.chunk_end:
                for each in shares:
                    each.flush(lead.id)
            beat_if_allowed(runtime.heartbeat)
            if shares[0].stop is not None:
                break
    except BaseException as raised:
        error = raised
        raise
    finally:
        _close_shares(shares, lead.id, error)
    return shares[0].stop or (RunEnd.SUCCEEDED if shares[0].writer.succeeded else RunEnd.DONE)


def _close_shares(shares: Sequence[_Share], lead_id: str, error: BaseException | None) -> None:
    """Stores what each share still holds as the batch ends (the co-jobs' first, so the
    lead's errors cannot keep them from it)."""
    for share in [*shares[1:], shares[0]]:
        share.close(lead_id, error)


def _batch_requests(runtime: WorkerRuntime, shares: Sequence[_Share]) -> Iterator[FrameRequest]:
    """Every share's pending frames as pipeline requests tagged ``(share, frame index)``;
    a co-job whose frames cannot be had leaves the batch, the lead's run ends."""
    lead_id = shares[0].job.id
    for share in shares:
        job = share.job
        decoded: list[int] = []
        chunk_size = max(1, runtime.segmenter.max_batch // len(job.prompts))
        try:
            prompts = job_prompts(runtime, job)
            for frame in _decoded_frames(runtime, job, share.pending, chunk_size, share.writer, decoded):
                if share.stop is not None:
                    break
                yield FrameRequest(frame, prompts, job.params, (share, decoded[-1]))
        except (BadFrame, BadPrompt, InputsExpired, JobNotFound) as error:
            if share.lead:
                raise
            share.leave(lead_id, error)


def _decoded_frames(
    runtime: WorkerRuntime,
    job: JobRecord,
    indices: Sequence[int],
    chunk_size: int,
    writer: ChunkWriter,
    decoded: list[int],
    fresh: bool = False,
) -> Iterator[Frame]:
    """The job's frames at ``indices``, loaded from the store one chunk at a time (so a
    long job never holds all its inputs) and decoded; stops early when the run should
    (``writer.should_stop()``). Appends each yielded frame's index to ``decoded``: under
    ``keep_going`` a frame that raises ``BadFrame`` is skipped (``writer.skip``: stored
    as failed), so yielded positions and job indices differ. ``fresh``: the run started
    just now, so whether to stop is first asked after the first chunk (saving a round
    trip on every small job)."""
    for start in range(0, len(indices), chunk_size):
        if (start or not fresh) and writer.should_stop():
            return
        chunk = list(indices[start : start + chunk_size])
        inputs = zip(chunk, _stored_inputs(runtime.store, job, chunk))
        for index, frame in zip(chunk, runtime.codec.map(lambda item: _frame_or_error(job, *item), inputs)):
            if isinstance(frame, BadFrame):
                if not job.keep_going:
                    raise frame
                writer.skip(index, str(frame))
                continue
            decoded.append(index)
            yield frame


def job_prompts(runtime: WorkerRuntime, job: JobRecord) -> list[Prompt]:
    """The job's prompts, each image prompt's file read: from the store (sent as bytes) or
    from shared storage (as a frame is: the owner's roots, then the storage roots and
    limits); raises ``BadPrompt`` or ``InputsExpired``."""
    prompts = job.specs
    for index, prompt in enumerate(prompts):
        if prompt.image is not None and not prompt.image.path:
            data = runtime.store.load_exemplar(job.id, index)
        elif prompt.image is not None:
            try:
                if job.storage_access is not None:
                    job.storage_access.check_read(prompt.image.path)
                data = runtime.storage.read_frame(prompt.image.path)
            except ValueError as error:
                raise BadPrompt(f"prompt_specs[{index}].image ({prompt.image.path}): {error}") from None
        else:
            continue
        prompts[index] = dataclasses.replace(prompt, image=dataclasses.replace(prompt.image, data=data))
    return prompts


def _stored_inputs(store: JobStore, job: JobRecord, indices: list[int]) -> list[bytes]:
    """The stored bytes of the frames at ``indices``, ``b""`` for those given by path (read
    from shared storage by ``load_frame``): a chunk of path frames costs no round trip.
    Raises ``InputsExpired`` when stored bytes are gone."""
    stored = [index for index in indices if not job.frame_path(index)]
    data = dict(zip(stored, store.load_frames(job.id, stored))) if stored else {}
    return [data.get(index, b"") for index in indices]


def _frame_or_error(job: JobRecord, index: int, data: bytes) -> Frame | BadFrame:
    try:
        return load_frame(job, index, data)
    except BadFrame as error:
        return error


def load_frame(job: JobRecord, index: int, data: bytes) -> Frame:
    """Frame ``index`` of ``job``, decoded from ``data`` (its bytes as the store keeps
    them; for a frame given by path, ``b""``: it is read here, from shared storage);
    raises ``BadFrame``. The one place a job's input becomes a frame."""
    try:
        if job.frame_path(index):
            data = read_job_frame(current_runtime().storage, job, index)
        with STAGE_SECONDS.labels("decode").time():
            return to_rgb_uint8(decode_frame(data, job.exr))  # on the codec threads, not the job's
    except ValueError as error:
        raise BadFrame(index, job.frame_names[index], str(error)) from None


def encode_masks(runtime: WorkerRuntime, job: JobRecord, index: int, masks: np.ndarray) -> StoredFrame:
    """Frame ``index``'s masks in the job's format, ready to store. A job with an
    ``output_dir`` gets the files written there, and their paths to store; raises
    ``BadFrame`` when they cannot be written. Safe to call from a codec thread."""
    with STAGE_SECONDS.labels("encode").time():
        if job.output_dir:
            return _write_mask_files(runtime, job, index, masks)
        return frame_result(index, masks, job.format, job.params.union)


def _add_or_skip(writer: ChunkWriter, job: JobRecord, index: int, encode: Callable[[], StoredFrame]) -> None:
    """Frame ``index``'s result from ``encode`` to store with its chunk; when its masks
    cannot be written (``BadFrame``) the frame is skipped under ``keep_going``, and ends
    the job otherwise."""
    try:
        encoded = encode()
    except BadFrame as error:
        if not job.keep_going:
            raise
        writer.skip(index, str(error))
        return
    writer.add(encoded)


def _write_mask_files(runtime: WorkerRuntime, job: JobRecord, index: int, masks: np.ndarray) -> StoredFrame:
    try:
        return write_frame_masks(runtime.storage, job, index, masks)
    except StoragePathError as error:
        raise BadFrame(index, job.frame_names[index], f"its masks cannot be written: {error}") from None


def _fail(runtime: WorkerRuntime, job_id: str, code: ErrorCode, message: str) -> None:
    while_refused(lambda: runtime.store.mark_failed(job_id, code, message), f"job {job_id} failure", runtime.heartbeat)
    JOBS_ENDED.labels(JobState.FAILED.value).inc()
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
    rq_job = get_current_job()
    retries_left = (rq_job.retries_left or 0) if rq_job is not None else 0
    if retries_left > 0:
        log.warning("job %s out of memory, %d retries left: %s", job_id, retries_left, error)
    else:
        _fail(runtime, job_id, ErrorCode.OUT_OF_MEMORY, f"out of memory: {error}")
