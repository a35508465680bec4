"""``maskfarm worker``: load the model once, then serve maskfarm's RQ queues in-process.

RQ's default ``Worker`` forks a work-horse per job, which would reload the model and
breaks CUDA; ``MaskfarmWorker`` is a ``SimpleWorker`` (jobs run in this process) that:

- serves the queues high, normal, low in that order (``queue_name`` of the namespace);
- holds its running job on a short lease: the job beats from inside every
  ``heartbeat_s`` (a SimpleWorker never refreshes its job itself), and a job not heard
  from for ``job_lease_s`` counts as abandoned;
- runs RQ's maintenance pass (which re-queues abandoned jobs) every ``maintenance_s``,
  idle or not: its dequeue wait is no longer than that, so a lost job runs again within
  ``job_lease_s + maintenance_s`` (plus one batch) of its worker's death;
- fails a job as ``WORKER_LOST`` when its last retry is abandoned (``LostJobHandler``);
- keeps its ``WorkerInfo`` (model, device, current job) in the store, refreshed with every
  RQ heartbeat and removed on exit.

SIGTERM/SIGINT are RQ's warm shutdown: the current job finishes, then the worker exits.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from redis import Redis
from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from maskfarm.server.jobs import DEFAULT_NAMESPACE, PRIORITIES, Provenance, WorkerInfo, queue_name
from maskfarm.server.store import JobStore
from maskfarm.worker.lost_jobs import LostJobHandler
from maskfarm.worker.metrics import PrometheusObserver, serve_metrics
from maskfarm.worker.pipeline import Segmenter
from maskfarm.worker.runtime import WorkerRuntime, install_runtime

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
"""How often a busy worker refreshes its job's lease (from inside the job, between frames)."""
JOB_LEASE_S = 30
"""A running job not heard from for this long is abandoned: its worker is taken as dead."""
MAINTENANCE_S = 15
"""How often every worker, idle or busy between jobs, runs RQ's maintenance pass."""

_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class WorkerSettings:
    """One worker process's configuration (``maskfarm worker`` flags)."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = DEFAULT_NAMESPACE
    model: str = "CIDAS/clipseg-rd64-refined"
    device: str = "auto"
    dtype: str = "auto"
    max_batch: int | None = None
    compile: bool = False
    """torch.compile the vision tower (``--compile``)."""
    name: str = ""
    """Unique among live workers; empty: ``<host>.<pid>``."""
    burst: bool = False
    """Exit when the queues are empty (tests, batch runs)."""
    heartbeat_s: float = HEARTBEAT_S
    job_lease_s: int = JOB_LEASE_S
    maintenance_s: int = MAINTENANCE_S
    metrics_listen: str = ""
    """host:port for Prometheus ``/metrics``; empty: none."""

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_s < self.job_lease_s:
            raise ValueError(f"the heartbeat ({self.heartbeat_s} s) must be positive and shorter than "
                             f"the job lease ({self.job_lease_s} s)")
        if self.maintenance_s < 1:
            raise ValueError(f"the maintenance interval must be at least 1 s, got {self.maintenance_s}")

    @property
    def recovery_bound_s(self) -> int:
        """The longest a dead worker's job waits before a live idle worker re-queues it
        (not counting the batch that was running when the last heartbeat was sent)."""
        return self.job_lease_s + 2 * self.maintenance_s

    @property
    def worker_name(self) -> str:
        return self.name or f"{socket.gethostname()}.{os.getpid()}"

    @property
    def queue_names(self) -> list[str]:
        return [queue_name(priority, self.namespace) for priority in PRIORITIES]


def maskfarm_version() -> str:
    try:
        return version("maskfarm")
    except PackageNotFoundError:
        return ""


def provenance_of(segmenter: Segmenter, worker_name: str) -> Provenance:
    """What this worker's masks are made with, as the API reports it."""
    loaded = segmenter.provenance()
    device = loaded["device"]
    if segmenter.loaded.device.type == "cuda":
        import torch

        device = f"{device} ({torch.cuda.get_device_name(segmenter.loaded.device)})"
    return Provenance(
        model=loaded["model"],
        revision=loaded["revision"],
        dtype=_DTYPE_NAMES.get(loaded["dtype"], loaded["dtype"]),
        device=device,
        maskfarm_version=maskfarm_version(),
        worker=worker_name,
    )


