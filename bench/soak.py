#!/usr/bin/env python
"""Soak test: many small jobs through real processes while a worker and Redis crash.

    python bench/soak.py [--jobs 2000 --clients 8 --workers 2] [--deadline-s 900]

Starts, all on loopback and all private to this run: a ``redis-server`` with AOF and
``appendfsync always`` on a free port, one ``maskfarm server --retries 3`` and
``--workers`` ``maskfarm worker`` processes on the CPU with the tests' short lease
settings, on a tiny synthetic model written into a temporary directory. ``--clients``
threads then submit their share of single-frame jobs (small PNGs, two prompts), each with
its own request id, and wait for each job before submitting the next.

Midway (``--kill-worker-at`` of the jobs done) one busy worker gets SIGKILL and a
replacement is started; later (``--restart-redis-at``) Redis gets SIGKILL and is started
again on the same port. Clients keep retrying (a submit always with the same request id)
until the global deadline, so a job can only be lost or duplicated by the service.

At the end every job is checked: SUCCEEDED, frames exactly [0], progress 1/1, masks equal
byte for byte to those computed in this process with ``Segmenter`` and the worker's own
encoding; ListJobs (by this run's label) must hold exactly one job per request id. Prints
a summary (jobs, jobs/s, lost, duplicates, wrong masks, recovery times) and exits 1 if
anything was lost, duplicated or wrong. Every process it started is stopped on exit,
Ctrl-C included; the global deadline bounds the whole run.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from maskfarm.client.client import Client
from maskfarm.client.errors import DeadlineExceeded, JobNotFound, MaskfarmError, Unavailable
from maskfarm.client.jobs import Job, JobState
from maskfarm.client.retries import Retries
from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1 import segmentation_pb2_grpc as pb_grpc

PROMPTS = ("car", "sky")
FRAME_SIZE = (32, 24)
DISTINCT_FRAMES = 5
MAX_BATCH = 8
FAST_RECOVERY = ("--heartbeat-s", "0.5", "--job-lease-s", "3", "--maintenance-s", "1")
SERVER_RETRIES = 3
REDIS_DOWN_S = 2.0
STARTUP_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 10.0
RETRY_PAUSE_S = 0.25
POLL_PAUSE_S = (0.02, 0.25)
SERVING = health_pb2.HealthCheckResponse.SERVING


# -- the services ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    ready: Callable[[], object], what: str, timeout: float = STARTUP_TIMEOUT_S, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:g} s")
        time.sleep(0.05)


def stop(process: subprocess.Popen | None, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; nothing if it already ended."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class AofRedis:
    """A private redis-server on a fixed loopback port, every write on disk before it is
    acknowledged (AOF, appendfsync always): it can be SIGKILLed and restarted losing nothing."""

    def __init__(self, directory: Path, log: Path) -> None:
        self.directory = directory
        self.log = log
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.directory),
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        with redis.Redis.from_url(self.url) as client:
            wait_until(lambda: _pings(client), f"redis-server on port {self.port}", process=self.process)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        stop(self.process)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def maskfarm_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "maskfarm.cli", *args]


def child_env() -> dict[str, str]:
    """One torch thread per worker (two workers share two cores), no hub access."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Cluster:
    """Redis, the server and the workers of one soak run, with their logs in ``logs``."""

    model: Path
    logs: Path
    namespace: str
    redis: AofRedis
    target: str = ""
    server: subprocess.Popen | None = None
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_server(self) -> None:
        self.target = f"127.0.0.1:{free_port()}"
        command = maskfarm_command(
            "server",
            "--listen",
            self.target,
            "--redis-url",
            self.redis.url,
            "--namespace",
            self.namespace,
            "--retries",
            str(SERVER_RETRIES),
            "--grace-s",
            "1",
            "--log-level",
            "WARNING",
        )
        with open(self.logs / "server.log", "ab") as log:
            self.server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env())
        wait_until(lambda: health(self.target) == SERVING, "maskfarm server", process=self.server)

    def start_worker(self, name: str) -> None:
        command = maskfarm_command(
            "worker",
            "--redis-url",
            self.redis.url,
            "--namespace",
            self.namespace,
            "--name",
            name,
            "--model",
            str(self.model),
            "--device",
            "cpu",
            "--max-batch",
            str(MAX_BATCH),
            "--log-level",
            "WARNING",
            *FAST_RECOVERY,
        )
        with open(self.logs / f"{name}.log", "ab") as log:
            self.workers[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env())

    def listed_workers(self) -> dict[str, str]:
        """Live workers' names -> their current job id ("" when idle); {} when unreachable."""
        try:
            with grpc.insecure_channel(self.target) as channel:
                reply = pb_grpc.SegmentationStub(channel).ListWorkers(pb.ListWorkersRequest(), timeout=5)
            return {worker.name: worker.current_job_id for worker in reply.workers}
        except grpc.RpcError:
            return {}

    def stop_all(self) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                process.terminate()
        for process in self.workers.values():
            stop(process, grace_s=15)
        stop(self.server)
        self.redis.stop()

    def log_tails(self, lines: int = 15) -> str:
        tails = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(tails)


