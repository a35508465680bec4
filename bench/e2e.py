#!/usr/bin/env python
"""End-to-end benchmark: jobs through the real server, Redis and workers, beside two ceilings.

    python bench/e2e.py                  # tiny + full synthetic models, 1 and 2 workers (~6-10 min on 2 cores)
    python bench/e2e.py --quick          # the same figures with fewer jobs (~2-3 min)
    python bench/e2e.py --smoke          # tiny model, 1 worker, a handful of jobs (the test runs this)
    python bench/e2e.py --models tiny --workers 1 --worker-arg=--max-batch=16 --json e2e.json

Starts, all on loopback and private to this run: a memory-only ``redis-server`` on a free
port, one ``maskfarm server`` and, per measured configuration, N ``maskfarm worker``
processes (``--device cpu --dtype fp32`` unless told otherwise) with ``cores / N`` torch
threads each, serving a synthetic model cached under ``--model-cache``. Frames are smooth
random PNGs, one prompt by default. Run it on an otherwise idle machine: the load average
is printed, and a busy start is warned about (2-thread torch on contended cores collapses).

Measured, for each model and worker count:

- single-frame jobs, isolated: one job at a time on an idle system; submit-to-mask latency
  (from the ``submit`` call to the last frame's masks arriving on ``WatchJob``), p50/p95/p99,
  split into accept / queued / run / deliver, and the run into the workers' own stages
  (decode, preprocess, model, post-process, encode, store: their /metrics, mean per job).
- single-frame jobs under load: ``--clients`` threads each submitting and watching jobs
  back to back (closed loop, so that many jobs are in flight): jobs/s, frames/s, latency.
- 32-frame jobs: two jobs in flight per worker: frames/s and latency.

And the two ceilings, measured in the same run on the same machine:

- the in-process pipeline: ``Segmenter`` on the same model, frames (decoded) and prompts,
  in a child process with the 1-worker thread count, while no worker runs; warm.
- RQ's own no-op job (``time.time`` with the JSON serializer) on the same Redis, run by
  ``rq worker -w rq.worker.SimpleWorker``: isolated latency (enqueue to the result read
  back with ``Job.latest_result(timeout)``: a blocking XREAD, the RQ twin of WatchJob) and
  drain throughput (K queued jobs / (last ended_at - first started_at) from the job hashes).

Goals (from the issue), printed PASS/MISS:

- system cost per single-frame job = isolated latency p50 - in-process pipeline time p50
  for the same frame (tiny model, small frames, 1 worker) <= 2 x RQ's no-op isolated
  latency p50. Both are "one job submitted to an idle system until its result is in the
  client's hands", p50 over many sequential jobs; the system cost includes PNG decoding
  at the worker and mask encoding (the in-process figure for those is shown beside it).
  The goal is judged on the interleaved rounds (tiny model, 1 worker): one RQ no-op job,
  one in-process call and one maskfarm job after another, each on an otherwise idle
  system, N times; so all three see the same machine, whose speed can drift by a third
  between the minutes the separate ceilings and cases are measured in.
- 32-frame jobs on the full model, 1 worker: frames/s >= 90% of the in-process pipeline's.
- 2-worker scaling is printed beside RQ's own 2-worker drain scaling. On a 2-core machine
  the client, server, Redis and workers share the cores: a GPU host gives the real figure.

Cross-job batching (``maskfarm worker --batch-frames N [--batch-wait-ms MS]``): with
``--batching auto`` (the default) the single-frame cases are run again with batching on,
side by side with ``--batch-frames 0``, when the worker has the flag; otherwise they are
run once with the worker's defaults. ``--worker-arg`` passes any flag to every worker.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from PIL import Image

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
PROMPT_POOL = ("red car", "the sky", "a person", "a tree")
FRAME_POOL = 8
"""Distinct frames, cycled through the jobs (their content does not change the cost)."""
STARTUP_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 600.0
CALL_TIMEOUT_S = 60.0
FULL_GOAL_RATIO = 0.90
COST_GOAL_FACTOR = 2.0
BUSY_LOADAVG = 0.5
"""Warn when the 1-minute load average at the start is at least this much per core."""


# -- what to run -----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How much of each case to run on one model."""

    model: str
    """Synthetic preset: tiny or full."""
    size: int
    """Frames are size x size PNGs."""
    isolated: int
    """Sequential single-frame jobs."""
    load_jobs: int
    """Single-frame jobs submitted by ``clients`` threads."""
    multi_jobs_per_worker: int
    """Multi-frame jobs per worker (two in flight per worker)."""
    frames_per_job: int
    clients: int
    inproc_repeats: int
    """Timed single-frame calls in the in-process ceiling (the multi-frame job is timed
    twice, the faster counts)."""
    cost_rounds: int
    """Rounds of the interleaved cost measurement (tiny model, 1 worker; 0: not run)."""


PLANS = {
    "default": {
        "tiny": Plan("tiny", 256, 60, 300, 4, 32, 16, 60, 200),
        "full": Plan("full", 1024, 6, 16, 3, 32, 8, 6, 0),
    },
    "quick": {"tiny": Plan("tiny", 256, 20, 80, 2, 32, 16, 20, 60), "full": Plan("full", 352, 2, 4, 1, 16, 4, 3, 0)},
    "smoke": {"tiny": Plan("tiny", 64, 5, 12, 1, 8, 4, 5, 5), "full": Plan("full", 352, 1, 2, 1, 8, 2, 1, 0)},
}
RQ_PLANS = {"default": (300, 3000), "quick": (100, 1000), "smoke": (20, 200)}
"""RQ no-op: (isolated jobs, drain jobs per worker count)."""


