"""A queued job that no queue holds (its worker died between taking it and starting it)
is found and queued again, once, and nothing else is touched (real Redis, real RQ)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from rq.job import Job

from maskfarm.core.jobs import JobSpec, JobState, Priority, Provenance
from maskfarm.jobqueue.store import JobStore
from maskfarm.server.queue import JobQueue, QueueLimits
from maskfarm.worker.orphans import OrphanSweeper
from tests.images import encoded_image

LIMITS = QueueLimits(
    queue_ttl=60,
    inputs_ttl=120,
    result_ttl=300,
    job_timeout=60,
    retries=1,
    max_backlog_jobs=100,
    max_backlog_bytes=10**8,
)


@pytest.fixture
def jobs(redis_url: str) -> Iterator[JobQueue]:
    client = redis.Redis.from_url(redis_url)
    yield JobQueue(client, JobStore(client, namespace=f"orphans-{uuid.uuid4().hex[:8]}"), LIMITS)
    client.close()


def _submit(jobs: JobQueue, priority: Priority = Priority.NORMAL) -> str:
    spec = JobSpec(frames=[encoded_image()], frame_names=["f.png"], prompts=["car"], priority=priority)
    return jobs.submit(spec).id


def _taken_by_a_dying_worker(jobs: JobQueue, job_id: str, priority: Priority = Priority.NORMAL) -> None:
    """What RQ's BLPOP leaves when its worker is killed at once: the id in no list."""
    assert jobs.redis.lrem(jobs.queues[priority].key, 1, job_id) == 1


def _positions(jobs: JobQueue, priority: Priority = Priority.NORMAL) -> list[str]:
    return [raw.decode() for raw in jobs.redis.lrange(jobs.queues[priority].key, 0, -1)]


def _sweeper(jobs: JobQueue) -> OrphanSweeper:
    return OrphanSweeper(jobs.store, list(jobs.queues.values()), min_age_s=0)


def test_an_orphan_is_queued_again_at_the_front_on_the_second_pass_only(jobs: JobQueue) -> None:
    waiting, orphan = _submit(jobs), _submit(jobs)
    _taken_by_a_dying_worker(jobs, orphan)
    sweeper = _sweeper(jobs)

    assert sweeper.sweep() == []  # a suspect: a live worker may be starting it right now
    assert _positions(jobs) == [waiting]
    assert sweeper.sweep() == [orphan]
    assert _positions(jobs) == [orphan, waiting]
    assert sweeper.sweep() == [] and _positions(jobs) == [orphan, waiting]


def test_two_workers_sweeping_together_push_it_once(jobs: JobQueue) -> None:
    orphan = _submit(jobs, Priority.HIGH)
    _taken_by_a_dying_worker(jobs, orphan, Priority.HIGH)
    first, second = _sweeper(jobs), _sweeper(jobs)
    first.sweep(), second.sweep()
    assert sorted(first.sweep() + second.sweep()) == [orphan]
    assert _positions(jobs, Priority.HIGH) == [orphan]


def test_a_job_its_worker_started_is_left_alone(jobs: JobQueue) -> None:
    job_id = _submit(jobs)
    sweeper = _sweeper(jobs)
    _taken_by_a_dying_worker(jobs, job_id)
    sweeper.sweep()
    jobs.redis.hset(Job.key_for(job_id), "status", "started")  # a live worker got to it in time
    assert sweeper.sweep() == [] and _positions(jobs) == []


def test_running_jobs_leave_the_index_and_vanished_ones_are_forgotten(jobs: JobQueue) -> None:
    running, vanished = _submit(jobs), _submit(jobs)
    jobs.store.mark_running(running, Provenance(worker="w1"))
    jobs.redis.delete(jobs.store.keys.job(vanished))
    assert jobs.store.queued_before(float("inf"), 10) == [vanished]
    assert _sweeper(jobs).sweep() == []
    assert jobs.store.queued_before(float("inf"), 10) == []
    assert jobs.store.require_job(running).state is JobState.RUNNING
