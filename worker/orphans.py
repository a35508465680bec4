"""Queued jobs that no queue holds any more: found and put back.

RQ's worker takes a job off its queues with BLPOP when it serves several (it moves the
job to the queue's intermediate list atomically only when it serves one): a worker
killed between taking the job and registering it as started leaves the job in no list
at all, QUEUED for ever. (The small soak test lost a job this way now and then; it is
the window between a worker's dequeue and its first write.)

``OrphanSweeper.sweep`` runs with every worker's maintenance pass. It looks at the oldest
jobs that maskfarm's store still has QUEUED (``JobStore.queued_before``); a job that is
in neither its queue nor the queue's intermediate list, and that RQ has not started,
is an orphan. One found orphaned at two passes in a row (``maintenance_s`` apart, while
a live worker takes milliseconds from dequeue to start) is pushed back to the front of
its queue, by a script that checks again and pushes in one step, so workers sweeping
at the same time push it once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from maskfarm.core.jobs import JobState
from maskfarm.jobqueue.rq_adapter import Queue, orphan_check_script, queue_name
from maskfarm.jobqueue.store import JobStore

log = logging.getLogger(__name__)

BATCH = 200
"""Oldest queued jobs looked at per pass."""
MIN_AGE_S = 5.0
"""Jobs younger than this are not looked at (they are in their queue, or being started)."""


class OrphanSweeper:
    """Finds the orphans among the queued jobs of ``queues`` and requeues them (see the
    module docstring). One per worker: it remembers the previous pass's suspects."""

    def __init__(self, store: JobStore, queues: Sequence[Queue], min_age_s: float = MIN_AGE_S) -> None:
        self.store = store
        self.min_age_s = min_age_s
        self._queues = {queue.name: queue for queue in queues}
        self._check_or_push = orphan_check_script(store.redis)
        self._suspects: set[str] = set()

    def sweep(self) -> list[str]:
        """One pass; returns the ids of the jobs put back on their queues."""
        ids = self.store.queued_before(time.time() - self.min_age_s, BATCH)
        records = self.store.get_jobs(ids)
        self.store.forget_queued(job_id for job_id, job in zip(ids, records) if job is None)
        queued = [
            (job, self._queues.get(queue_name(job.priority, self.store.keys.namespace)))
            for job in records
            if job is not None and job.state is JobState.QUEUED
        ]
        checked = [(job, queue) for job, queue in queued if queue is not None]
        with self.store.redis.pipeline(transaction=False) as pipe:
            for job, queue in checked:
                self._check_or_push(queue, job.id, job.id in self._suspects, client=pipe)
            outcomes = pipe.execute() if checked else []
        orphans = [job.id for (job, _), orphaned in zip(checked, outcomes) if orphaned]
        requeued = [job_id for job_id in orphans if job_id in self._suspects]
        for job_id in requeued:
            log.warning("job %s was queued but in no queue (its worker died as it took it?): queued again", job_id)
        self._suspects = set(orphans) - set(requeued)
        return requeued