@dataclass(frozen=True)
class Variant:
    """Worker flags for one side of the batching comparison."""

    name: str
    flags: tuple[str, ...]
    all_cases: bool
    """False: only the single-frame cases (batching is about many small jobs)."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", default=None, help="comma-separated presets (default tiny,full; --smoke: tiny)")
    parser.add_argument("--workers", default=None, help="worker counts, comma-separated (default 1,2; --smoke: 1)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="fewer jobs; full model at 352x352 with 16-frame jobs (~2-3 min)"
    )
    mode.add_argument("--smoke", action="store_true", help="tiny model, 1 worker, a handful of jobs (< 1 min)")
    parser.add_argument(
        "--size",
        default=None,
        help="frame side in pixels: N for every model, or tiny=N,full=M (default tiny=256,full=1024)",
    )
    parser.add_argument("--jobs", type=int, help="single-frame jobs under load, per configuration")
    parser.add_argument("--isolated", type=int, help="sequential single-frame jobs, per configuration")
    parser.add_argument("--multi-jobs", type=int, help="multi-frame jobs per worker, per configuration")
    parser.add_argument("--frames-per-job", type=int, help="frames of a multi-frame job (default 32)")
    parser.add_argument("--clients", type=int, help="client threads for single-frame load (default 16; full 8)")
    parser.add_argument(
        "--prompts", type=int, default=1, choices=range(1, len(PROMPT_POOL) + 1), help="prompts per job (default 1)"
    )
    parser.add_argument("--device", default="cpu", help="workers' and the in-process ceiling's device (default cpu)")
    parser.add_argument(
        "--dtype",
        default="fp32",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="workers' and the in-process ceiling's dtype (default fp32)",
    )
    parser.add_argument(
        "--worker-threads",
        default="auto",
        help="torch threads per worker: auto = cores / workers (default), or a number",
    )
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra flag for every maskfarm worker, repeatable (write --worker-arg=--flag=value)",
    )
    parser.add_argument(
        "--batching",
        choices=("auto", "on", "off"),
        default=None,
        help="compare cross-job batching on the single-frame cases: auto = when the worker "
        "has --batch-frames (default; --smoke: off)",
    )
    parser.add_argument("--batch-frames", type=int, default=16, help="--batch-frames of the batching side (default 16)")
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=None,
        help="--batch-wait-ms of the batching side (default: the worker's own)",
    )
    parser.add_argument("--rq-isolated", type=int, help="sequential RQ no-op jobs")
    parser.add_argument("--rq-jobs", type=int, help="RQ no-op jobs drained per worker count")
    parser.add_argument(
        "--model-cache",
        default="/tmp/maskfarm-bench-models",
        help="where synthetic models are written once and reused (default %(default)s)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    parser.add_argument(
        "--cost-rounds", type=int, help="rounds of the interleaved cost measurement (tiny, 1 worker; 0: skip)"
    )
    parser.add_argument("--in-process-child", help=argparse.SUPPRESS)
    parser.add_argument("--in-process-serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "default"
    args.models = args.models or ("tiny" if args.smoke else "tiny,full")
    args.workers = args.workers or ("1" if args.smoke else "1,2")
    args.batching = args.batching or ("off" if args.smoke else "auto")
    if not (args.in_process_child or args.in_process_serve):
        try:
            args.model_list = [name.strip() for name in args.models.split(",") if name.strip()]
            args.worker_counts = sorted({int(n) for n in args.workers.split(",")})
            args.sizes = parse_sizes(args.size)
        except ValueError as error:
            parser.error(str(error))
        if unknown := [m for m in args.model_list if m not in PLANS["default"]]:
            parser.error(f"--models: unknown preset(s) {unknown} (known: tiny, full)")
        if not args.worker_counts or min(args.worker_counts) < 1:
            parser.error("--workers: counts must be at least 1")
    return args


def parse_sizes(text: str | None) -> dict[str, int]:
    """``"256"`` (every model) or ``"tiny=256,full=1024"``; {} when not given."""
    if not text:
        return {}
    if "=" not in text:
        return {model: int(text) for model in PLANS["default"]}
    sizes = {}
    for item in text.split(","):
        model, _, side = item.partition("=")
        sizes[model.strip()] = int(side)
    return sizes


def plans_for(args: argparse.Namespace) -> list[Plan]:
    """The mode's plan per model, with the command line's overrides."""
    plans = []
    for model in args.model_list:
        plan = PLANS[args.mode][model]
        overrides = dict(
            size=args.sizes.get(model),
            isolated=args.isolated,
            load_jobs=args.jobs,
            multi_jobs_per_worker=args.multi_jobs,
            frames_per_job=args.frames_per_job,
            clients=args.clients,
            cost_rounds=args.cost_rounds,
        )
        plans.append(replace(plan, **{k: v for k, v in overrides.items() if v is not None}))
    return plans


def worker_threads(args: argparse.Namespace, workers: int) -> int:
    return max(1, CORES // workers) if args.worker_threads == "auto" else int(args.worker_threads)


def batching_variants(args: argparse.Namespace, flags: set[str]) -> list[Variant]:
    """One variant with the worker's defaults, or batching off and on side by side."""
    supported = "--batch-frames" in flags
    if args.batching == "off" or (args.batching == "auto" and not supported):
        return [Variant("default", (), True)]
    if not supported:
        raise SystemExit("e2e: --batching on, but `maskfarm worker` has no --batch-frames flag here")
    on = ["--batch-frames", str(args.batch_frames)]
    if args.batch_wait_ms is not None:
        if "--batch-wait-ms" not in flags:
            raise SystemExit("e2e: --batch-wait-ms given, but `maskfarm worker` has no such flag here")
        on += ["--batch-wait-ms", f"{args.batch_wait_ms:g}"]
    return [
        Variant("batch off", ("--batch-frames", "0"), True),
        Variant(f"batch {args.batch_frames}", tuple(on), False),
    ]


def worker_flags() -> set[str]:
    """The long flags ``maskfarm worker --help`` lists (to see whether batching exists yet)."""
    help_text = subprocess.run(
        maskfarm_command("worker", "--help"), capture_output=True, text=True, env=child_env(1), timeout=60
    ).stdout
    return {word.strip("[],") for word in help_text.split() if word.startswith("--")}


# -- frames ----------------------------------------------------------------------------


def frame_png(seed: int, size: int) -> bytes:
    """A smooth random size x size RGB PNG: realistic to decode and small enough that a
    32-frame 1024x1024 job fits one message (pure noise would not)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    coarse.resize((size, size), Image.BILINEAR).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def frame_pool(size: int) -> list[tuple[str, bytes]]:
    return [(f"e2e.{seed:04d}.png", frame_png(seed, size)) for seed in range(FRAME_POOL)]


def job_frames(pool: list[tuple[str, bytes]], job: int, count: int) -> list[tuple[str, bytes]]:
    """Job ``job``'s frames: ``count`` frames of the pool, starting at a different one per job."""
    return [pool[(job + k) % len(pool)] for k in range(count)]


# -- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def maskfarm_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "maskfarm.cli", *args]


