"""Jobs whose worker was lost (died, or cut off from Redis): the RQ side of "nothing lost".

A worker that dies mid-job (killed, machine lost) leaves its RQ job in the queue's
``StartedJobRegistry`` with an entry that stops being refreshed. When that entry is older
than the job's lease, the maintenance pass of any live worker (``clean_registries``)
treats the job as abandoned: it calls the worker's exception handlers with
``AbandonedJobError`` and then re-queues the job if it has retries left, or moves it to
RQ's failed registry if not. A job that loses Redis mid-run raises redis'
``ConnectionError``/``TimeoutError`` (see ``maskfarm.worker.job``), which RQ handles the
same way once Redis answers again: exception handlers, then retry or failed registry.

``LostJobHandler`` is that exception handler. When no retry is left it fails the
maskfarm job as ``WORKER_LOST`` (RQ alone would leave the record running forever); before
that it only logs, and the record stays running so the retry resumes it (``mark_running``
accepts a running job and the job skips the frames already stored).
"""

from __future__ import annotations

import logging
from types import TracebackType

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from maskfarm.core.jobs import ErrorCode
from maskfarm.jobqueue.rq_adapter import AbandonedJobError, Job
from maskfarm.jobqueue.store import JobNotFound, JobStore

log = logging.getLogger(__name__)

_REASONS: dict[type[BaseException], str] = {
    AbandonedJobError: "its worker stopped (killed or lost)",
    RedisConnectionError: "its worker lost its connection to Redis",
    RedisTimeoutError: "its worker lost its connection to Redis",
}


class LostJobHandler:
    """An RQ exception handler that fails a maskfarm job whose last allowed run lost its worker."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def __call__(
        self, job: Job, exc_type: type[BaseException], exc_value: BaseException, traceback: TracebackType | None
    ) -> None:
        """Handles a lost worker (anything else is left to the next handler). Never raises
        for a job that is gone: RQ runs handlers inside its registry cleanup, which an
        exception would abort for every other abandoned job."""
        reason = next((text for kind, text in _REASONS.items() if issubclass(exc_type, kind)), None)
        if reason is None:
            return
        retries_left = job.retries_left or 0
        if retries_left > 0:
            log.warning("job %s: %s; running it again (%d retries left)", job.id, reason, retries_left)
            return
        try:
            record = self.store.get_job(job.id)
            message = f"{reason}; no retries left after {record.attempts} run(s)" if record else ""
            failed = bool(record) and self.store.mark_failed(job.id, ErrorCode.WORKER_LOST, message)
        except JobNotFound:
            return
        if failed:
            log.warning("job %s failed (%s): %s", job.id, ErrorCode.WORKER_LOST.value, message)
