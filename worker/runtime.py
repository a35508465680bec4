"""The worker process's runtime: what every job needs and is built once per process.

RQ calls the job function with the job id only, so the loaded model, the job store and
the worker's identity cannot travel with the job. The runner (``maskfarm.worker.runner``)
builds one ``WorkerRuntime`` before it serves any job and installs it here; the job
function (``maskfarm.worker.job.run_job``) reads it with ``current_runtime()``. Installing
is explicit and happens once; a job that runs without a runtime is a programming error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from maskfarm.core.jobs import JobRecord, Provenance
from maskfarm.jobqueue.store import JobStore
from maskfarm.worker.batching import CoJobs
from maskfarm.worker.codec_pool import CodecPool
from maskfarm.worker.pipeline import Segmenter
from maskfarm.worker.shared_storage import SharedStorage


class RunStarts:
    """The jobs the runner started in RQ's own start transaction (``MaskfarmWorker
    .prepare_job_execution``), each with the job as its start left it (None: not to be
    run); their job function takes that instead of starting the job itself."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobRecord | None] = {}

    def put(self, job_id: str, job: JobRecord | None) -> None:
        self._jobs[job_id] = job

    def take(self, job_id: str) -> tuple[bool, JobRecord | None]:
        """Whether the runner started ``job_id`` (once), and the job it left."""
        if job_id not in self._jobs:
            return False, None
        return True, self._jobs.pop(job_id)

    def clear(self) -> None:
        self._jobs.clear()


def _no_heartbeat() -> None:
    """Default heartbeat: nothing to keep alive (tests, scripts)."""


@dataclass(frozen=True)
class WorkerRuntime:
    """The process-wide state of a worker.

    ``heartbeat`` is called by the job after every frame so the RQ registries and the
    worker's info see a long job as alive; the runner supplies it and decides how often
    it really writes (it must be cheap to call). ``co_jobs`` tells a job which other
    jobs to compute with it (cross-job batching; empty unless the runner gathered some).
    ``storage`` is where jobs may read frames and write masks by path (shared storage;
    no roots: refused). ``codec`` decodes frames and encodes masks (on threads, when
    it has more than one). ``starts`` tells a job that the runner already started it.
    """

    segmenter: Segmenter
    store: JobStore
    provenance: Provenance
    heartbeat: Callable[[], None] = field(default=_no_heartbeat)
    co_jobs: CoJobs = field(default_factory=CoJobs)
    storage: SharedStorage = field(default_factory=SharedStorage)
    codec: CodecPool = field(default_factory=CodecPool)
    starts: RunStarts = field(default_factory=RunStarts)


_runtime: WorkerRuntime | None = None


def install_runtime(runtime: WorkerRuntime) -> None:
    """Makes ``runtime`` the one every job of this process uses."""
    global _runtime
    _runtime = runtime


def current_runtime() -> WorkerRuntime:
    """The installed runtime; raises ``RuntimeError`` when no runner installed one."""
    if _runtime is None:
        raise RuntimeError("no WorkerRuntime installed: jobs run inside `maskfarm worker` (see runner.py)")
    return _runtime