def child_env(threads: int) -> dict[str, str]:
    """No hub access; ``threads`` torch threads (workers sharing cores must not oversubscribe)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def wait_until(
    ready: Callable[[], object], what: str, processes: Sequence[subprocess.Popen], timeout: float = STARTUP_TIMEOUT_S
) -> None:
    """Polls ``ready()``; fails when a process it waits on exits or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ready():
        if dead := [p for p in processes if p.poll() is not None]:
            raise RuntimeError(f"{what}: pid {dead[0].pid} exited with code {dead[0].returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:g} s")
        time.sleep(0.05)


def stop(processes: Sequence[subprocess.Popen], grace_s: float = 30.0) -> None:
    """SIGTERM to all at once, then SIGKILL to whichever outstays ``grace_s``."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + grace_s
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Services:
    """Every process this run starts, with their logs in ``logs``; ``stop_all`` stops them
    workers first."""

    def __init__(self, logs: Path, run_id: str) -> None:
        self.logs = logs
        self.run_id = run_id
        self.namespace = f"e2e{run_id}"
        self.redis_url = ""
        self.target = ""
        self.redis: subprocess.Popen | None = None
        self.server: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.worker_metrics: list[str] = []
        """The /metrics URLs of the maskfarm workers running now."""

    def _spawn(self, command: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.logs / log_name, "ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env or child_env(1))

    def start_redis(self) -> None:
        """A memory-only redis-server on a free port (never the system's)."""
        import redis

        port = free_port()
        self.redis = self._spawn(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.logs),
            ],
            "redis.log",
        )
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        with redis.Redis.from_url(self.redis_url) as client:
            wait_until(lambda: _pings(client), "redis-server", [self.redis], timeout=20)

    def start_server(self) -> None:
        self.target = f"127.0.0.1:{free_port()}"
        self.server = self._spawn(
            maskfarm_command(
                "server",
                "--listen",
                self.target,
                "--redis-url",
                self.redis_url,
                "--namespace",
                self.namespace,
                "--grace-s",
                "1",
            ),
            "server.log",
        )
        wait_until(lambda: _serving(self.target), "maskfarm server", [self.server], timeout=60)

    @contextmanager
    def maskfarm_workers(
        self, label: str, count: int, model: Path, flags: Sequence[str], threads: int
    ) -> Iterator[None]:
        """``count`` maskfarm workers, listed by the server (model loaded) before this yields.
        ``flags`` come after ``--model``, so they may override it or ``--device``/``--dtype``."""
        names = [f"{self.namespace}-{label}-{n}" for n in range(count)]
        metrics = [f"127.0.0.1:{free_port()}" for _ in names]
        started = [
            self._spawn(
                maskfarm_command(
                    "worker",
                    "--redis-url",
                    self.redis_url,
                    "--namespace",
                    self.namespace,
                    "--name",
                    name,
                    "--metrics-listen",
                    listen,
                    "--model",
                    str(model),
                    *flags,
                ),
                f"{name}.log",
                child_env(threads),
            )
            for name, listen in zip(names, metrics)
        ]
        self.workers += started
        try:
            wait_until(lambda: set(names) <= listed_workers(self.target), f"{count} maskfarm workers", started)
            self.worker_metrics = [f"http://{listen}/metrics" for listen in metrics]
            yield
        finally:
            self.worker_metrics = []
            stop(started)

    @contextmanager
    def rq_workers(self, queue: str, count: int) -> Iterator[None]:
        """``count`` plain ``rq worker`` processes (SimpleWorker, JSON serializer) on ``queue``."""
        import redis
        from rq import Queue, Worker

        names = [f"{queue}-{n}-{uuid.uuid4().hex[:6]}" for n in range(count)]
        started = [
            self._spawn(
                [
                    sys.executable,
                    "-m",
                    "rq.cli",
                    "worker",
                    "-w",
                    "rq.worker.SimpleWorker",
                    "-S",
                    "rq.serializers.JSONSerializer",
                    "-u",
                    self.redis_url,
                    "-n",
                    name,
                    queue,
                ],
                f"{name}.log",
            )
            for name in names
        ]
        self.workers += started
        try:
            with redis.Redis.from_url(self.redis_url) as connection:
                rq_queue = Queue(queue, connection=connection)
                wait_until(
                    lambda: Worker.count(connection=connection, queue=rq_queue) >= count,
                    f"{count} rq workers",
                    started,
                    timeout=60,
                )
            yield
        finally:
            stop(started)

    def stop_all(self) -> None:
        stop(self.workers)
        stop([p for p in (self.server, self.redis) if p is not None], grace_s=10)

    def log_tails(self, lines: int = 12) -> str:
        tails = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(tails)


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _serving(target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def listed_workers(target: str) -> set[str]:
    from maskfarm.client.client import Client
    from maskfarm.client.errors import MaskfarmError

    try:
        with Client(target, timeout=5, retries=0) as client:
            return {worker.name for worker in client.workers()}
    except MaskfarmError:
        return set()


def synthetic_model(preset: str, cache: Path) -> Path:
    """The preset's synthetic model under ``cache``, written (atomically) if missing."""
    path = cache / preset
    if (path / "SYNTHETIC.json").exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{preset}-", dir=cache))
    subprocess.run(
        maskfarm_command("model", "synthetic", "--preset", preset, str(partial)),
        check=True,
        env=child_env(CORES),
        capture_output=True,
    )
    partial.rename(path)
    return path


# -- figures ---------------------------------------------------------------------------


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 in ms (linear interpolation: with few samples p99 is about the max)."""
    if not seconds:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    p50, p95, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


@dataclass
class Case:
    """One measured case: counts, throughput and latency percentiles."""

    model: str
    case: str
    """single-isolated, single-load or multi."""
    workers: int
    variant: str
    threads: int
    jobs: int
    frames: int
    clients: int
    wall_s: float
    jobs_per_s: float
    frames_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    stages_p50_ms: dict[str, float] = field(default_factory=dict)
    """Where the time went, p50 of each: submit call -> job created (the server stored and
    queued it), created -> started (a worker took it), started -> finished (the worker ran
    it), finished -> masks in the client (negative: the masks came before the job ended)."""
    worker_stages_ms: dict[str, float] = field(default_factory=dict)
    """Isolated single-frame jobs: the workers' own time per stage (decode, preprocess,
    model, postprocess, encode, store), mean per job, from their /metrics."""
    problems: list[str] = field(default_factory=list)


@dataclass
class Ceiling:
    """The in-process pipeline on one model (child process, warm, no worker running)."""

    model: str
    size: int
    threads: int
    torch: str
    device: str
    single_ms: float
    """p50 of one single-frame ``segment`` call."""
    multi_fps: float
    """frames/s of one ``frames_per_job``-frame ``segment`` call (the faster of two)."""
    codec_ms: float | None
    """p50 per frame of what the worker adds around the pipeline: PNG decode + mask encode."""


@dataclass
class RqNoop:
    isolated: dict[str, float] = field(default_factory=dict)
    """Percentiles (ms) of enqueue -> result read back, one job at a time, 1 worker."""
    isolated_rq_ms: float = float("nan")
    """p50 of RQ's own enqueued_at -> ended_at for the same jobs."""
    drain_jobs_per_s: dict[int, float] = field(default_factory=dict)
    """Workers -> jobs / (last ended_at - first started_at) over K queued jobs."""
    drain_jobs: int = 0


