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
- batches small jobs waiting together (``maskfarm.worker.batching``): the co-jobs it
  claims are RQ-started at once, on the same lease as the running job, then performed
  one by one after the lead, each through RQ's own ``perform_job``;
- starts a job in one transaction where RQ sends two, ends it without reading its RQ
  dependents (maskfarm's jobs have none: ``MaskfarmQueue``) and says "idle" with its next
  beat, so RQ's protocol costs a job few round trips (docs/BENCHMARKS.md, "Control plane");
- keeps its ``WorkerRecord`` (model, device, current job) in the store, refreshed with every
  RQ heartbeat and removed on exit, and touches its liveness file (``health_file``) with
  each heartbeat that reached Redis.

SIGTERM/SIGINT are RQ's warm shutdown: the current job finishes, then the worker exits.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from importlib.metadata import PackageNotFoundError, version

from redis.client import Pipeline
from redis.exceptions import RedisError, ResponseError

from maskfarm.core.frame_files import configure_pillow
from maskfarm.core.jobs import Provenance, WorkerRecord
from maskfarm.jobqueue.redis_clients import redacted_url, redis_from_url
from maskfarm.jobqueue.rq_adapter import (
    JOB_FUNCTION,
    Execution,
    Job,
    JSONSerializer,
    MaskfarmQueue,
    NoSuchJobError,
    Queue,
    SimpleWorker,
    WorkerStatus,
    queues_of,
    rq_now,
)
from maskfarm.jobqueue.store import JobStore
from maskfarm.worker import liveness
from maskfarm.worker.batching import Claimed, CoJobs, Gatherer
from maskfarm.worker.codec_pool import CodecPool
from maskfarm.worker.lost_jobs import LostJobHandler
from maskfarm.worker.metrics import BATCHED_JOBS, PrometheusObserver, serve_metrics
from maskfarm.worker.orphans import OrphanSweeper
from maskfarm.worker.pipeline import Segmenter
from maskfarm.worker.runtime import RunStarts, WorkerRuntime, install_runtime
from maskfarm.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

HEARTBEAT_SPACING_S = 1.0
"""Worker heartbeats closer than this with nothing new to say are skipped."""

_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


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
    heartbeats that also refresh maskfarm's ``WorkerRecord``.

    ``stop_requested`` turns True when SIGTERM/SIGINT asks it to stop; ``work`` returning
    without it means RQ's loop gave up (Redis went away) and the worker should start again.
    """

    def __init__(
        self,
        *args,
        store: JobStore,
        provenance: Provenance,
        heartbeat_s: float,
        job_lease_s: int,
        gatherer: Gatherer | None = None,
        co_jobs: CoJobs | None = None,
        starts: RunStarts | None = None,
        sweeper: OrphanSweeper | None = None,
        health_file: str = "",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.store = store
        self.provenance = provenance
        self.heartbeat_s = heartbeat_s
        self.job_lease_s = job_lease_s
        self.gatherer = gatherer
        self.co_jobs = co_jobs or CoJobs()
        self.starts = starts or RunStarts()
        self.sweeper = sweeper
        self.health_file = health_file
        self._last_job_beat = 0.0
        self._last_beat = 0.0
        self._last_info: tuple[WorkerRecord, int] | None = None
        self._idle_unsaid = False
        self._dequeued = False
        self._beat_held = False
        self._held_start: Pipeline | None = None
        self.stop_requested = False

    def info(self) -> WorkerRecord:
        """What ListWorkers shows of this worker; its current job from this process's own
        executions (RQ's ``get_current_job_id`` asks Redis when idle)."""
        p = self.provenance
        current = next(iter(self.executions.values())).job_id if self.executions else ""
        return WorkerRecord(
            name=self.name,
            device=p.device,
            model=p.model,
            revision=p.revision,
            dtype=p.dtype,
            maskfarm_version=p.maskfarm_version,
            current_job=current,
        )

    def register_birth(self) -> None:
        # maskfarm's info first: ListWorkers never shows this worker without its model.
        self.store.register_worker(self.info(), ttl=self.worker_ttl + 60)
        super().register_birth()

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        """RQ's heartbeat and maskfarm's worker info in one round trip. RQ beats several
        times around every job; a beat that comes within ``HEARTBEAT_SPACING_S`` of the
        last with nothing new to say (same info, same TTL) is skipped when on its own, and
        leaves the info out when it joins RQ's pipeline (the TTLs it renews are far longer).

        After a job (``execute_job``) RQ's loop beats on its own, then at once again in the
        pipeline of its suspension check: the first is held for the second, which also
        says "idle", so a job ends in one round trip, not three. Likewise the beat RQ sends
        on its own as it dequeues a job is held for the job's start transaction, which
        follows at once and beats too (``reorder_queues``). A beat is held once; the next
        beat, in a pipeline or on its own, goes out with everything. A job's start held by
        ``prepare_execution`` goes out at the head of the first pipeline a beat joins."""
        if pipeline is not None and self._held_start is not None:
            pipeline.command_stack[:0] = self._held_start.command_stack  # the job's start first
            self._held_start = None
        if pipeline is None and (self._idle_unsaid or self._dequeued) and not self._beat_held:
            self._beat_held = True
            return
        info = self.info()
        ttl = timeout or self.worker_ttl + 60
        recent = time.monotonic() - self._last_beat < HEARTBEAT_SPACING_S
        fresh = (info, ttl) == self._last_info and recent and not (self._idle_unsaid or self._beat_held)
        if pipeline is None and fresh:
            return
        if pipeline is None:
            with self.connection.pipeline() as own:
                self._beat(timeout, own, info, ttl)
                own.execute()
        elif fresh:
            super().heartbeat(timeout, pipeline)
            return
        else:
            self._beat(timeout, pipeline, info, ttl)
        self._last_info, self._last_beat = (info, ttl), time.monotonic()
        self._idle_unsaid = self._dequeued = self._beat_held = False
        liveness.touch(self.health_file)

    def _beat(self, timeout: int | None, pipeline, info: WorkerRecord, ttl: int) -> None:
        super().heartbeat(timeout, pipeline)
        self.store.register_worker(info, ttl=ttl, pipeline=pipeline)
        if self._idle_unsaid:
            super().set_state(self._state, pipeline)

    def reorder_queues(self, reference_queue: Queue) -> None:
        """RQ's; RQ calls it as it dequeues a job, just before the beat ``heartbeat`` holds."""
        super().reorder_queues(reference_queue)
        self._dequeued = True

    def set_state(self, state: str, pipeline=None) -> None:
        """RQ's, less a write of its own that repeats the last: RQ says "idle" as a job
        ends and again as it waits for the next (a round trip per job)."""
        if pipeline is None and state == self._state:
            return
        super().set_state(state, pipeline)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """SimpleWorker's (prepare, perform), with its closing "idle" said by the next
        heartbeat instead of a round trip of its own (``heartbeat``)."""
        execution = self.prepare_execution(job)
        try:
            self.perform_job(job, queue, execution)
        finally:
            self._held_start = None  # never sent if the job failed before RQ started it
            self.starts.clear()
        self._state = WorkerStatus.IDLE
        self._idle_unsaid = True

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """RQ's, without the job's heartbeat when the job has no callbacks: that beat
        keeps the job in RQ's started registry while its callbacks run, and RQ's
        transaction that ends the job follows at once (a round trip per job)."""
        if job.success_callback is None and job.failure_callback is None:
            job.ended_at = rq_now()
            return
        super().handle_execution_ended(job, queue, heartbeat_ttl)

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
        """RQ's (the job's execution in RQ's registries, this worker "busy"), its writes
        held for the job's next transaction, RQ's ``prepare_job_execution`` (whose
        ``heartbeat`` adds them): a job starts in one round trip, not two. Until then
        (a batch being gathered) the job is in no RQ list, as it is between RQ's dequeue
        and its own start; a worker that dies there leaves it to the orphan sweep."""
        self._last_job_beat = time.monotonic()
        held = self.connection.pipeline()
        execution = Execution.create(job, self.get_heartbeat_ttl(job), pipeline=held, worker_name=self.name)
        self.executions[execution.id] = execution
        self.set_state(WorkerStatus.BUSY, pipeline=held)
        self._held_start = held
        return execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """RQ's (the job started in RQ's registries, with a beat) and, for a maskfarm job
        that starts a run of its own, maskfarm's start of it (``JobStore.start_in``) in
        the same transaction: one round trip, not two. The job function takes the outcome
        (``RunStarts``); should the start not be said (its script missing in Redis after a
        restart or failover), the job function starts the job itself. A co-job whose run
        began in its lead's batch goes RQ's way: its run is already started."""
        if job.func_name != JOB_FUNCTION or self.co_jobs.ran_in_batch(job.id):
            super().prepare_job_execution(job, remove_from_intermediate_queue)
            return
        with self.connection.pipeline() as pipeline:
            heartbeat_ttl = self.get_heartbeat_ttl(job)
            self.heartbeat(heartbeat_ttl, pipeline=pipeline)
            job.heartbeat(rq_now(), heartbeat_ttl, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            pipeline.persist(job.key)
            if remove_from_intermediate_queue:
                intermediate = self.queue_class(job.origin, connection=self.connection).intermediate_queue_key
                pipeline.lrem(intermediate, 1, job.id)
            started = self.store.start_in(pipeline, job.id, self.provenance)
            replies = pipeline.execute(raise_on_error=False)
        rq_errors = [reply for reply in replies[:-4] if isinstance(reply, Exception)]
        if rq_errors:
            raise rq_errors[0]
        with contextlib.suppress(ResponseError):  # NoScriptError: the job function starts it
            self.starts.put(job.id, started(replies))

    def beat_running_job(self) -> None:
        """Renews the leases of the running job and of the co-jobs batched with it, and
        this worker's records, at most every ``heartbeat_s`` (the job calls it after
        every frame)."""
        if time.monotonic() - self._last_job_beat < self.heartbeat_s:
            return
        for execution in list(self.executions.values()):
            self.maintain_heartbeats(execution.job, execution)
        self._last_job_beat = time.monotonic()

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """RQ's ``perform_job``; for a small job, also of the co-jobs gathered to run in
        its batch, after it and in order (``maskfarm.worker.batching``)."""
        batch = self._gather(job)
        if not batch:
            return super().perform_job(job, queue, execution)
        self.co_jobs.hold(job.id, [co_job.id for co_job, _, _ in batch if co_job.func_name == JOB_FUNCTION])
        try:
            performed = super().perform_job(job, queue, execution)
        finally:
            self.co_jobs.hold("", [])
        for co_job, co_queue, co_execution in batch:
            super().perform_job(co_job, co_queue, co_execution)
        self.co_jobs.clear()
        return performed

    def _gather(self, lead: Job) -> list[tuple[Job, Queue, Execution]]:
        """Claims and RQ-starts the co-jobs of ``lead``'s batch (none when batching is off,
        ``lead`` is not a small maskfarm job or nothing waits). A lead whose RQ job says it
        has a batch's frames or more (``meta["frames"]``, set by the server; a retried job
        with fewer left is not batched) costs no round trip. Never fails the lead: a
        Redis error here leaves it alone (a claimed id whose start failed stays in RQ's
        intermediate list, which RQ's maintenance cleans)."""
        if self.gatherer is None or not self.gatherer.enabled or lead.func_name != JOB_FUNCTION:
            return []
        if lead.meta.get("frames", 0) >= self.gatherer.frames:
            return []  # too big to share a batch, as the frame count the server put on the RQ job says
        try:
            batch = self._claim_batch(lead) if self.gatherer.waiting() else []
        except RedisError as error:
            log.warning("worker %s: gathering a batch for job %s failed: %s", self.name, lead.id, error)
            return []
        BATCHED_JOBS.observe(1 + len(batch))
        if batch:
            log.info(
                "worker %s: batch of %d jobs: %s with %s",
                self.name,
                1 + len(batch),
                lead.id,
                ", ".join(co_job.id for co_job, _, _ in batch),
            )
        return batch

    def _claim_batch(self, lead: Job) -> list[tuple[Job, Queue, Execution]]:
        assert self.gatherer is not None, "batches are claimed only with a gatherer"
        (lead_frames,) = self.store.pending_frames([lead.id])
        claimed = self.gatherer.gather(lead_frames) if lead_frames else []
        return [started for c in claimed if (started := self._start_co_job(c)) is not None]

    def _start_co_job(self, claimed: Claimed) -> tuple[Job, Queue, Execution] | None:
        """Makes a claimed job RQ-started by this worker, as ``prepare_execution`` and
        ``prepare_job_execution`` would, in one transaction that also takes it off the
        intermediate list: from then on RQ sees it running here, on this worker's lease."""
        intermediate = claimed.queue.intermediate_queue_key
        try:
            job = self.job_class.fetch(claimed.job_id, connection=self.connection, serializer=self.serializer)
        except NoSuchJobError:
            self.connection.lrem(intermediate, 1, claimed.job_id)
            return None
        with self.connection.pipeline() as pipeline:
            execution = Execution.create(job, self.get_heartbeat_ttl(job), pipeline=pipeline, worker_name=self.name)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            pipeline.persist(job.key)
            pipeline.lrem(intermediate, 1, job.id)
            pipeline.execute()
        self.executions[execution.id] = execution
        return job, claimed.queue, execution

    def run_maintenance_tasks(self) -> None:
        """RQ's maintenance, then the sweep for queued jobs that no queue holds
        (``maskfarm.worker.orphans``)."""
        super().run_maintenance_tasks()
        if self.sweeper is not None:
            try:
                self.sweeper.sweep()
            except RedisError as error:
                log.warning("worker %s: the orphan sweep failed: %s", self.name, error)

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
            if self.pubsub_thread is not None:
                self.pubsub_thread.stop()


def codec_threads(settings: WorkerSettings, segmenter: Segmenter) -> int:
    """``settings.codec_threads``, or its default for the model's device: 1 on a CPU (the
    model uses its cores); with GPUs, this process's cores shared among the GPUs it sees,
    since bench/gpu_feed.py measured 6-27 cores per GPU at 500 frames/s (README, Scaling)."""
    if settings.codec_threads is not None:
        return settings.codec_threads
    if segmenter.loaded.device.type == "cpu":
        return 1
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    gpus = torch.cuda.device_count() if segmenter.loaded.device.type == "cuda" else 1
    return max(1, cores // max(1, gpus))


def build_worker(settings: WorkerSettings, segmenter: Segmenter, codec: CodecPool) -> MaskfarmWorker:
    """The RQ worker for ``settings`` with its runtime installed (model already loaded;
    ``codec``, like the model, lives as long as the process, across restarts)."""
    redis = redis_from_url(settings.redis_url)
    store = JobStore(redis, settings.namespace)
    name = settings.worker_name
    provenance = provenance_of(segmenter, name)
    queues = list(queues_of(redis, settings.namespace, settings.queue_names).values())
    batch_frames = segmenter.max_batch if settings.batch_frames is None else settings.batch_frames
    gatherer = Gatherer(store, queues, batch_frames, settings.batch_wait_ms / 1000)
    co_jobs = CoJobs()
    starts = RunStarts()
    worker = MaskfarmWorker(
        queues,
        name=name,
        connection=redis,
        serializer=JSONSerializer,
        queue_class=MaskfarmQueue,
        worker_ttl=settings.job_lease_s,
        job_monitoring_interval=math.ceil(settings.heartbeat_s),
        maintenance_interval=settings.maintenance_s,
        store=store,
        provenance=provenance,
        heartbeat_s=settings.heartbeat_s,
        job_lease_s=settings.job_lease_s,
        gatherer=gatherer,
        co_jobs=co_jobs,
        starts=starts,
        sweeper=OrphanSweeper(store, queues),
        health_file=settings.health_file,
    )
    worker.push_exc_handler(LostJobHandler(store))
    configure_pillow(settings.image_limits)
    install_runtime(
        WorkerRuntime(
            segmenter,
            store,
            provenance,
            heartbeat=worker.beat_running_job,
            co_jobs=co_jobs,
            storage=settings.storage,
            starts=starts,
            codec=codec,
        )
    )
    return worker


def run(settings: WorkerSettings) -> int:
    """Loads and warms the model, then serves until stopped (or, with ``burst``, until
    the queues are empty). Returns the exit status; raises ``RedisUnreachable`` or
    ``ModelLoadError``.

    RQ's work loop quits when Redis goes away outside its dequeue wait (mid-job, say);
    the model stays loaded and a new worker with the same name starts once Redis answers
    again, so a Redis restart never needs the worker restarted.
    """
    check_redis(settings.redis_url)
    segmenter = Segmenter.load(
        settings.model, settings.device, settings.dtype, settings.max_batch, settings.compile, settings.frame_threads
    )
    segmenter.warm()
    if settings.metrics_listen:
        serve_metrics(settings.metrics_listen, segmenter.loaded.device)
        segmenter.observer = PrometheusObserver()
    codec = CodecPool(codec_threads(settings, segmenter))
    backoff = _Backoff()
    worker = None
    while True:
        try:
            worker = build_worker(settings, segmenter, codec)
        except RedisError as error:  # gone again, or a failover the Sentinels do not all know of yet
            if worker is None:
                raise
            log.warning("worker %s: Redis unreachable as it starts again: %s", worker.name, error)
            if not _wait_for_redis(worker, backoff):
                return 0
            continue
        p = worker.provenance
        assert worker.gatherer is not None, "build_worker gives every worker one"
        batching = f"batches of up to {worker.gatherer.frames} frames" if worker.gatherer.enabled else "no batching"
        log.info(
            "worker %s ready: %s on %s (%s), queues %s, %s",
            worker.name,
            p.model,
            p.device,
            p.dtype,
            ", ".join(settings.queue_names),
            batching,
        )
        try:
            worker.work(burst=settings.burst, with_scheduler=False, logging_level=None)
        except RedisError as error:
            log.warning("worker %s: Redis unreachable: %s", worker.name, error)
        if worker.stop_requested or settings.burst:
            return 0
        log.warning("worker %s stopped serving; starting again once Redis answers", worker.name)
        if not _wait_for_redis(worker, backoff):
            return 0


class RedisUnreachable(RuntimeError):
    """The worker's Redis did not answer when the worker started."""


def check_redis(url: str, timeout_s: float = 5.0) -> None:
    """Raises ``RedisUnreachable`` unless the Redis at ``url`` answers a PING within
    ``timeout_s``: asked before the model loads, so a wrong URL costs seconds, not a load.
    (Once serving, a worker waits for Redis to come back instead.)"""
    client = redis_from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    except RedisError as error:
        raise RedisUnreachable(f"cannot reach Redis at {redacted_url(url)}: {error}") from None
    finally:
        client.close()


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