def health(target: str) -> int | None:
    try:
        with grpc.insecure_channel(target) as channel:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
    except grpc.RpcError:
        return None


# -- frames and the masks they must give -----------------------------------------------


def make_frames(count: int) -> list[bytes]:
    """``count`` distinct small noise PNGs."""
    frames = []
    for seed in range(count):
        pixels = np.random.default_rng(seed).integers(0, 256, (FRAME_SIZE[1], FRAME_SIZE[0], 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        frames.append(buffer.getvalue())
    return frames


def expected_masks(model: Path, frames: list[bytes]) -> list[tuple[bytes, ...]]:
    """Per frame, the PNG8 bytes a worker stores for PROMPTS with default parameters:
    the same decoding, pipeline (CPU, fp32, same batch size, one thread) and encoding."""
    import torch

    from maskfarm.core.jobs import OutputFormat
    from maskfarm.core.params import MaskParams
    from maskfarm.worker.encoding import frame_result
    from maskfarm.worker.frames import decode_frame
    from maskfarm.worker.pipeline import Segmenter

    torch.set_num_threads(1)
    segmenter = Segmenter.load(str(model), device="cpu", max_batch=MAX_BATCH)
    expected = []
    for data in frames:
        (result,) = segmenter.stream([decode_frame(data)], list(PROMPTS), MaskParams())
        expected.append(tuple(frame_result(0, result.masks, OutputFormat.PNG8, union=False).masks))
    return expected


# -- the clients -------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a client saw of one request."""

    request_id: str
    frame: int
    job_id: str = ""
    state: str = "NOT SUBMITTED"
    finished_at: float | None = None
    """Wall-clock time the server says the job finished."""


class Tally:
    """Every request's outcome and the errors clients retried, shared by the client threads."""

    def __init__(self, requests: list[Outcome]) -> None:
        self.requests = requests
        self.lock = threading.Lock()
        self.done = 0
        self.retried_errors: collections.Counter[str] = collections.Counter()

    def ended(self, outcome: Outcome, job: Job) -> None:
        with self.lock:
            outcome.state = job.state.value
            outcome.finished_at = job.finished.timestamp() if job.finished else time.time()
            self.done += 1

    def retried(self, error: Exception) -> None:
        with self.lock:
            self.retried_errors[type(error).__name__] += 1


RETRIED = (Unavailable, DeadlineExceeded)


def submit_until_accepted(
    client: Client, outcome: Outcome, frame: bytes, labels: dict[str, str], tally: Tally, deadline: float
) -> Job | None:
    """Submits the job, again with the same request id after every UNAVAILABLE or timeout,
    until the server answers or the deadline passes."""
    while time.monotonic() < deadline:
        try:
            return client.submit(
                [(f"soak.{outcome.frame}.png", frame)], PROMPTS, labels=labels, request_id=outcome.request_id
            )
        except RETRIED as error:
            tally.retried(error)
            time.sleep(RETRY_PAUSE_S)
    return None


def wait_until_ended(client: Client, job_id: str, tally: Tally, deadline: float) -> Job | None:
    """Polls the job until it ends (through UNAVAILABLE and timeouts) or the deadline passes."""
    pause, longest = POLL_PAUSE_S
    while time.monotonic() < deadline:
        try:
            job = client.get(job_id)
            if job.state.terminal:
                return job
        except RETRIED as error:
            tally.retried(error)
        time.sleep(pause)
        pause = min(pause * 1.5, longest)
    return None


def run_client(
    target: str,
    mine: list[Outcome],
    frames: list[bytes],
    labels: dict[str, str],
    tally: Tally,
    deadline: float,
    stopping: threading.Event,
) -> None:
    """One client: submits its requests one after another, waiting for each to end."""
    with Client(target, timeout=CALL_TIMEOUT_S, retries=Retries(attempts=4)) as client:
        for outcome in mine:
            if stopping.is_set():
                return
            try:
                job = submit_until_accepted(client, outcome, frames[outcome.frame], labels, tally, deadline)
                if job is None:
                    continue
                outcome.job_id, outcome.state = job.id, job.state.value
                job = wait_until_ended(client, job.id, tally, deadline)
                if job is not None:
                    tally.ended(outcome, job)
            except JobNotFound:
                outcome.state = "NOT FOUND"
            except MaskfarmError as error:
                outcome.state = f"ERROR {type(error).__name__}: {error}"


# -- the faults and how fast things recover ---------------------------------------------


@dataclass
class Recovery:
    """Times (wall clock) of the faults and what followed them."""

    worker_killed_at: float | None = None
    killed_worker: str = ""
    killed_workers_job: str = ""
    killed_job_state_after_kill: str = ""
    replacement_listed_at: float | None = None
    redis_killed_at: float | None = None
    redis_restarted_at: float | None = None
    first_get_after_restart_at: float | None = None
    serving_after_restart_at: float | None = None
    unavailable_while_down: bool = False


def in_background(task: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=task, daemon=True)
    thread.start()
    return thread


def kill_a_busy_worker(cluster: Cluster, replacement: str, recovery: Recovery) -> None:
    """SIGKILLs a worker caught running a job (any, if none is caught within 2 s) and
    starts ``replacement``; notes when the replacement is listed, in the background."""
    victim, job_id = "", ""
    until = time.monotonic() + 2.0
    while time.monotonic() < until and not job_id:
        busy = {name: job for name, job in cluster.listed_workers().items() if job and name in cluster.workers}
        if busy:
            victim, job_id = next(iter(busy.items()))
    victim = victim or next(name for name, p in cluster.workers.items() if p.poll() is None)
    cluster.workers[victim].kill()
    cluster.workers[victim].wait()
    recovery.worker_killed_at = time.time()
    recovery.killed_worker, recovery.killed_workers_job = victim, job_id
    if job_id:
        recovery.killed_job_state_after_kill = job_state(cluster.target, job_id)
    cluster.start_worker(replacement)

    def note_replacement() -> None:
        wait_until(lambda: replacement in cluster.listed_workers(), "the replacement worker", timeout=120)
        recovery.replacement_listed_at = time.time()

    in_background(note_replacement)


def job_state(target: str, job_id: str) -> str:
    try:
        with grpc.insecure_channel(target) as channel:
            job = pb_grpc.SegmentationStub(channel).GetJob(pb.GetJobRequest(job_id=job_id), timeout=5).job
        return pb.JobState.Name(job.state).removeprefix("JOB_STATE_")
    except grpc.RpcError as error:
        return error.code().name


def restart_redis(cluster: Cluster, probe_job_id: str, recovery: Recovery) -> None:
    """SIGKILLs Redis, leaves it down ``REDIS_DOWN_S``, starts it again on the same port;
    then notes, in the background, the first GetJob answered and health SERVING again."""
    cluster.redis.kill()
    recovery.redis_killed_at = time.time()
    recovery.unavailable_while_down = job_state(cluster.target, probe_job_id) == "UNAVAILABLE"
    time.sleep(REDIS_DOWN_S)
    cluster.redis.start()
    recovery.redis_restarted_at = time.time()

    def note_first_get() -> None:
        wait_until(lambda: job_state(cluster.target, probe_job_id) == "SUCCEEDED", "GetJob after restart", 120)
        recovery.first_get_after_restart_at = time.time()

    def note_serving() -> None:
        wait_until(lambda: health(cluster.target) == SERVING, "SERVING after restart", 120)
        recovery.serving_after_restart_at = time.time()

    in_background(note_first_get)
    in_background(note_serving)


# -- checking the results ---------------------------------------------------------------


@dataclass
class Verdict:
    lost: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    listed_jobs: int = 0
    rerun_jobs: int = 0


def verify(
    cluster: Cluster, requests: list[Outcome], expected: list[tuple[bytes, ...]], labels: dict[str, str]
) -> Verdict:
    """Checks every request's job (state, frames, progress, masks) and that the run's
    label lists exactly one job per request id."""
    verdict = Verdict()
    with Client(cluster.target, timeout=CALL_TIMEOUT_S, retries=Retries(attempts=8)) as client:
        for outcome in requests:
            if outcome.state != "SUCCEEDED":
                where = f": {diagnose(cluster, outcome.job_id)}" if outcome.job_id else ""
                verdict.lost.append(f"{outcome.request_id}: {outcome.state} (job {outcome.job_id or '-'}){where}")
                continue
            job = client.get(outcome.job_id)
            results = list(client.results(outcome.job_id))
            masks = tuple(mask.data for mask in results[0].masks) if len(results) == 1 else ()
            problems = [
                f"state {job.state.value}" if job.state is not JobState.SUCCEEDED else "",
                f"request id {job.request_id!r}" if job.request_id != outcome.request_id else "",
                f"progress {job.done}/{job.total}" if (job.done, job.total) != (1, 1) else "",
                f"frames {[r.index for r in results]}" if [r.index for r in results] != [0] else "",
                "masks differ" if masks != expected[outcome.frame] else "",
            ]
            if any(problems):
                verdict.wrong.append(
                    f"{outcome.request_id} (job {outcome.job_id}): {', '.join(filter(None, problems))}"
                )

        listed = list(client.jobs(labels=labels))
    verdict.listed_jobs = len(listed)
    jobs_per_request: dict[str, set[str]] = collections.defaultdict(set)
    for job in listed:
        jobs_per_request[job.request_id].add(job.id)
    ours = {outcome.request_id: outcome.job_id for outcome in requests}
    for request_id, job_ids in jobs_per_request.items():
        if request_id not in ours:
            verdict.duplicates.append(f"job(s) {sorted(job_ids)} with unknown request id {request_id!r}")
        elif len(job_ids) > 1:
            verdict.duplicates.append(f"{request_id}: {len(job_ids)} jobs {sorted(job_ids)}")
    for request_id, job_id in ours.items():
        if job_id and job_id not in jobs_per_request.get(request_id, ()):
            verdict.wrong.append(f"{request_id}: job {job_id} is not listed under the run's label")
    verdict.rerun_jobs = count_reruns(cluster, [outcome.job_id for outcome in requests if outcome.job_id])
    return verdict


def diagnose(cluster: Cluster, job_id: str) -> str:
    """Where a job that never ended sits in Redis: its record's state and attempts, and
    its RQ job's status and lists (queue, intermediate queue, started registry)."""
    from rq import Queue
    from rq.job import Job as RqJob

    from maskfarm.core.jobs import PRIORITIES
    from maskfarm.jobqueue.rq_adapter import queue_name
    from maskfarm.jobqueue.store import JobStore

    with redis.Redis.from_url(cluster.redis.url) as client:
        record = JobStore(client, cluster.namespace).get_job(job_id)
        found = [f"record {record.state.value if record else 'missing'}, attempts {record.attempts if record else '-'}"]
        rq_job = RqJob.fetch(job_id, connection=client) if RqJob.exists(job_id, connection=client) else None
        found.append(f"rq job {rq_job.get_status() if rq_job else 'missing'}")
        for priority in PRIORITIES:
            queue = Queue(queue_name(priority, cluster.namespace), connection=client)
            for where, ids in (
                ("queue", queue.get_job_ids()),
                ("intermediate", queue.intermediate_queue.get_job_ids()),
                ("started", queue.started_job_registry.get_job_ids()),
            ):
                if job_id in ids:
                    found.append(f"in {queue.name} {where}")
    return "; ".join(found)


def count_reruns(cluster: Cluster, job_ids: list[str]) -> int:
    """Jobs that were started more than once (after a worker or Redis died under them)."""
    from maskfarm.jobqueue.store import JobStore

    with redis.Redis.from_url(cluster.redis.url) as client:
        store = JobStore(client, cluster.namespace)
        return sum(1 for job_id in job_ids if (job := store.get_job(job_id)) and job.attempts > 1)


# -- the run -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-worker-at", type=float, default=0.3, help="fraction of jobs done (default 0.3)")
    parser.add_argument("--restart-redis-at", type=float, default=0.6, help="fraction of jobs done (default 0.6)")
    parser.add_argument("--deadline-s", type=float, default=900.0, help="the whole run stops by then (default 900)")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.clients < 1 or args.workers < 2:
        parser.error("need at least 1 job, 1 client and 2 workers (one is killed)")
    return args


def raise_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    started = time.monotonic()
    deadline = started + args.deadline_s
    run_id = uuid.uuid4().hex[:8]
    labels = {"soak": run_id}
    stopping = threading.Event()
    with tempfile.TemporaryDirectory(prefix="maskfarm-soak-") as scratch:
        scratch_dir = Path(scratch)
        (scratch_dir / "redis").mkdir()
        (scratch_dir / "logs").mkdir()
        from maskfarm.worker.synthetic import write_synthetic_model

        model = write_synthetic_model(scratch_dir / "model", preset="tiny")
        frames = make_frames(DISTINCT_FRAMES)
        expected = expected_masks(model, frames)
        cluster = Cluster(
            model,
            scratch_dir / "logs",
            f"soak{run_id}",
            AofRedis(scratch_dir / "redis", scratch_dir / "logs" / "redis.log"),
        )
        try:
            status = soak(args, cluster, frames, expected, labels, run_id, started, deadline, stopping)
            if status:
                print(cluster.log_tails(), file=sys.stderr)
            return status
        except BaseException:
            print(cluster.log_tails(), file=sys.stderr)
            raise
        finally:
            stopping.set()
            cluster.stop_all()


def soak(
    args: argparse.Namespace,
    cluster: Cluster,
    frames: list[bytes],
    expected: list[tuple[bytes, ...]],
    labels: dict[str, str],
    run_id: str,
    started: float,
    deadline: float,
    stopping: threading.Event,
) -> int:
    cluster.redis.start()
    cluster.start_server()
    for n in range(args.workers):
        cluster.start_worker(f"soak{run_id}-w{n}")
    wait_until(lambda: set(cluster.workers) <= set(cluster.listed_workers()), "the workers to be listed")
    print(
        f"soak {run_id}: redis :{cluster.redis.port} (AOF, appendfsync always), server {cluster.target} "
        f"(--retries {SERVER_RETRIES}), {args.workers} workers (cpu, {' '.join(FAST_RECOVERY)}); "
        f"{args.jobs} jobs x 1 frame {FRAME_SIZE[0]}x{FRAME_SIZE[1]} x {len(PROMPTS)} prompts "
        f"from {args.clients} clients; set-up {time.monotonic() - started:.1f} s",
        flush=True,
    )

    requests = [Outcome(f"soak-{run_id}-{i:05d}", i % DISTINCT_FRAMES) for i in range(args.jobs)]
    tally = Tally(requests)
    clients = [
        threading.Thread(
            target=run_client,
            daemon=True,
            args=(cluster.target, requests[n :: args.clients], frames, labels, tally, deadline, stopping),
        )
        for n in range(args.clients)
    ]
    load_started = time.monotonic()
    load_started_wall = time.time()
    for thread in clients:
        thread.start()

    recovery = Recovery()
    faults = [
        (args.kill_worker_at, lambda: kill_a_busy_worker(cluster, f"soak{run_id}-w{args.workers}", recovery)),
        (args.restart_redis_at, lambda: restart_redis(cluster, first_succeeded(requests), recovery)),
    ]
    while any(thread.is_alive() for thread in clients) and time.monotonic() < deadline:
        if faults and tally.done >= faults[0][0] * args.jobs:
            faults.pop(0)[1]()
            print(
                f"  {time.monotonic() - load_started:6.1f} s  {tally.done} jobs done: "
                f"{'worker killed' if recovery.redis_killed_at is None else 'redis restarted'}",
                flush=True,
            )
        time.sleep(0.02)
    stopping.set()
    for thread in clients:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + CALL_TIMEOUT_S)
    load_s = time.monotonic() - load_started
    if faults:
        print(f"  warning: {len(faults)} fault(s) never injected (the run ended first)", flush=True)

    verdict = verify(cluster, requests, expected, labels)
    print_summary(args, requests, tally, verdict, recovery, load_s, load_started_wall, time.monotonic() - started)
    return 1 if verdict.lost or verdict.duplicates or verdict.wrong or faults else 0


def first_succeeded(requests: list[Outcome]) -> str:
    return next(outcome.job_id for outcome in requests if outcome.state == "SUCCEEDED")


def next_completion_after(requests: list[Outcome], moment: float | None) -> float | None:
    times = [
        o.finished_at for o in requests if o.finished_at is not None and moment is not None and o.finished_at > moment
    ]
    return min(times) - moment if times else None


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def since(moment: float | None, origin: float | None) -> float | None:
    return None if moment is None or origin is None else moment - origin


def print_summary(
    args: argparse.Namespace,
    requests: list[Outcome],
    tally: Tally,
    verdict: Verdict,
    recovery: Recovery,
    load_s: float,
    load_started_wall: float,
    total_s: float,
) -> None:
    succeeded = sum(1 for outcome in requests if outcome.state == "SUCCEEDED")
    killed_job_end = next(
        (o.finished_at for o in requests if o.job_id and o.job_id == recovery.killed_workers_job), None
    )
    print()
    print(
        f"jobs                  {len(requests)} submitted by {args.clients} clients to {args.workers} workers; "
        f"{succeeded} succeeded"
    )
    print(f"throughput            {succeeded / load_s:.1f} jobs/s ({load_s:.1f} s of load; whole run {total_s:.1f} s)")
    unsent = sum(1 for outcome in requests if not outcome.job_id)
    print(
        f"jobs lost             {len(verdict.lost)} (not SUCCEEDED by the deadline; {unsent} of them never "
        f"accepted: their client was still waiting on an earlier job)"
    )
    print(
        f"duplicate results     {len(verdict.duplicates)} "
        f"({verdict.listed_jobs} jobs listed under the run's label for {len(requests)} request ids)"
    )
    print(f"wrong results         {len(verdict.wrong)} (state, request id, progress 1/1, frames [0], mask bytes)")
    print(f"jobs run again        {verdict.rerun_jobs} (started more than once after a kill or restart)")
    print(f"client-side retries   {dict(tally.retried_errors) or 'none'} (after the client's own UNAVAILABLE retries)")
    print(
        f"worker SIGKILL        at {seconds(since(recovery.worker_killed_at, load_started_wall))} into the load: "
        f"{recovery.killed_worker}, running {recovery.killed_workers_job or 'nothing caught'} "
        f"({recovery.killed_job_state_after_kill or '-'} right after the kill)"
    )
    print(f"  next job completed  {seconds(next_completion_after(requests, recovery.worker_killed_at))} after the kill")
    print(f"  its job completed   {seconds(since(killed_job_end, recovery.worker_killed_at))} after the kill")
    print(
        f"  replacement listed  {seconds(since(recovery.replacement_listed_at, recovery.worker_killed_at))} "
        f"after the kill"
    )
    print(
        f"redis SIGKILL         at {seconds(since(recovery.redis_killed_at, load_started_wall))} into the load, "
        f"down {REDIS_DOWN_S:g} s, restarted on the same port "
        f"(server answered {'UNAVAILABLE' if recovery.unavailable_while_down else 'something else'} while down)"
    )
    print(
        f"  first GetJob OK     {seconds(since(recovery.first_get_after_restart_at, recovery.redis_restarted_at))} "
        f"after the restart"
    )
    print(
        f"  health SERVING      {seconds(since(recovery.serving_after_restart_at, recovery.redis_restarted_at))} "
        f"after the restart"
    )
    print(
        f"  next job completed  {seconds(next_completion_after(requests, recovery.redis_restarted_at))} "
        f"after the restart"
    )
    for title, problems in (("LOST", verdict.lost), ("DUPLICATE", verdict.duplicates), ("WRONG", verdict.wrong)):
        for problem in problems[:20]:
            print(f"{title}: {problem}")
        if len(problems) > 20:
            print(f"{title}: ... and {len(problems) - 20} more")
    ok = not (verdict.lost or verdict.duplicates or verdict.wrong)
    print("RESULT                " + ("PASS" if ok else "FAIL"), flush=True)


if __name__ == "__main__":
    sys.exit(main())
