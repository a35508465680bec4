"""``maskfarm worker``: load the model once, then serve maskfarm's RQ queues in-process.

RQ's default ``Worker`` forks a work-horse per job, which would reload the model and
breaks CUDA; ``MaskfarmWorker`` is a ``SimpleWorker`` (jobs run in this process) that:

- serves the queues high, normal, low in that order (``queue_name`` of the namespace);
- beats more often than RQ's defaults (``HEARTBEAT_S``): the running job's registry entry
  is refreshed from inside the job (a SimpleWorker never does it), the worker's TTL and
  RQ's maintenance pass (which re-queues jobs of dead workers) are short, so a job whose
  worker died runs again within about a minute;
- keeps its ``WorkerInfo`` (model, device, current job) in the store, refreshed with every
  RQ heartbeat and removed on exit.

SIGTERM/SIGINT are RQ's warm shutdown: the current job finishes, then the worker exits.
"""

from __future__ import annotations

import logging
import socket
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from redis import Redis
from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from maskfarm.server.jobs import DEFAULT_NAMESPACE, PRIORITIES, Provenance, WorkerInfo, queue_name
from maskfarm.server.store import JobStore
from maskfarm.worker.pipeline import Segmenter
from maskfarm.worker.runtime import WorkerRuntime, install_runtime

log = logging.getLogger(__name__)

HEARTBEAT_S = 10
"""How often a busy worker refreshes its job's registry entry; RQ TTLs are this + 60 s."""
WORKER_TTL_S = 60
"""An idle worker's RQ record lives this long; it re-beats every ``WORKER_TTL_S - 15`` s."""
MAINTENANCE_S = 30
"""How often a worker runs RQ's maintenance (requeues abandoned jobs, cleans registries)."""

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
    name: str = ""
    """Unique among live workers; empty: ``<host>.<pid>``."""
    burst: bool = False
    """Exit when the queues are empty (tests, batch runs)."""

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
    """A SimpleWorker whose heartbeats also refresh maskfarm's ``WorkerInfo``."""

    def __init__(self, *args, store: JobStore, provenance: Provenance, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.store = store
        self.provenance = provenance

    def info(self) -> WorkerInfo:
        p = self.provenance
        return WorkerInfo(name=self.name, device=p.device, model=p.model, revision=p.revision, dtype=p.dtype,
                          maskfarm_version=p.maskfarm_version, current_job=self.get_current_job_id() or "")

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        super().heartbeat(timeout, pipeline)
        self.store.register_worker(self.info(), ttl=timeout or self.worker_ttl + 60)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # SimpleWorker keeps a running job's registry entry for its whole timeout (+60 s),
        # so a dead worker's job waits that long; maskfarm beats from inside the job instead.
        return self.job_monitoring_interval + 60

    def beat_running_job(self) -> None:
        """Refreshes the running job's RQ registry entry and this worker's records."""
        execution = self.execution
        job = self.get_current_job()
        if execution is not None and job is not None:
            self.maintain_heartbeats(job, execution)

    def teardown(self) -> None:
        try:
            self.store.unregister_worker(self.name)
        finally:
            super().teardown()


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
        worker_ttl=WORKER_TTL_S,
        job_monitoring_interval=HEARTBEAT_S,
        maintenance_interval=MAINTENANCE_S,
        store=store,
        provenance=provenance,
    )
    install_runtime(WorkerRuntime(segmenter, store, provenance, heartbeat=worker.beat_running_job))
    return worker


def run(settings: WorkerSettings) -> int:
    """Loads and warms the model, then serves until stopped (or, with ``burst``, until
    the queues are empty). Returns the exit status; raises ``ModelLoadError``."""
    segmenter = Segmenter.load(settings.model, settings.device, settings.dtype, settings.max_batch)
    segmenter.warm()
    worker = build_worker(settings, segmenter)
    p = worker.provenance
    log.info("worker %s ready: %s on %s (%s), queues %s", worker.name, p.model, p.device, p.dtype,
             ", ".join(settings.queue_names))
    worker.work(burst=settings.burst, with_scheduler=False, logging_level=None)
    return 0