class MaskfarmWorker(SimpleWorker):
    """A SimpleWorker with a short job lease, maintenance on time even while idle, and
    heartbeats that also refresh maskfarm's ``WorkerInfo``.

    ``stop_requested`` turns True when SIGTERM/SIGINT asks it to stop; ``work`` returning
    without it means RQ's loop gave up (Redis went away) and the worker should start again.
    """

    def __init__(self, *args, store: JobStore, provenance: Provenance, heartbeat_s: float, job_lease_s: int,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.store = store
        self.provenance = provenance
        self.heartbeat_s = heartbeat_s
        self.job_lease_s = job_lease_s
        self._last_job_beat = 0.0
        self.stop_requested = False

    def info(self) -> WorkerInfo:
        p = self.provenance
        return WorkerInfo(name=self.name, device=p.device, model=p.model, revision=p.revision, dtype=p.dtype,
                          maskfarm_version=p.maskfarm_version, current_job=self.get_current_job_id() or "")

    def register_birth(self) -> None:
        # maskfarm's info first: ListWorkers never shows this worker without its model.
        self.store.register_worker(self.info(), ttl=self.worker_ttl + 60)
        super().register_birth()

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        super().heartbeat(timeout, pipeline)
        self.store.register_worker(self.info(), ttl=timeout or self.worker_ttl + 60)

    @property
    def dequeue_timeout(self) -> int:
        # RQ blocks an idle worker for worker_ttl - 15 s and runs maintenance only between
        # waits; waiting no longer than the maintenance interval keeps maintenance on time.
        return self.maintenance_interval

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # SimpleWorker keeps a running job's registry entry for its whole timeout (+60 s),
        # so a dead worker's job would wait that long; maskfarm beats from inside the job.
        return self.job_lease_s

    def prepare_execution(self, job: Job) -> Execution:
        self._last_job_beat = time.monotonic()
        return super().prepare_execution(job)

    def beat_running_job(self) -> None:
        """Renews the running job's lease and this worker's records, at most every
        ``heartbeat_s`` (the job calls it after every frame)."""
        if time.monotonic() - self._last_job_beat < self.heartbeat_s:
            return
        execution = self.execution
        job = self.get_current_job()
        if execution is not None and job is not None:
            self.maintain_heartbeats(job, execution)
            self._last_job_beat = time.monotonic()

    def request_stop(self, signum, frame) -> None:
        self.stop_requested = True
        super().request_stop(signum, frame)

    def teardown(self) -> None:
        """RQ's teardown, made to finish when Redis is gone: records it can't update
        expire by themselves, and the pub/sub thread is stopped either way."""
        with contextlib.suppress(RedisError):
            self.store.unregister_worker(self.name)
        with contextlib.suppress(RedisError):
            self.register_death()
        try:
            self.unsubscribe()
        except RedisError:
            self.pubsub_thread.stop()


def build_worker(settings: WorkerSettings, segmenter: Segmenter) -> MaskfarmWorker:
    """The RQ worker for ``settings`` with its runtime installed (model already loaded)."""
    redis = Redis.from_url(settings.redis_url)
    store = JobStore(redis, settings.namespace)
    name = settings.worker_name
    provenance = provenance_of(segmenter, name)
    queues = [Queue(q, connection=redis, serializer=JSONSerializer) for q in settings.queue_names]
    worker = MaskfarmWorker(
        queues,
        name=name,
        connection=redis,
        serializer=JSONSerializer,
        worker_ttl=settings.job_lease_s,
        job_monitoring_interval=math.ceil(settings.heartbeat_s),
        maintenance_interval=settings.maintenance_s,
        store=store,
        provenance=provenance,
        heartbeat_s=settings.heartbeat_s,
        job_lease_s=settings.job_lease_s,
    )
    worker.push_exc_handler(LostJobHandler(store))
    install_runtime(WorkerRuntime(segmenter, store, provenance, heartbeat=worker.beat_running_job))
    return worker


def run(settings: WorkerSettings) -> int:
    """Loads and warms the model, then serves until stopped (or, with ``burst``, until
    the queues are empty). Returns the exit status; raises ``ModelLoadError``.

    RQ's work loop quits when Redis goes away outside its dequeue wait (mid-job, say);
    the model stays loaded and a new worker with the same name starts once Redis answers
    again, so a Redis restart never needs the worker restarted.
    """
    segmenter = Segmenter.load(settings.model, settings.device, settings.dtype, settings.max_batch,
                               settings.compile)
    segmenter.warm()
    if settings.metrics_listen:
        serve_metrics(settings.metrics_listen, segmenter.loaded.device)
        segmenter.observer = PrometheusObserver()
    backoff = _Backoff()
    while True:
        worker = build_worker(settings, segmenter)
        p = worker.provenance
        log.info("worker %s ready: %s on %s (%s), queues %s", worker.name, p.model, p.device, p.dtype,
                 ", ".join(settings.queue_names))
        try:
            worker.work(burst=settings.burst, with_scheduler=False, logging_level=None)
        except RedisError as error:
            log.warning("worker %s: Redis unreachable: %s", worker.name, error)
        if worker.stop_requested or settings.burst:
            return 0
        log.warning("worker %s stopped serving; starting again once Redis answers", worker.name)
        if not _wait_for_redis(worker, backoff):
            return 0


class _Backoff:
    """Delays of 1, 2, 4, ... up to ``MAX_S`` seconds between tries."""

    MAX_S = 30.0

    def __init__(self) -> None:
        self.delay = 1.0

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.MAX_S)
        return delay

    def reset(self) -> None:
        self.delay = 1.0


def _wait_for_redis(worker: MaskfarmWorker, backoff: _Backoff) -> bool:
    """Waits until Redis answers and ``worker``'s records are marked dead (so its name can
    be registered again at once): True; or until SIGTERM/SIGINT asks to stop: False.
    (RQ's own signal handlers need Redis, so plain ones stand in meanwhile.)"""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(backoff.next()):
        try:
            worker.register_death()
            worker.store.unregister_worker(worker.name)
        except RedisError as error:
            log.info("worker %s: Redis still unreachable: %s", worker.name, error)
            continue
        backoff.reset()
        return True
    return False