@dataclass
class Interleaved:
    """The system cost measured in rounds of (RQ no-op job, in-process call, maskfarm job)."""

    model: str
    rounds: int
    rq_p50_ms: float
    in_process_p50_ms: float
    job_p50_ms: float

    @property
    def cost_ms(self) -> float:
        return self.job_p50_ms - self.in_process_p50_ms


# -- the ceilings ----------------------------------------------------------------------


def ceiling_spec(plan: Plan, model: Path, prompts: list[str], threads: int, args: argparse.Namespace) -> dict:
    """What an in-process child runs (JSON on its command line)."""
    return dict(
        model=str(model),
        preset=plan.model,
        size=plan.size,
        prompts=prompts,
        threads=threads,
        repeats=plan.inproc_repeats,
        frames_per_job=plan.frames_per_job,
        device=args.device,
        dtype=None if args.dtype == "auto" else args.dtype,
    )


def measure_in_process(plan: Plan, model: Path, prompts: list[str], threads: int, args: argparse.Namespace) -> Ceiling:
    """Runs ``in_process_child`` in a child process (its own cores, no worker running)."""
    spec = ceiling_spec(plan, model, prompts, threads, args)
    command = [sys.executable, __file__, "--in-process-child", json.dumps(spec)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=child_env(threads)).stdout
    return Ceiling(**json.loads(output.strip().splitlines()[-1]))


def warm_pipeline(spec: dict):
    """The ceiling's ``Segmenter``, warm, with the pool's PNGs and the same frames decoded as
    the worker decodes them."""
    import torch
    from transformers.utils import logging as hf_logging

    from maskfarm.worker.frames import decode_frame
    from maskfarm.worker.pipeline import Segmenter

    hf_logging.disable_progress_bar()
    torch.set_num_threads(spec["threads"])
    segmenter = Segmenter.load(spec["model"], device=spec["device"], dtype=spec["dtype"])
    segmenter.warm()
    pool = [data for _, data in frame_pool(spec["size"])]
    frames = [decode_frame(data) for data in pool]
    segmenter.segment(frames[:1], spec["prompts"])
    return segmenter, pool, frames


