"""Cross-job batching: small jobs waiting together run their frames as one batch.

A render farm often sends many small jobs (a frame or two each). Run one by one, each
pays a model pass of its own; batched, their frames share the vision and decoder passes.
When the worker is handed a small job (the *lead*), ``Gatherer`` claims more small jobs
waiting at the heads of its queues (the *co-jobs*), up to a budget of frames:

- only when something is already waiting: an empty queue means no wait at all; once one
  co-job is claimed it polls for more for at most ``wait_s``;
- in the order a lone worker would serve them (queues by priority, each from its head),
  stopping at the first job that does not fit, so batching never reorders the queues;
- atomically (a Lua script moves the id from the queue to RQ's intermediate list, the
  same hand-over RQ's own dequeue uses), so no other worker can take a claimed job.

The runner then makes every co-job RQ-started at once (on the worker's short lease, which
its job heartbeat renews for all of them: a dead worker's co-jobs are re-queued like any
running job) and hands their ids to the lead's run through ``CoJobs``. The lead's
``run_job`` computes their pending frames with its own and stores each as it is made;
each co-job then goes through RQ's ordinary ``perform_job``, whose ``run_job`` finds its
frames stored and only ends the job. So every job keeps its own masks, progress, state,
timeout, failure and RQ registries; the batch only changes which frames share a model
pass (and so float rounding: masks agree with a lone run within one 8-bit level).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from maskfarm.jobqueue.rq_adapter import Queue, claim_script
from maskfarm.jobqueue.store import JobStore

log = logging.getLogger(__name__)

PEEK = 16
"""How many ids at a queue's head are looked at per read."""
POLL_S = 0.001
"""The pause between looks at the queues while a batch waits for more jobs."""


@dataclass(frozen=True)
class Claimed:
    """A co-job taken off ``queue``: its id now sits in the queue's intermediate list."""

    job_id: str
    queue: Queue
    frames: int


class Gatherer:
    """Claims the small jobs waiting at the heads of ``queues`` (priority order) for one
    batch of at most ``frames`` frames; ``frames`` < 2 turns batching off."""

    def __init__(self, store: JobStore, queues: Sequence[Queue], frames: int, wait_s: float) -> None:
        self.store = store
        self.queues = list(queues)
        self.frames = frames
        self.wait_s = wait_s
        self._claim = claim_script(store.redis)

    @property
    def enabled(self) -> bool:
        return self.frames > 1

    def waiting(self) -> bool:
        """Whether any job waits in the queues (one round trip): when none does, a lone
        job pays nothing more for batching being on."""
        with self.store.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                pipe.llen(queue.key)
            return any(pipe.execute())

    def gather(self, lead_frames: int) -> list[Claimed]:
        """Co-jobs for a lead job of ``lead_frames`` pending frames: none when batching is
        off, the lead is not small or nothing waits; else as many as fit, waiting at most
        ``wait_s`` for more once the first is claimed. A job that would not run (cancelled,
        expired, unknown) counts as one frame: it is claimed all the same and its own run
        ends it."""
        budget = self.frames - lead_frames
        if not self.enabled or budget <= 0:
            return []
        claimed, blocked = self._claim_fitting(budget)
        deadline = time.monotonic() + self.wait_s
        while claimed and not blocked and time.monotonic() < deadline:
            left = budget - sum(c.frames for c in claimed)
            if left <= 0:
                break
            time.sleep(POLL_S)
            more, blocked = self._claim_fitting(left)
            claimed += more
        return claimed

    def _claim_fitting(self, budget: int) -> tuple[list[Claimed], bool]:
        """Claims jobs from the queues' heads while they fit in ``budget`` frames; and
        whether it stopped at one that does not fit (nothing more may join the batch)."""
        claimed: list[Claimed] = []
        for queue in self.queues:
            while budget > 0:
                ids = [raw.decode() for raw in cast("list[bytes]", self.store.redis.lrange(queue.key, 0, PEEK - 1))]
                if not ids:
                    break
                for job_id, pending in zip(ids, self.store.pending_frames(ids)):
                    cost = max(1, pending)
                    if cost > budget:
                        return claimed, True
                    if self._claim(queue, job_id):
                        claimed.append(Claimed(job_id, queue, cost))
                        budget -= cost
                        if budget == 0:
                            return claimed, False
        return claimed, False


class CoJobs:
    """The hand-over between the runner and the job function for one batch: which
    co-jobs ride along with the lead, which of their runs already started (so a co-job's
    own run continues that run, see ``JobStore.mark_running(continuing=)``), and which
    already succeeded in the batch (so their own runs have nothing left to do)."""

    def __init__(self) -> None:
        self._lead = ""
        self._ids: list[str] = []
        self._started: dict[str, int] = {}
        self._succeeded: set[str] = set()

    def hold(self, lead_id: str, co_job_ids: Sequence[str]) -> None:
        """Makes ``co_job_ids`` the co-jobs of the lead ``lead_id``'s run."""
        self._lead, self._ids = lead_id, list(co_job_ids)

    def of(self, job_id: str) -> list[str]:
        """The co-jobs to compute with job ``job_id``'s run: none unless it is the lead."""
        return list(self._ids) if job_id == self._lead else []

    def started(self, job_id: str, attempt: int) -> None:
        """Co-job ``job_id`` started its run number ``attempt`` inside the lead's run."""
        self._started[job_id] = attempt

    def take_attempt(self, job_id: str) -> int | None:
        """The run a co-job started in its lead's batch (once), or None: start a new one."""
        return self._started.pop(job_id, None)

    def ran_in_batch(self, job_id: str) -> bool:
        """Whether co-job ``job_id``'s run started in its lead's batch (not yet taken)."""
        return job_id in self._started or job_id in self._succeeded

    def succeeded(self, job_id: str) -> None:
        """Co-job ``job_id``'s last frames were stored with its success in the batch."""
        self._succeeded.add(job_id)

    def take_succeeded(self, job_id: str) -> bool:
        """Whether a co-job succeeded in its lead's batch (once): its own run then ends
        without a word to Redis."""
        if job_id not in self._succeeded:
            return False
        self._succeeded.discard(job_id)
        self._started.pop(job_id, None)
        return True

    def clear(self) -> None:
        self._lead, self._ids = "", []
        self._started.clear()
        self._succeeded.clear()
