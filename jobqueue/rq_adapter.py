"""maskfarm's jobs on RQ: the one module that knows RQ.

RQ carries each maskfarm job as an RQ job with the same id, whose only argument is that
id (JSON-serialized, never pickled) and whose function is named, not imported, so the
server never loads the worker's code. Everything maskfarm uses of RQ (its classes, its
exceptions, its key names, and the two Lua scripts that work on its lists) is here, so an
RQ release that changes them is met in one file. Tested with RQ 3 (``rq>=3,<4`` in
pyproject.toml; the exact version in constraints.txt).
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Retry, SimpleWorker, get_current_job
from rq.exceptions import AbandonedJobError, InvalidJobOperation, NoSuchJobError
from rq.executions import Execution
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now as rq_now
from rq.worker import BaseWorker, Worker, WorkerStatus

from maskfarm.core.defaults import DEFAULT_NAMESPACE
from maskfarm.core.jobs import PRIORITIES, Priority

__all__ = [
    "JOB_FUNCTION",
    "MaskfarmQueue",
    "AbandonedJobError",
    "BaseWorker",
    "Execution",
    "InvalidJobOperation",
    "JSONSerializer",
    "Job",
    "JobTimeoutException",
    "NoSuchJobError",
    "Queue",
    "Retry",
    "SimpleWorker",
    "WorkerStatus",
    "Worker",
    "claim_script",
    "get_current_job",
    "orphan_check_script",
    "queue_name",
    "queues_of",
    "rq_job_key",
    "rq_now",
]

JOB_FUNCTION = "maskfarm.worker.job.run_job"
"""The RQ job function, by dotted name: the server enqueues it without importing it.
It is called with one argument, the job id."""


def queue_name(priority: Priority, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The RQ queue of a priority: ``maskfarm-high``, ``maskfarm-normal``, ``maskfarm-low``."""
    return f"{namespace}-{priority.value}"


class MaskfarmQueue(Queue):
    """RQ's queue, knowing that maskfarm's jobs have no dependents: the server enqueues
    none on them (``depends_on`` is not in maskfarm's API), so when one finishes there is
    nothing to move to ready, and RQ's read of its dependents set (a round trip per job)
    is left out. Any other job is RQ's as usual."""

    def move_dependents_to_ready(
        self,
        job: Job,
        pipeline: Pipeline | None = None,
        exclude_job_id: str | None = None,
        refresh_job_status: bool = True,
    ) -> dict[str, list[str]]:
        if job.func_name == JOB_FUNCTION:
            return {}
        return super().move_dependents_to_ready(job, pipeline, exclude_job_id, refresh_job_status)


def queues_of(redis: Redis, namespace: str, names: Sequence[str] | None = None) -> dict[str, Queue]:
    """RQ's queues by name (``MaskfarmQueue``), JSON-serialized: the namespace's three
    priorities in order, or ``names``."""
    names = [queue_name(priority, namespace) for priority in PRIORITIES] if names is None else names
    return {name: MaskfarmQueue(name, connection=redis, serializer=JSONSerializer) for name in names}


def rq_job_key(job_id: str) -> str:
    """The Redis hash in which RQ keeps a job (its ``status`` field among others)."""
    return Job.key_for(job_id)


_CLAIM = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[1])
    return 1
end
return 0
"""


def claim_script(redis: Redis):
    """``claim(queue, job_id, client=None) -> 1 | 0``: moves a job id from its place in
    ``queue``'s list to the queue's intermediate list, as RQ's own dequeue (LMOVE) does,
    atomically; 0 when another worker took it first."""
    script = redis.register_script(_CLAIM)

    def claim(queue: Queue, job_id: str, client: Redis | Pipeline | None = None):
        return script(keys=[queue.key, queue.intermediate_queue_key], args=[job_id], client=client)

    return claim


_CHECK_OR_PUSH = """
if redis.call('LPOS', KEYS[1], ARGV[1]) or redis.call('LPOS', KEYS[2], ARGV[1]) then
    return 0
end
if redis.call('HGET', KEYS[3], 'status') ~= 'queued' then
    return 0
end
if ARGV[2] == '1' then
    redis.call('LPUSH', KEYS[1], ARGV[1])
end
return 1
"""


def orphan_check_script(redis: Redis):
    """``check(queue, job_id, push, client=None) -> 1 | 0``: 1 when RQ holds ``job_id`` as
    queued but neither ``queue``'s list nor its intermediate list has it (an orphan), and
    then, with ``push``, puts it back at the head of the queue, atomically."""
    script = redis.register_script(_CHECK_OR_PUSH)

    def check(queue: Queue, job_id: str, push: bool, client: Redis | Pipeline | None = None):
        keys = [queue.key, queue.intermediate_queue_key, rq_job_key(job_id)]
        return script(keys=keys, args=[job_id, "1" if push else "0"], client=client)

    return check