def in_process_child(spec: dict) -> dict:
    """The in-process pipeline on the frames the jobs carry (decoded as the worker decodes
    them): warm, then single-frame calls and one multi-frame call, timed."""
    import torch

    segmenter, pool, frames = warm_pipeline(spec)
    prompts = spec["prompts"]
    single = [timed(lambda i=i: segmenter.segment([frames[i % len(frames)]], prompts)) for i in range(spec["repeats"])]
    job = [frames[k % len(frames)] for k in range(spec["frames_per_job"])]
    segmenter.segment(job[: max(1, segmenter.max_batch // len(prompts))], prompts)  # the chunk's shapes, warm
    multi = min(timed(lambda: segmenter.segment(job, prompts)) for _ in range(2))
    return dict(
        model=spec["preset"],
        size=spec["size"],
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        device=f"{segmenter.loaded.device} {segmenter.loaded.dtype_name}",
        single_ms=1000 * float(np.median(single)),
        multi_fps=len(job) / multi,
        codec_ms=codec_ms(segmenter, pool, prompts),
    )


def in_process_serve(spec: dict) -> None:
    """The in-process pipeline kept warm in a child for the interleaved rounds: each line
    ``i`` on stdin runs pool frame ``i`` through it and answers the seconds it took."""
    segmenter, _, frames = warm_pipeline(spec)
    print("ready", flush=True)
    for line in sys.stdin:
        frame = frames[int(line) % len(frames)]
        print(timed(lambda: segmenter.segment([frame], spec["prompts"])), flush=True)


class InProcessPipeline:
    """A child running ``in_process_serve``: ``time(i)`` is one single-frame call's seconds."""

    def __init__(self, spec: dict, threads: int) -> None:
        command = [sys.executable, __file__, "--in-process-serve", json.dumps(spec)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(threads)
        )
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"in-process pipeline child exited with code {self.process.wait()}")

    def time(self, frame: int) -> float:
        self.process.stdin.write(f"{frame}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def codec_ms(segmenter, pool: list[bytes], prompts: list[str]) -> float | None:
    """p50 of decoding a frame and encoding its masks as PNG8, as the worker does; None
    when those functions are not where this benchmark expects them."""
    try:
        from maskfarm.core.jobs import OutputFormat
        from maskfarm.worker.encoding import frame_result
        from maskfarm.worker.frames import decode_frame
    except ImportError:
        return None
    masks = segmenter.segment([decode_frame(pool[0])], prompts)[0].masks

    def decode_and_encode(data: bytes) -> None:
        decode_frame(data)
        frame_result(0, masks, OutputFormat.PNG8, False)

    return 1000 * float(np.median([timed(lambda d=data: decode_and_encode(d)) for data in pool * 3]))


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure_rq(services: Services, worker_counts: list[int], isolated: int, drain: int) -> RqNoop:
    """RQ's no-op ceiling on the same Redis: isolated latency with 1 worker, then drain
    throughput with each worker count."""
    import redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    result = RqNoop(drain_jobs=drain)
    queue_name = f"{services.namespace}-noop"
    with redis.Redis.from_url(services.redis_url) as connection:
        queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
        for count in sorted(set(worker_counts) | {1}):
            with services.rq_workers(queue_name, count):
                if count == 1:
                    rq_isolated(queue, 20)  # warm: imports, connections
                    result.isolated, result.isolated_rq_ms = rq_isolated(queue, isolated)
                if count in worker_counts:
                    result.drain_jobs_per_s[count] = rq_drain(queue, drain)
            progress(f"rq no-op, {count} worker(s): done")
    return result


def rq_isolated(queue, jobs: int) -> tuple[dict[str, float], float]:
    """One no-op job at a time: the client's enqueue -> result percentiles, and the p50 of
    RQ's own enqueued_at -> ended_at."""
    client_side, rq_side = [], []
    for _ in range(jobs):
        seconds, job = rq_noop_job(queue)
        client_side.append(seconds)
        job.refresh()
        rq_side.append((job.ended_at - job.enqueued_at).total_seconds())
    return percentiles(client_side), 1000 * float(np.median(rq_side))


def rq_noop_job(queue):
    """One no-op job: seconds from enqueue to its result read back, and the job."""
    start = time.perf_counter()
    job = queue.enqueue("time.time")
    if job.latest_result(timeout=30) is None:
        raise RuntimeError(f"rq no-op job {job.id} gave no result in 30 s")
    return time.perf_counter() - start, job


def rq_drain(queue, jobs: int) -> float:
    """Queues ``jobs`` no-op jobs at once (one pipeline) and returns jobs / (last ended_at -
    first started_at): how fast the running workers empty a full queue."""
    from rq import Queue
    from rq.job import Job

    jobs_data = [Queue.prepare_data("time.time", result_ttl=600) for _ in range(jobs)]
    ids = [job.id for job in queue.enqueue_many(jobs_data)]
    deadline = time.monotonic() + 300
    while True:
        fetched = Job.fetch_many(ids, connection=queue.connection, serializer=queue.serializer)
        if all(job is not None and job.ended_at is not None for job in fetched):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("rq no-op drain did not finish in 300 s")
        time.sleep(0.1)
    first = min(job.started_at for job in fetched)
    last = max(job.ended_at for job in fetched)
    return jobs / max((last - first).total_seconds(), 1e-9)


# -- maskfarm --------------------------------------------------------------------------


@dataclass(frozen=True)
class JobTiming:
    submitted: float
    masks: float
    frames: int
    stages: tuple[float, float, float] | None = None
    """Seconds from the submit call to the job's created, started and finished times (the
    server's and the worker's clocks: the same machine's)."""
    problem: str = ""
    """What went wrong (the masks then came from GetJob, or never): printed, and exit 1."""

    @property
    def latency(self) -> float:
        return self.masks - self.submitted


def run_job(client, frames: list[tuple[str, bytes]], prompts: list[str]) -> JobTiming:
    """Submits one job and watches it: the time from the submit call until every frame's
    masks have arrived; the watch then runs on to the terminal state, which must be SUCCEEDED.
    Should the stream end without every frame, the masks are read with GetJob and the job
    is reported as a problem (a lost event is a bug, not a figure)."""
    from maskfarm.client.client import succeeded
    from maskfarm.client.masks import FrameResult

    start, start_wall = time.perf_counter(), time.time()
    job = client.submit(frames, prompts)
    received, done_at = set(), None
    for event in client.watch(job.id, timeout=JOB_TIMEOUT_S):
        if isinstance(event, FrameResult):
            if getattr(event, "error", ""):
                raise RuntimeError(f"job {job.id} frame {event.index}: {event.error}")
            received.add(event.index)
            if len(received) == len(frames):
                done_at = time.perf_counter()
        elif event.state.terminal:
            job = succeeded(event)
    stages = stage_times(job, start_wall)
    if done_at is not None:
        return JobTiming(start, done_at, len(frames), stages)
    stored = {result.index for result in client.results(job.id) if result.masks}
    problem = (
        f"job {job.id}: SUCCEEDED, but WatchJob sent {len(received)} of {len(frames)} frames (GetJob has {len(stored)})"
    )
    return JobTiming(start, time.perf_counter(), len(frames), stages, problem)


def stage_times(job, start_wall: float) -> tuple[float, float, float] | None:
    """The job's created, started and finished times, in seconds after the submit call."""
    if not (job.created and job.started and job.finished):
        return None
    return tuple(moment.timestamp() - start_wall for moment in (job.created, job.started, job.finished))


INTERLEAVED_WARM_ROUNDS = 10
INTERLEAVED_PAUSE_S = 0.05
"""Idle time before each step of a round: the step before's threads stop spinning first."""


def measure_interleaved(
    services: Services,
    plan: Plan,
    model: Path,
    prompts: list[str],
    threads: int,
    flags: list[str],
    args: argparse.Namespace,
) -> Interleaved:
    """The system cost's three figures in rounds: an RQ no-op job, an in-process call and a
    single-frame maskfarm job, one after another while the other two sit idle; p50 of each
    over the rounds, so a drift in the machine's speed moves all three alike."""
    import redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    from maskfarm.client.client import Client

    pool = frame_pool(plan.size)
    queue_name = f"{services.namespace}-noop-rounds"
    figures: list[tuple[float, float, float]] = []
    with (
        services.rq_workers(queue_name, 1),
        services.maskfarm_workers(f"{plan.model}rounds", 1, model, flags, threads),
        redis.Redis.from_url(services.redis_url) as connection,
        Client(services.target, timeout=CALL_TIMEOUT_S) as client,
    ):
        queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
        pipeline = InProcessPipeline(ceiling_spec(plan, model, prompts, threads, args), threads)
        try:
            for round_ in range(INTERLEAVED_WARM_ROUNDS + plan.cost_rounds):
                time.sleep(INTERLEAVED_PAUSE_S)
                rq_seconds, _ = rq_noop_job(queue)
                time.sleep(INTERLEAVED_PAUSE_S)
                in_process = pipeline.time(round_)
                time.sleep(INTERLEAVED_PAUSE_S)
                timing = run_job(client, [pool[round_ % len(pool)]], prompts)
                if timing.problem:
                    raise RuntimeError(timing.problem)
                figures.append((rq_seconds, in_process, timing.latency))
        finally:
            pipeline.close()
    rq_s, in_process_s, job_s = (1000 * np.median(column) for column in zip(*figures[INTERLEAVED_WARM_ROUNDS:]))
    return Interleaved(plan.model, plan.cost_rounds, float(rq_s), float(in_process_s), float(job_s))


def run_jobs(target: str, jobs: list[list[tuple[str, bytes]]], prompts: list[str], clients: int) -> list[JobTiming]:
    """Runs the jobs from ``clients`` threads, each submitting its next job once its last
    one is done (so ``clients`` jobs are in flight); one shared channel."""
    from maskfarm.client.client import Client

    with Client(target, timeout=CALL_TIMEOUT_S) as client, ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(lambda frames: run_job(client, frames, prompts), jobs))


def case_from(timings: list[JobTiming], **labels) -> Case:
    wall = max(t.masks for t in timings) - min(t.submitted for t in timings)
    frames = sum(t.frames for t in timings)
    return Case(
        **labels,
        jobs=len(timings),
        frames=frames,
        wall_s=wall,
        jobs_per_s=len(timings) / wall,
        frames_per_s=frames / wall,
        **percentiles([t.latency for t in timings]),
        stages_p50_ms=stage_split(timings),
        problems=[
            f"{labels['model']} {labels['case']} {labels['workers']}w {labels['variant']}: {t.problem}"
            for t in timings
            if t.problem
        ],
    )


def stage_split(timings: list[JobTiming]) -> dict[str, float]:
    """p50 of each stage (see ``Case.stages_p50_ms``) over the jobs that report times."""
    rows = [
        (created, started - created, finished - started, t.latency - finished)
        for t in timings
        if t.stages
        for created, started, finished in [t.stages]
    ]
    if not rows:
        return {}
    names = ("accept", "queued", "run", "deliver")
    return {name: 1000 * float(np.median(column)) for name, column in zip(names, zip(*rows))}


def measure_maskfarm(
    target: str,
    plan: Plan,
    workers: int,
    variant: Variant,
    threads: int,
    prompts: list[str],
    worker_metrics: Sequence[str] = (),
) -> list[Case]:
    """The cases of one configuration (workers already listed, so models are loaded);
    ``worker_metrics``: the workers' /metrics URLs, read around the isolated jobs."""
    pool = frame_pool(plan.size)
    chunk = max(1, 8 // len(prompts))
    labels = dict(model=plan.model, workers=workers, variant=variant.name, threads=threads)
    # Untimed warm-up: every worker sees a single frame and a full chunk of this size.
    run_jobs(target, [job_frames(pool, j, n) for j in range(workers) for n in (1, chunk)], prompts, 2 * workers)
    cases = []
    single = [job_frames(pool, j, 1) for j in range(max(plan.isolated, plan.load_jobs))]
    before = stage_totals(worker_metrics)
    timings = run_jobs(target, single[: plan.isolated], prompts, clients=1)
    cases.append(case_from(timings, case="single-isolated", clients=1, **labels))
    cases[-1].worker_stages_ms = stage_means(before, stage_totals(worker_metrics), len(timings))
    timings = run_jobs(target, single[: plan.load_jobs], prompts, clients=plan.clients)
    cases.append(case_from(timings, case="single-load", clients=plan.clients, **labels))
    if variant.all_cases:
        multi = [job_frames(pool, j, plan.frames_per_job) for j in range(plan.multi_jobs_per_worker * workers)]
        timings = run_jobs(target, multi, prompts, clients=2 * workers)
        cases.append(case_from(timings, case="multi", clients=2 * workers, **labels))
    return cases


WORKER_STAGES = ("decode", "preprocess", "model", "postprocess", "encode", "store")


def stage_totals(urls: Sequence[str]) -> dict[str, float]:
    """Seconds spent so far per stage, summed over the workers at ``urls`` (their
    ``maskfarm_worker_stage_seconds`` histograms)."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    totals = dict.fromkeys(WORKER_STAGES, 0.0) if urls else {}
    for url in urls:
        with urlopen(url, timeout=10) as response:
            families = text_string_to_metric_families(response.read().decode())
            for family in families:
                if family.name != "maskfarm_worker_stage_seconds":
                    continue
                for sample in family.samples:
                    if sample.name.endswith("_sum") and sample.labels.get("stage") in totals:
                        totals[sample.labels["stage"]] += sample.value
    return totals


def stage_means(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    """Milliseconds per job in each stage between two ``stage_totals``; {} without workers' figures."""
    if not jobs or not before:
        return {}
    return {stage: 1000 * (after[stage] - before[stage]) / jobs for stage in WORKER_STAGES}


# -- the report ------------------------------------------------------------------------


@dataclass
class Report:
    command: str
    machine: dict[str, object]
    settings: dict[str, object]
    rq: RqNoop = field(default_factory=RqNoop)
    ceilings: dict[str, Ceiling] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)
    interleaved: Interleaved | None = None
    goals: list[dict[str, object]] = field(default_factory=list)
    scaling: list[dict[str, object]] = field(default_factory=list)


def machine_info() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    return dict(
        cpu=cpu,
        cores=CORES,
        python=platform.python_version(),
        torch=package_version("torch"),
        rq=package_version("rq"),
        redis_py=package_version("redis"),
        grpcio=package_version("grpcio"),
        redis_server=redis_version.split(" v=")[-1].split()[0] if " v=" in redis_version else redis_version,
        loadavg_start=os.getloadavg()[0],
    )


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def system_cost(report: Report, isolated: Case | None) -> tuple[float, float, str] | None:
    """The cost goal's figures, (cost ms, RQ no-op p50 ms, what they come from): from the
    interleaved rounds when they ran, else from the separately measured isolated case and
    ceilings; None when neither was measured."""
    if report.interleaved:
        rounds = report.interleaved
        return rounds.cost_ms, rounds.rq_p50_ms, f"tiny, 1 worker, p50s of {rounds.rounds} interleaved rounds"
    tiny = report.ceilings.get("tiny")
    if isolated and tiny:
        rq_p50 = report.rq.isolated.get("p50_ms", float("nan"))
        return isolated.p50_ms - tiny.single_ms, rq_p50, "tiny, 1 worker, isolated p50"
    return None


def evaluate(report: Report, primary: str) -> None:
    """The issue's goals and the scaling figures, from the measured cases."""

    def find(model: str, case: str, workers: int, variant: str = primary) -> Case | None:
        return next(
            (c for c in report.cases if (c.model, c.case, c.workers, c.variant) == (model, case, workers, variant)),
            None,
        )

    if measured := system_cost(report, find("tiny", "single-isolated", 1)):
        cost, rq_p50, basis = measured
        report.goals.append(
            dict(
                goal=f"system cost per single-frame job ({basis})",
                measured_ms=cost,
                limit_ms=COST_GOAL_FACTOR * rq_p50,
                ratio_to_rq=cost / rq_p50,
                passed=bool(cost <= COST_GOAL_FACTOR * rq_p50),
            )
        )
    multi, full = find("full", "multi", 1), report.ceilings.get("full")
    if multi and full:
        ratio = multi.frames_per_s / full.multi_fps
        report.goals.append(
            dict(
                goal=f"{multi.frames // multi.jobs}-frame jobs, full model, 1 worker: frames/s vs in-process",
                measured_fps=multi.frames_per_s,
                ceiling_fps=full.multi_fps,
                ratio=ratio,
                passed=bool(ratio >= FULL_GOAL_RATIO),
            )
        )
    rq = report.rq.drain_jobs_per_s
    for case in report.cases:
        base = find(case.model, case.case, 1, case.variant)
        if case.workers > 1 and base and case.case != "single-isolated":
            report.scaling.append(
                dict(
                    model=case.model,
                    case=case.case,
                    variant=case.variant,
                    workers=case.workers,
                    maskfarm=case.jobs_per_s / base.jobs_per_s,
                    rq_noop=rq[case.workers] / rq[1] if case.workers in rq and 1 in rq else None,
                )
            )


def print_report(report: Report) -> None:
    m = report.machine
    print(f"\nmaskfarm end-to-end benchmark\ncommand: {report.command}")
    print(
        f"machine: {m['cpu']}, {m['cores']} cores; python {m['python']}, torch {m['torch']}, rq {m['rq']}, "
        f"redis-server {m['redis_server']}, grpcio {m['grpcio']}; load average {m['loadavg_start']:.2f} at the "
        f"start, {m['loadavg_end']:.2f} at the end (anything near or above {m['cores']} means other processes "
        f"shared the cores: noisy figures)"
    )
    if m["loadavg_start"] >= BUSY_LOADAVG * m["cores"]:
        print(
            f"WARNING: the machine was busy when this run started (load average {m['loadavg_start']:.2f} on "
            f"{m['cores']} cores): these figures measure the contention as much as maskfarm"
        )
    s = report.settings
    print(
        f"settings: {s['prompts']} prompt(s), frames smooth random PNGs, {s['device']} {s['dtype']}, worker threads "
        f"{s['threads']}, worker flags {s['worker_args'] or 'none'}; variants: {s['variants']}"
    )
    print_rq(report.rq)
    print_ceilings(report.ceilings)
    print_cases(report)
    print_interleaved(report.interleaved)
    print_goals(report)


def ms(value: float) -> str:
    return f"{value:.1f}" if value == value else "-"


def print_rq(rq: RqNoop) -> None:
    print("\nceiling 1: RQ no-op job (time.time, JSON serializer, rq.worker.SimpleWorker, same Redis)")
    if rq.isolated:
        print(
            f"  isolated, 1 worker: enqueue -> result in the client p50 {ms(rq.isolated['p50_ms'])} ms, "
            f"p95 {ms(rq.isolated['p95_ms'])}, p99 {ms(rq.isolated['p99_ms'])} "
            f"(RQ's own enqueued_at -> ended_at p50 {ms(rq.isolated_rq_ms)} ms)"
        )
    for workers, rate in sorted(rq.drain_jobs_per_s.items()):
        scaling = f", {rate / rq.drain_jobs_per_s[1]:.2f}x 1 worker" if workers > 1 and 1 in rq.drain_jobs_per_s else ""
        print(
            f"  drain, {workers} worker(s): {rate:.0f} jobs/s = {1000 / rate:.2f} ms/job "
            f"({rq.drain_jobs} queued jobs / (last ended_at - first started_at)){scaling}"
        )


def print_ceilings(ceilings: dict[str, Ceiling]) -> None:
    print("\nceiling 2: the in-process pipeline (Segmenter, same model, frames and prompts; warm; no worker running)")
    for c in ceilings.values():
        codec = (
            f"; PNG decode + mask encode {c.codec_ms:.1f} ms/frame (the worker's, not in the ceiling)"
            if c.codec_ms
            else ""
        )
        print(
            f"  {c.model:<5} {c.size}x{c.size}, {c.device}, {c.threads} threads: single frame {c.single_ms:.1f} ms (p50); "
            f"multi-frame job {c.multi_fps:.2f} frames/s{codec}"
        )


def print_cases(report: Report) -> None:
    print("\nmaskfarm through server + Redis + workers (latency = submit call -> the job's last masks received)")
    header = (
        f"{'model':<6}{'case':<17}{'workers':>7} {'variant':<11}{'thr':>4}{'jobs':>6}{'frames':>7}"
        f"{'clients':>8}{'jobs/s':>9}{'frames/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}  vs ceiling"
    )
    print(header)
    print("-" * len(header))
    for c in report.cases:
        print(
            f"{c.model:<6}{c.case:<17}{c.workers:>7} {c.variant:<11}{c.threads:>4}{c.jobs:>6}{c.frames:>7}"
            f"{c.clients:>8}{c.jobs_per_s:>9.1f}{c.frames_per_s:>10.2f}{ms(c.p50_ms):>9}{ms(c.p95_ms):>9}"
            f"{ms(c.p99_ms):>9}  {versus(c, report)}"
        )
        if c.case == "single-isolated" and c.stages_p50_ms:
            print(
                "      p50 split: "
                + ", ".join(f"{name} {value:.1f} ms" for name, value in c.stages_p50_ms.items())
                + " (submit -> created -> started -> finished -> masks in the client)"
            )
        if c.worker_stages_ms:
            print(
                "      worker stages, mean per job: "
                + ", ".join(f"{name} {value:.1f}" for name, value in c.worker_stages_ms.items())
                + " ms (the workers' /metrics; run = these + the job's start, frame reads and bookkeeping)"
            )
    problems = [problem for c in report.cases for problem in c.problems]
    for problem in problems[:10]:
        print(f"PROBLEM: {problem}")
    if len(problems) > 10:
        print(f"PROBLEM: ... and {len(problems) - 10} more")


def versus(case: Case, report: Report) -> str:
    """Single-frame isolated: system cost (latency - in-process time) over RQ's no-op p50;
    multi-frame: frames/s over the in-process frames/s."""
    ceiling = report.ceilings.get(case.model)
    if ceiling is None:
        return ""
    if case.case == "single-isolated":
        cost = case.p50_ms - ceiling.single_ms
        rq = report.rq.isolated.get("p50_ms")
        same = "" if case.threads == ceiling.threads else f" (worker {case.threads} thr, ceiling {ceiling.threads})"
        return f"cost {cost:.1f} ms = {cost / rq:.2f}x RQ no-op{same}" if rq else f"cost {cost:.1f} ms{same}"
    if case.case == "multi":
        return f"{100 * case.frames_per_s / ceiling.multi_fps:.0f}% of in-process frames/s"
    return f"{100 * case.frames_per_s * ceiling.single_ms / 1000:.0f}% of in-process single-frame rate"


def print_interleaved(rounds: Interleaved | None) -> None:
    if rounds is None:
        return
    print(
        f"\nsystem cost, interleaved: {rounds.rounds} rounds of one RQ no-op job, one in-process call and one "
        f"maskfarm job ({rounds.model}, 1 worker), p50 of each"
    )
    print(
        f"  RQ no-op {rounds.rq_p50_ms:.1f} ms; in-process {rounds.in_process_p50_ms:.1f} ms; maskfarm job "
        f"{rounds.job_p50_ms:.1f} ms -> cost {rounds.cost_ms:.1f} ms = {rounds.cost_ms / rounds.rq_p50_ms:.2f}x "
        f"RQ no-op"
    )


def print_goals(report: Report) -> None:
    print("\ngoals")
    for goal in report.goals:
        verdict = "PASS" if goal["passed"] else "MISS"
        if "measured_ms" in goal:
            print(
                f"  {verdict}  {goal['goal']}: {goal['measured_ms']:.1f} ms = {goal['ratio_to_rq']:.2f}x RQ's "
                f"no-op p50 (limit {COST_GOAL_FACTOR:g}x = {goal['limit_ms']:.1f} ms)"
            )
        else:
            print(
                f"  {verdict}  {goal['goal']}: {goal['measured_fps']:.2f} / {goal['ceiling_fps']:.2f} = "
                f"{100 * goal['ratio']:.0f}% (goal >= {100 * FULL_GOAL_RATIO:.0f}%)"
            )
    if not report.goals:
        print("  (not measured: the cost goal needs --models tiny with --workers 1, the frames/s goal full with 1)")
    if report.scaling:
        print(
            f"\nscaling vs 1 worker (jobs/s; {report.machine['cores']} cores shared by client, server, Redis and "
            f"workers: a GPU host gives the real figure)"
        )
        for s in report.scaling:
            rq = f"{s['rq_noop']:.2f}x" if s["rq_noop"] else "-"
            print(
                f"  {s['model']:<5} {s['case']:<12} {s['variant']:<11} {s['workers']} workers: maskfarm "
                f"{s['maskfarm']:.2f}x   RQ no-op drain {rq}"
            )


# -- the run ---------------------------------------------------------------------------


def raise_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.in_process_child:
        print(json.dumps(in_process_child(json.loads(args.in_process_child))))
        return 0
    if args.in_process_serve:
        in_process_serve(json.loads(args.in_process_serve))
        return 0
    raise_on_sigterm()
    started = time.monotonic()
    if os.getloadavg()[0] >= BUSY_LOADAVG * CORES:
        progress(
            f"WARNING: load average {os.getloadavg()[0]:.2f} on {CORES} cores: other processes are busy, "
            f"figures will be noisy"
        )
    plans, prompts = plans_for(args), list(PROMPT_POOL[: args.prompts])
    variants = batching_variants(args, worker_flags() if args.batching != "off" else set())
    report = Report(
        command=shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join(["e2e.py", *argv]),
        machine=machine_info(),
        settings=dict(
            mode=args.mode,
            prompts=len(prompts),
            device=args.device,
            dtype=args.dtype,
            plans=[asdict(p) for p in plans],
            threads={n: worker_threads(args, n) for n in args.worker_counts},
            worker_args=" ".join(args.worker_arg),
            variants=[asdict(v) for v in variants],
        ),
    )
    run_id = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="maskfarm-e2e-") as scratch:
        services = Services(Path(scratch), run_id)
        try:
            measure_all(args, services, plans, prompts, variants, report)
        except BaseException:
            print(services.log_tails(), file=sys.stderr)
            raise
        finally:
            services.stop_all()
    report.machine["loadavg_end"] = os.getloadavg()[0]
    report.settings["variants"] = ", ".join(f"{v.name} ({' '.join(v.flags) or 'no flags'})" for v in variants)
    evaluate(report, variants[0].name)
    print_report(report)
    print(f"\nwhole run {time.monotonic() - started:.0f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")
    return 1 if any(case.problems for case in report.cases) else 0


def measure_all(
    args: argparse.Namespace,
    services: Services,
    plans: list[Plan],
    prompts: list[str],
    variants: list[Variant],
    report: Report,
) -> None:
    """RQ's ceiling first, then per model: the in-process ceiling (no worker running), and
    every worker count x variant through the real services."""
    services.start_redis()
    rq_isolated_jobs, rq_drain_jobs = RQ_PLANS[args.mode]
    report.rq = measure_rq(
        services, args.worker_counts, args.rq_isolated or rq_isolated_jobs, args.rq_jobs or rq_drain_jobs
    )
    services.start_server()
    for plan in plans:
        model = synthetic_model(plan.model, Path(args.model_cache))
        report.ceilings[plan.model] = measure_in_process(plan, model, prompts, worker_threads(args, 1), args)
        progress(f"{plan.model}: in-process ceiling done")
        for workers in args.worker_counts:
            threads = worker_threads(args, workers)
            for n, variant in enumerate(variants):
                with services.maskfarm_workers(
                    f"{plan.model}{workers}v{n}", workers, model, worker_command_flags(args, variant), threads
                ):
                    report.cases += measure_maskfarm(
                        services.target, plan, workers, variant, threads, prompts, services.worker_metrics
                    )
                progress(f"{plan.model}, {workers} worker(s), {variant.name}: done")
        if plan.model == "tiny" and plan.cost_rounds and 1 in args.worker_counts:
            report.interleaved = measure_interleaved(
                services, plan, model, prompts, worker_threads(args, 1), worker_command_flags(args, variants[0]), args
            )
            progress(f"{plan.model}: {plan.cost_rounds} interleaved cost rounds done")


def worker_command_flags(args: argparse.Namespace, variant: Variant) -> list[str]:
    return ["--device", args.device, "--dtype", args.dtype, *variant.flags, *args.worker_arg]


if __name__ == "__main__":
    sys.exit(main())
