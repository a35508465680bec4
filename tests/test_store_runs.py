"""JobStore: which run of a job may go on (a worker taken for dead must stop)."""

from __future__ import annotations

from maskfarm.core.jobs import ErrorCode
from maskfarm.jobqueue.store import JobStore, StopReason
from tests.test_store import PROVENANCE, create


def test_a_run_goes_on_until_a_later_run_starts_or_the_job_is_cancelled(store: JobStore) -> None:
    job = create(store)
    first = store.mark_running(job.id, PROVENANCE)
    assert store.stop_reason(job.id, first.attempts) is None

    second = store.mark_running(job.id, PROVENANCE)
    assert store.stop_reason(job.id, first.attempts) is StopReason.SUPERSEDED
    assert store.stop_reason(job.id, second.attempts) is None

    store.cancel(job.id)
    assert store.stop_reason(job.id, second.attempts) is StopReason.CANCELLED


def test_a_run_whose_job_ended_or_vanished_stops_without_being_told_it_was_cancelled(store: JobStore) -> None:
    job = create(store)
    run = store.mark_running(job.id, PROVENANCE)
    store.cancel(job.id)  # asked, then the job ended otherwise before this run looked
    store.mark_failed(job.id, ErrorCode.WORKER_LOST, "taken for dead")
    assert store.stop_reason(job.id, run.attempts) is StopReason.NOT_RUNNING
    store.redis.delete(store.keys.job(job.id))
    assert store.stop_reason(job.id, run.attempts) is StopReason.NOT_RUNNING


def test_stop_reasons_keep_the_values_logs_and_callers_know() -> None:
    assert [reason.value for reason in StopReason] == ["not_running", "superseded", "cancelled"]
