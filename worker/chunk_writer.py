"""The worker's writes of a run's frames: one store call per model chunk, fenced by the run.

Every store call costs Redis a script run, a PUBLISH, a round trip and a wake-up of each
server following the job; stored one frame at a time, that was most of Redis's work per
frame. So a run's results wait here until the end of their model chunk (the frames after
it wait for another model pass anyway), or until ``STORE_BATCH_BYTES`` of masks are
waiting, and are then stored with one ``JobStore.store_frame_results`` call: all or
nothing, announced in one event, and only while this run is the job's current one (a run
taken over by a later one stores nothing more). The store's answer also says whether the
run should stop (cancelled, superseded, ended); the run still asks before each chunk of
frames it loads (``should_stop``), so a cancel between chunks costs no computed frame.

Nothing computed is reported stored before the call that stores it returns; a run that
stops or fails keeps what it had computed (``close`` stores it) unless Redis itself is
unreachable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from maskfarm.core.jobs import JobRecord, StoredFrame
from maskfarm.jobqueue.store import StopReason
from maskfarm.worker.metrics import FRAMES, STAGE_SECONDS
from maskfarm.worker.refusals import while_refused
from maskfarm.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

STORE_BATCH_BYTES = 8 * 1024 * 1024
"""Mask bytes (or paths) that may wait to be stored together: a chunk of large masks
stored as bytes is written in several calls rather than one that holds Redis long."""

_NOTHING_STORED = (StopReason.SUPERSEDED, StopReason.NOT_RUNNING)


class ChunkWriter:
    """The results of one run of ``job`` (run number ``job.attempts``) waiting to be
    stored together; ``stop`` says why the run should stop, once known."""

    def __init__(self, runtime: WorkerRuntime, job: JobRecord) -> None:
        self.runtime, self.job = runtime, job
        self.stop: StopReason | None = None
        self.succeeded = False
        """The job was ended as succeeded with the run's last frames (``finish``)."""
        self._results: list[StoredFrame] = []
        self._bytes = 0

    def add(self, result: StoredFrame) -> None:
        """Keeps ``result`` to store with the rest of its chunk (stored at once when the
        waiting masks reach ``STORE_BATCH_BYTES``)."""
        self._results.append(result)
        self._bytes += result.nbytes
        if self._bytes >= STORE_BATCH_BYTES:
            self.flush()

    def skip(self, index: int, reason: str) -> None:
        """Frame ``index`` stored as failed (``keep_going``), with the chunk: watchers get
        its error, the job's ``failed_frames`` counts it, and the run goes on without it."""
        self.add(StoredFrame.failed(index, reason))
        log.warning("job %s frame %d skipped (keep_going): %s", self.job.id, index, reason)

    def flush(self) -> None:
        """Stores the waiting results in one call, waiting while Redis refuses the write
        (``maskfarm.worker.refusals``); raises ``JobNotFound`` when the job is gone."""
        if self._results:
            self._store(self.runtime.store.store_frame_results)

    def finish(self) -> bool:
        """Stores the waiting results, the run's last, and ends the job as succeeded in the
        same call (``JobStore.finish_run``); whether it did (if not, ``stop`` says why).
        Raises ``JobNotFound`` when the job is gone."""
        self.succeeded = self._store(self.runtime.store.finish_run) is None
        return self.succeeded

    def _store(self, call: Callable[[str, list[StoredFrame], int], StopReason | None]) -> StopReason | None:
        results, self._results, self._bytes = self._results, [], 0
        job = self.job
        span = f"frames {results[0].index}..{results[-1].index}" if results else "end"
        with STAGE_SECONDS.labels("store").time():
            reason = while_refused(
                lambda: call(job.id, results, job.attempts), f"job {job.id} {span}", self.runtime.heartbeat
            )
        self.stop = self.stop or reason
        if reason in _NOTHING_STORED:
            log.info(
                "job %s: %d frame(s) not stored: this run is %s", job.id, len(results), reason.value.replace("_", " ")
            )
            return reason
        FRAMES.inc(len(results))
        log.debug("job %s frames %s stored", job.id, [result.index for result in results])
        return reason

    def should_stop(self) -> bool:
        """Whether the run should stop, as a store call last answered or, if none said so,
        as the store says now (``JobStore.stop_reason``)."""
        self.stop = self.stop or self.runtime.store.stop_reason(self.job.id, self.job.attempts)
        return self.stop is not None

    def close(self, error: BaseException | None) -> None:
        """Stores what waits as the run ends, unless it ends because Redis failed."""
        if not isinstance(error, RedisError):
            self.flush()
