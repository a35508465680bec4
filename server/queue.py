"""Putting jobs on the RQ queues and taking them off: the server's side of the work queue.

A job is stored (``JobStore``) and enqueued, in one transaction, as an RQ job with the same
id, whose only argument is that id: RQ carries no frames and no parameters, and its JSON
serializer means nothing is ever pickled. The job function is named, not imported, so
the server never loads the worker's code (or torch).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis import Redis
from redis.client import Pipeline

from maskfarm.core.jobs import PRIORITIES, JobRecord, JobSpec, JobState, Priority, WorkerRecord
from maskfarm.jobqueue.redis_clients import Command
from maskfarm.jobqueue.rq_adapter import (
    JOB_FUNCTION,
    BaseWorker,
    InvalidJobOperation,
    Job,
    JSONSerializer,
    NoSuchJobError,
    Queue,
    Retry,
    Worker,
    queues_of,
)
from maskfarm.jobqueue.store import JobStore
from maskfarm.server.metrics import CANCEL_REQUESTS, JOBS_SUBMITTED

log = logging.getLogger(__name__)


class BacklogFull(Exception):
    """Too much work is already waiting; the client should retry later."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(f"{reason}; retry in about {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class QueueLimits:
    """How long jobs may wait and run, and how much may wait at once."""

    queue_ttl: int
    inputs_ttl: int
    result_ttl: int
    job_timeout: int
    retries: int
    max_backlog_jobs: int
    max_backlog_bytes: int


@dataclass(frozen=True)
class WorkerStatus:
    """A live worker as RQ sees it, with what it told maskfarm about itself."""

    name: str
    hostname: str
    pid: int
    state: str
    queues: list[Priority]
    current_job_id: str
    started_at: datetime | None
    last_heartbeat: datetime | None
    info: WorkerRecord


class Backlog:
    """The jobs waiting in the queues and their frames' bytes, as the store's ``Admission``
    for a new job: refused (``BacklogFull``) over ``QueueLimits``' backlog limits."""

    def __init__(self, queues: Sequence[Queue], bytes_key: str, limits: QueueLimits) -> None:
        self.queues = queues
        self.bytes_key = bytes_key
        self.limits = limits

    def reads(self) -> Sequence[Command]:
        """Every priority's queue length, then the waiting frames' bytes."""
        return [("LLEN", queue.key) for queue in self.queues] + [("GET", self.bytes_key)]

    def check(self, spec: JobSpec, replies: Sequence[Any]) -> None:
        """Refuses ``spec`` over the limits, given ``reads``' replies."""
        *lengths, queued_bytes = replies
        waiting, queued = sum(lengths), int(queued_bytes or 0)
        if waiting >= self.limits.max_backlog_jobs:
            raise BacklogFull(f"{waiting} jobs are waiting (limit {self.limits.max_backlog_jobs})", 30)
        if queued + spec.input_bytes > self.limits.max_backlog_bytes:
            raise BacklogFull(
                f"{queued + spec.input_bytes} bytes of frames would be waiting (limit {self.limits.max_backlog_bytes})",
                30,
            )


class JobQueue:
    """Submits jobs to the RQ queue of their priority (within the ``Backlog``'s limits),
    and cancels them."""

    def __init__(self, redis: Redis, store: JobStore, limits: QueueLimits) -> None:
        self.redis = redis
        self.store = store
        self.limits = limits
        namespace = store.keys.namespace
        self.queues = dict(zip(PRIORITIES, queues_of(redis, namespace).values()))
        self.backlog = Backlog(list(self.queues.values()), store.keys.backlog_bytes(), limits)

    def submit(self, spec: JobSpec) -> JobRecord:
        """Stores and enqueues a job in one transaction (or returns the job of an already
        used request id).

        Raises ``BacklogFull`` when the waiting jobs are over the configured limits.
        """
        job, created = self.store.create(
            spec,
            queue_ttl=self.limits.queue_ttl,
            inputs_ttl=self.limits.inputs_ttl,
            result_ttl=self.limits.result_ttl,
            admit=self.backlog,
            enqueue=self._enqueue_on,
        )
        if not created:
            return self._queued_once(job)
        JOBS_SUBMITTED.labels(job.priority.value).inc()
        log.info(
            "job %s queued: %d frame(s) x %d prompt(s), priority %s, labels %s",
            job.id,
            job.total_frames,
            len(job.prompts),
            job.priority.value,
            job.labels,
        )
        return job

    def _queued_once(self, job: JobRecord) -> JobRecord:
        """A repeated request's job, enqueued now if it never was. ``submit`` stores and
        queues in one transaction, but a server before that did it in two steps, and Redis
        going away between them left a job stored, QUEUED, with no RQ job to run it."""
        if job.state is JobState.QUEUED and not Job.exists(job.id, connection=self.redis):
            log.warning("job %s was stored but never queued (Redis went away?); queuing it now", job.id)
            self._enqueue(job)
        return job

    def _enqueue(self, job: JobRecord) -> None:
        with self.redis.pipeline() as pipe:  # RQ's writes in one round trip
            self._enqueue_on(pipe, job)
            pipe.execute()

    def _enqueue_on(self, pipe: Pipeline, job: JobRecord) -> None:
        """Adds RQ's writes that queue ``job`` to ``pipe`` (executed by the caller)."""
        self.queues[job.priority].enqueue_call(
            JOB_FUNCTION,
            args=[job.id],
            job_id=job.id,
            timeout=self.limits.job_timeout,
            ttl=self.limits.queue_ttl,
            result_ttl=self.limits.result_ttl,
            failure_ttl=self.limits.result_ttl,
            retry=Retry(max=self.limits.retries, enqueue_at_front=True) if self.limits.retries else None,
            description=f"maskfarm job {job.id}",
            meta={"frames": job.total_frames},
            pipeline=pipe,
        )

    def cancel(self, job_id: str) -> JobRecord:
        """Cancels a job (see ``JobStore.cancel``); a queued one also leaves its RQ queue."""
        job = self.store.cancel(job_id)
        CANCEL_REQUESTS.inc()
        if job.state.is_terminal and job.started_at is None:  # it never ran: nothing may run it now
            self._dequeue(job)
        log.info("job %s cancel requested: now %s", job.id, job.state.value)
        return job

    def _dequeue(self, job: JobRecord) -> None:
        try:
            Job.fetch(job.id, connection=self.redis, serializer=JSONSerializer).cancel()
        except (NoSuchJobError, InvalidJobOperation):
            self.queues[job.priority].remove(job.id)

    def workers(self) -> list[WorkerStatus]:
        """The live RQ workers serving maskfarm's queues, highest-priority queue first."""
        found: dict[str, BaseWorker] = {}
        for queue in self.queues.values():
            for worker in Worker.all(queue=queue, serializer=JSONSerializer):
                found.setdefault(worker.name, worker)
        infos = self.store.worker_infos(found)
        by_queue = {queue.name: priority for priority, queue in self.queues.items()}
        return [
            WorkerStatus(
                name=name,
                hostname=worker.hostname or "",
                pid=worker.pid or 0,
                state=str(worker.get_state()),
                queues=[by_queue[q] for q in worker.queue_names() if q in by_queue],
                current_job_id=worker.get_current_job_id() or infos.get(name, WorkerRecord(name)).current_job,
                started_at=worker.birth_date,
                last_heartbeat=worker.last_heartbeat,
                info=infos.get(name, WorkerRecord(name)),
            )
            for name, worker in sorted(found.items())
        ]
