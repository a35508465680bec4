#!/usr/bin/env python
"""Control-plane benchmark: what one Redis (and one server) spends per frame and per job.

    python bench/control_plane.py                         # shared storage and bytes, jobs of 1, 8, 32 frames
    python bench/control_plane.py --workers 4 --servers 2 --frames 1024
    python bench/control_plane.py --modes shared --job-frames 32 --frames 64   # a quick look

Starts a private ``redis-server``, ``--servers`` real ``maskfarm server`` processes and
``--workers`` stand-in workers: the real worker (``build_worker``: RQ, the job store, frame
decoding, mask encoding, shared storage, cross-job batching) around bench/stand_in.py's
model, which takes ``--model-ms`` per frame and returns a fixed mask instead of CLIPSeg's. (The
worker's modules import torch, so each stand-in worker still loads it; no model runs.)

Per case (mode x frames per job) ``--frames`` small frames are submitted as jobs through
the servers by ``--in-flight`` client threads, each submitting a job and watching it to its
end (as ``maskfarm segment`` does). Redis itself says what it cost: ``INFO cpu``
(``used_cpu_user`` + ``used_cpu_sys``, the whole process, idle ticks included) and ``INFO
commandstats`` (calls, reset before each case); the servers' CPU comes from /proc. Printed:
Redis CPU and commands per frame and per job, the reads of requests per job (round trips:
``INFO stats`` ``total_reads_processed``), server CPU per frame, and how many workers of
``--worker-fps`` (500) frames/s one Redis core would feed. Beside them, on the same Redis:
its CPU per second while the farm idles (counted in each case by its wall time), and what
RQ alone costs per job (``--floor-jobs`` jobs of a function that does nothing, through a
plain RQ ``SimpleWorker`` and through maskfarm's worker), the floor under any job RQ runs.
With two CPUs or more Redis gets one to itself and everything else the others
(``--no-pin``: all share them), as the goal's "one Redis core" on a Redis host would,
and the goal case runs ``--goal-rounds`` times each way, as measured and with that CPU
kept from idling between requests, as a loaded Redis host's is (``keep_busy``;
``--no-busy-core`` to skip), alternately; the verdict takes the medians. Last, the goal
case's traffic is captured as Redis got it and, the workers and servers stopped, replayed
``--replay-copies`` times (``--replay-in-flight`` at once, ``--goal-rounds`` rounds) on
that Redis alone (bench/redis_traffic.py): the same requests without the farm's
processes sharing the machine, as on a Redis host; its figure is printed beside the
verdict's. The goal: one
Redis core feeds 100 such workers (50,000 frames/s) in shared-storage mode with 32-frame
jobs, i.e. at most 20 us of Redis CPU per frame: PASS or MISS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import e2e  # noqa: E402  (the benchmarks' process plumbing)
import redis_traffic  # noqa: E402
from redis_traffic import RedisSnapshot  # noqa: E402
from stand_in import stand_in_segmenter  # noqa: E402

GOAL_US_PER_FRAME = 20.0
"""Redis CPU per frame that lets one core feed 100 workers of 500 frames/s."""
GOAL_CASE = ("shared", 32)
PROMPTS = ["car"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modes",
        default="shared,bytes",
        help="shared (frames and masks by path), bytes (through gRPC and Redis), or both (default)",
    )
    parser.add_argument("--job-frames", default="1,8,32", help="frames per job, comma separated (default 1,8,32)")
    parser.add_argument("--frames", type=int, default=512, help="frames per case (default 512)")
    parser.add_argument("--workers", type=int, default=2, help="stand-in workers (default 2)")
    parser.add_argument("--servers", type=int, default=1, help="maskfarm servers (default 1)")
    parser.add_argument("--in-flight", type=int, default=8, help="jobs submitted and watched at once (default 8)")
    parser.add_argument(
        "--model-ms",
        type=float,
        default=2.0,
        help="the stand-in model's time per frame (default 2: a 500 frames/s GPU)",
    )
    parser.add_argument("--worker-fps", type=float, default=500.0, help="one GPU worker's frames/s (default 500)")
    parser.add_argument("--size", type=int, default=64, help="frame side, pixels (default 64)")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="leave Redis on every CPU with the rest (by default it gets a CPU of its own, as on a Redis host)",
    )
    parser.add_argument(
        "--goal-rounds",
        type=int,
        default=3,
        help="runs of the goal case (shared, 32) the verdict takes the median of, each way (default 3)",
    )
    parser.add_argument(
        "--no-busy-core",
        action="store_true",
        help="do not run the goal case again with Redis's CPU kept from idling (run when pinned)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--floor-jobs",
        type=int,
        default=256,
        help="no-op jobs through plain RQ for its own cost (default 256; 0: skip)",
    )
    parser.add_argument(
        "--replay-copies",
        type=int,
        default=64,
        help="copies of the goal case's captured traffic replayed on Redis alone, the farm stopped (default 64; 0: skip)",
    )
    parser.add_argument("--replay-in-flight", type=int, default=8, help="copies replayed at once (default 8)")
    parser.add_argument("--serve-worker", help=argparse.SUPPRESS)
    parser.add_argument("--serve-rq-floor", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- the stand-in worker (its own process) -------------------------------------------------


def serve_worker(spec: dict) -> int:
    """Runs one stand-in worker until SIGTERM, or with ``burst`` until its queues are
    empty (``--serve-worker``)."""
    from maskfarm.worker.codec_pool import CodecPool
    from maskfarm.worker.runner import WorkerSettings, build_worker

    settings = WorkerSettings(
        redis_url=spec["redis_url"],
        namespace=spec["namespace"],
        name=spec["name"],
        storage_roots=tuple(spec["storage_roots"]),
        codec_threads=1,
    )
    worker = build_worker(settings, stand_in_segmenter(spec["model_ms"]), CodecPool(1))
    worker.work(burst=spec.get("burst", False), with_scheduler=False, logging_level=None)
    return 0


def serve_rq_floor(spec: dict) -> int:
    """Runs a plain RQ ``SimpleWorker`` over the floor's queue until it is empty
    (``--serve-rq-floor``): RQ's own per-job protocol, nothing of maskfarm's."""
    import redis
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    with redis.Redis.from_url(spec["redis_url"]) as connection:
        queue = Queue(spec["queue"], connection=connection, serializer=JSONSerializer)
        worker = SimpleWorker([queue], connection=connection, serializer=JSONSerializer)
        worker.work(burst=True, logging_level="WARNING", with_scheduler=False)
    return 0


# -- measuring -------------------------------------------------------------------------------


@dataclass
class CaseResult:
    mode: str
    job_frames: int
    jobs: int
    frames: int
    wall_s: float
    redis_cpu_s: float
    redis_calls: int
    top_commands: list[tuple[str, int]]
    command_usec: dict[str, int]
    server_cpu_s: float
    redis_reads: int
    core_kept_busy: bool = False
    """Measured with Redis's CPU kept from idling (``keep_busy``)."""
    round: int = 0
    """0 for the sweep of every case; the goal case's later rounds count from 1."""

    @property
    def redis_us_per_frame(self) -> float:
        return 1e6 * self.redis_cpu_s / self.frames

    @property
    def workers_per_redis_core(self) -> float:
        return workers_per_core(self.redis_us_per_frame)

    def breakdown(self, per: str = "frame") -> str:
        """Each command's calls and in-command CPU per frame (or per job), most called first."""
        count = self.frames if per == "frame" else self.jobs
        return "; ".join(
            f"{name} {calls / count:.2f} ({self.command_usec.get(name, 0) / count:.1f} us)"
            for name, calls in self.top_commands
            if calls
        )

    def row(self) -> str:
        top = ", ".join(f"{name} {calls / self.frames:.1f}" for name, calls in self.top_commands[:5])
        return (
            f"{self.mode:>6} {self.job_frames:>3} | {self.frames / self.wall_s:8.0f} | "
            f"{self.redis_us_per_frame:8.1f} {1e6 * self.redis_cpu_s / self.jobs:9.0f} | "
            f"{self.redis_calls / self.frames:7.1f} {self.redis_calls / self.jobs:8.1f} | "
            f"{self.redis_reads / self.jobs:8.1f} | "
            f"{1e6 * self.server_cpu_s / self.frames:8.0f} | {self.workers_per_redis_core:7.0f} | {top}"
        )


WORKER_FPS = [500.0]
"""The GPU worker speed the workers-per-core figure is for (``--worker-fps``)."""


def workers_per_core(us_per_frame: float) -> float:
    """Workers of ``WORKER_FPS`` frames/s one Redis core feeds at ``us_per_frame`` of its CPU."""
    return 1e6 / us_per_frame / WORKER_FPS[0] if us_per_frame else float("inf")


HEADER = (
    "  mode fpj | frames/s | Redis CPU us/frame  us/job | cmds/frame cmds/job | reads/job | server us/frame | "
    "workers/core | commands per frame (top 5)"
)


class Farm:
    """The Redis, the servers and the stand-in workers of one run."""

    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.args = args
        self.scratch = scratch
        self.storage = scratch / "shows"
        self.storage.mkdir()
        (scratch / "logs").mkdir()
        self.services = e2e.Services(scratch / "logs", "cp")
        self.targets: list[str] = []
        self.servers: list = []

    def start(self) -> None:
        self.services.start_redis()
        for n in range(self.args.servers):
            target = f"127.0.0.1:{e2e.free_port()}"
            process = self.services._spawn(
                e2e.maskfarm_command(
                    "server",
                    "--listen",
                    target,
                    "--redis-url",
                    self.services.redis_url,
                    "--namespace",
                    self.services.namespace,
                    "--storage-root",
                    str(self.storage),
                    "--grace-s",
                    "1",
                    "--max-backlog-jobs",
                    "100000",
                ),
                f"server-{n}.log",
            )
            e2e.wait_until(lambda t=target: e2e._serving(t), "maskfarm server", [process], timeout=60)
            self.targets.append(target)
            self.servers.append(process)
        names = [f"standin-{n}" for n in range(self.args.workers)]
        for name in names:
            spec = self._worker_spec(name, self.args.model_ms)
            self.services.workers.append(
                self.services._spawn([sys.executable, __file__, "--serve-worker", json.dumps(spec)], f"{name}.log")
            )
        e2e.wait_until(
            lambda: set(names) <= e2e.listed_workers(self.targets[0]),
            "the stand-in workers",
            self.services.workers,
            timeout=300,
        )

    def stop(self) -> None:
        self.stop_all_but_redis()
        self.services.stop_all()

    def stop_all_but_redis(self) -> None:
        """Stops the workers and servers; Redis (its data and loaded scripts) stays up."""
        e2e.stop(self.services.workers)
        e2e.stop(self.servers, grace_s=10)
        self.services.workers, self.servers = [], []

    def replay_goal_case(self, copies: int, in_flight: int, rounds: int) -> GoalReplay:
        """The goal case run once more with Redis's ``MONITOR`` on (its figures unused: the
        monitor costs Redis CPU), then, the workers and servers stopped, what Redis was
        sent replayed ``rounds`` times on this Redis (``redis_traffic.replay``), with the
        servers' pattern subscription read throughout as theirs was."""
        commands, captured = redis_traffic.capture(self.services.redis_url, lambda: self.run_case(*GOAL_CASE))
        trips = redis_traffic.round_trips(commands)
        if not redis_traffic.distinct_ids(trips):
            raise RuntimeError("captured ids share their first digits: copies would collide")
        from maskfarm.jobqueue.keys import Keys

        self.stop_all_but_redis()
        pattern = Keys(self.services.namespace).events("*")
        replay = GoalReplay(captured, len(trips), [])
        for n in range(1, rounds + 1):
            replay.replays.append(redis_traffic.replay(self.services.redis_url, trips, copies, in_flight, pattern))
            print(replay.row(replay.replays[-1]) + f" (round {n})", flush=True)
        return replay

    def run_case(self, mode: str, job_frames: int) -> CaseResult:
        import redis

        from maskfarm.client.client import Client
        from maskfarm.client.frames import StoragePath
        from maskfarm.client.jobs import Job

        jobs = max(1, self.args.frames // job_frames)
        frames = self._frames(mode, job_frames)
        output_dir = str(self.storage / "masks" / f"{mode}-{job_frames}") if mode == "shared" else ""
        clients = [Client(target, timeout=120) for target in self.targets]

        def one_job(n: int) -> None:
            client = clients[n % len(clients)]
            chosen = [(f"f{n:05d}.{k:04d}.png", frames[(n + k) % len(frames)]) for k in range(job_frames)]
            if mode == "shared":
                chosen = [(name, StoragePath(path)) for name, path in chosen]
            ended = client.submit(chosen, PROMPTS, output_dir=output_dir)
            for event in client.watch(ended.id, timeout=600):
                if isinstance(event, Job):  # the job's last event says how it ended, as segment reads it
                    ended = event
            if ended.state.value != "SUCCEEDED":
                raise RuntimeError(f"job {ended.id} ended {ended.state.value}: {ended.error}")

        with redis.Redis.from_url(self.services.redis_url) as connection:
            connection.config_resetstat()
            before = RedisSnapshot.take(connection)
            server_before = sum(e2e_cpu(p.pid) for p in self.servers)
            start = time.perf_counter()
            with ThreadPoolExecutor(self.args.in_flight) as pool:
                list(pool.map(one_job, range(jobs)))
            wall = time.perf_counter() - start
            server_cpu = sum(e2e_cpu(p.pid) for p in self.servers) - server_before
            after = RedisSnapshot.take(connection)
        for client in clients:
            client.close()
        calls = {name: n - before.calls.get(name, 0) for name, n in after.calls.items()}
        usec = {name: n - before.usec.get(name, 0) for name, n in after.usec.items()}
        for own in ("info", "config|resetstat"):  # the snapshots' own
            calls.pop(own, None)
        return CaseResult(
            mode,
            job_frames,
            jobs,
            jobs * job_frames,
            wall,
            after.cpu_s - before.cpu_s,
            sum(calls.values()),
            sorted(calls.items(), key=lambda kv: -kv[1]),
            usec,
            server_cpu,
            after.reads - before.reads - 3,  # less the after snapshot's own three INFO
        )

    def run_rq_floor(self, jobs: int, worker: str) -> RqFloor:
        """``RqFloor`` on this farm's Redis (its workers idle, on other queues), run by a
        ``worker``: "plain" (``--serve-rq-floor``), or "maskfarm", the farm's own stand-in
        worker (``build_worker``) on a namespace of its own, its first queue holding the
        jobs (the floor's jobs are not maskfarm jobs: no model, no store work)."""
        import redis
        from rq import Queue
        from rq.serializers import JSONSerializer

        from maskfarm.core.jobs import PRIORITIES
        from maskfarm.jobqueue.rq_adapter import queue_name

        namespace = f"{self.services.namespace}-floor-{worker}"
        if worker == "maskfarm":
            name = queue_name(PRIORITIES[0], namespace)
            spec = {**self._worker_spec("floor", 0.0), "namespace": namespace, "burst": True}
            command = [sys.executable, __file__, "--serve-worker", json.dumps(spec)]
        else:
            name = namespace
            spec = {"redis_url": self.services.redis_url, "queue": name}
            command = [sys.executable, __file__, "--serve-rq-floor", json.dumps(spec)]
        with redis.Redis.from_url(self.services.redis_url) as connection:
            queue = Queue(name, connection=connection, serializer=JSONSerializer)
            before = RedisSnapshot.take(connection)
            for _ in range(jobs):
                queue.enqueue_call("os.getpid", result_ttl=86400, failure_ttl=86400, ttl=3600)
            enqueued = RedisSnapshot.take(connection)
            with open(self.scratch / "logs" / f"floor-{worker}.log", "wb") as log:
                subprocess.run(command, check=True, timeout=600, stdout=log, stderr=subprocess.STDOUT)
            after = RedisSnapshot.take(connection)
        return RqFloor(
            worker, jobs, enqueued.cpu_s - before.cpu_s, after.cpu_s - enqueued.cpu_s, after.reads - enqueued.reads - 3
        )

    def _worker_spec(self, name: str, model_ms: float) -> dict:
        """What ``serve_worker`` needs to run a stand-in worker of this farm."""
        return {
            "redis_url": self.services.redis_url,
            "namespace": self.services.namespace,
            "name": name,
            "storage_roots": [str(self.storage)],
            "model_ms": model_ms,
        }

    def _frames(self, mode: str, job_frames: int) -> list:
        """Eight distinct frames: PNG bytes, or (shared storage) their files' paths."""
        pngs = [e2e.frame_png(seed, self.args.size) for seed in range(8)]
        if mode == "bytes":
            return pngs
        folder = self.storage / "plates" / f"{job_frames}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for n, data in enumerate(pngs):
            path = folder / f"plate.{n:04d}.png"
            path.write_bytes(data)
            paths.append(str(path))
        return paths


@dataclass
class RqFloor:
    """What RQ alone costs Redis per job: a job whose function does nothing, enqueued as
    the server enqueues maskfarm's (JSON, the same TTLs; a round trip of its own, where
    the server's joins the job's creating transaction) and run by an RQ worker, a plain
    ``SimpleWorker`` or maskfarm's (``worker``)."""

    worker: str
    jobs: int
    enqueue_cpu_s: float
    run_cpu_s: float
    run_reads: int

    @property
    def us_per_job(self) -> float:
        return 1e6 * (self.enqueue_cpu_s + self.run_cpu_s) / self.jobs

    def row(self) -> str:
        return (
            f"RQ alone ({self.jobs} no-op jobs, {WORKER_KINDS[self.worker]}): {self.us_per_job:.0f} us of Redis CPU "
            f"per job (enqueue {1e6 * self.enqueue_cpu_s / self.jobs:.0f}, run "
            f"{1e6 * self.run_cpu_s / self.jobs:.0f} in {self.run_reads / self.jobs:.1f} reads): "
            f"{self.us_per_job / GOAL_CASE[1]:.1f} us/frame with {GOAL_CASE[1]}-frame jobs"
        )


WORKER_KINDS = {"plain": "a plain SimpleWorker", "maskfarm": "maskfarm's worker"}


def idle_cpu_rate(redis_url: str, seconds: float = 2.0) -> float:
    """Redis CPU seconds per second while the farm is up with nothing to do: its own ticks
    and the workers' and servers' periodic work, counted in every case in proportion to
    its wall time (not to its frames)."""
    import redis

    with redis.Redis.from_url(redis_url) as connection:
        before = RedisSnapshot.take(connection).cpu_s
        start = time.perf_counter()
        time.sleep(seconds)
        return (RedisSnapshot.take(connection).cpu_s - before) / (time.perf_counter() - start)


def round_trip_cpu(redis_url: str, trips: int = 5000) -> tuple[float, float]:
    """Redis CPU seconds of one empty round trip (a ``PING`` sent when the last one was
    answered), and the part of it spent in the kernel: what this host charges Redis for a
    request before any command runs (reading it, answering it, waking for it), which
    every round trip of a job pays on top of its commands' own time."""
    import redis

    with redis.Redis.from_url(redis_url) as connection:
        before = connection.info("cpu")
        for _ in range(trips):
            connection.ping()
        after = connection.info("cpu")
    total, kernel = (
        sum(float(after[f]) - float(before[f]) for f in fields)
        for fields in (("used_cpu_user", "used_cpu_sys"), ("used_cpu_sys",))
    )
    return total / trips, kernel / trips


def redis_core(no_pin: bool) -> int | None:
    """The CPU Redis will have to itself (the last this process may use), after moving this
    process (and so every process it starts) to the others; None when not pinning (asked,
    or one CPU). Beside the farm's Python processes on the same cores Redis spends more
    per frame (they evict its caches), which a Redis host, the goal's one Redis core, does
    not (docs/BENCHMARKS.md, "Redis on a core of its own")."""
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin or len(cpus) < 2:
        return None
    os.sched_setaffinity(0, cpus[:-1])
    return cpus[-1]


@contextlib.contextmanager
def keep_busy(cpu: int) -> Iterator[None]:
    """Keeps ``cpu`` from idling while inside: a process that only spins, at Linux's
    ``SCHED_IDLE`` priority, so Redis on that CPU takes it over the moment it has work
    and none of its CPU is Redis's. A Redis carrying the goal's load never idles between
    requests; this farm (~1% of that load) lets it idle for each, and on a VM an idle CPU
    woken for every request makes each request dearer (docs/BENCHMARKS.md, "Fewer round
    trips, and a Redis CPU that never idles")."""
    spinner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os; os.sched_setaffinity(0, {{{cpu}}}); "
            "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True: pass",
        ]
    )
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def pin(pid: int, cpu: int) -> None:
    """Puts every thread of process ``pid`` on ``cpu`` (Linux /proc)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), {cpu})


def e2e_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def goal_rounds(farm: Farm, rounds: int, busy_core: int | None) -> list[CaseResult]:
    """The goal case ``rounds`` - 1 more times as the sweep ran it and, with ``busy_core``,
    ``rounds`` times with that CPU (Redis's) kept from idling, alternately: one run of it
    on a VM scatters by a fifth."""
    results = []
    for n in range(1, rounds + 1):
        if busy_core is not None:
            with keep_busy(busy_core):
                busy = farm.run_case(*GOAL_CASE)
            busy.core_kept_busy, busy.round = True, n
            results.append(busy)
            print(busy.row() + f" (round {n}, CPU {busy_core} kept from idling)", flush=True)
        if n < rounds:
            again = farm.run_case(*GOAL_CASE)
            again.round = n
            results.append(again)
            print(again.row() + f" (round {n})", flush=True)
    return results


@dataclass
class GoalReplay:
    """The goal case's traffic as Redis got it in one run, replayed on Redis alone: the
    same requests, round trips and subscription, none of the farm's processes beside
    Redis on the machine (bench/redis_traffic.py)."""

    captured: CaseResult
    trips: int
    replays: list[redis_traffic.Replay]

    def us_per_frame(self, replay: redis_traffic.Replay) -> float:
        return 1e6 * replay.redis_cpu_s / (replay.copies * self.captured.frames)

    def row(self, replay: redis_traffic.Replay) -> str:
        jobs = replay.copies * self.captured.jobs
        return (
            f"replayed on Redis alone: {replay.copies} copies of {self.captured.jobs} jobs, {replay.in_flight} at once: "
            f"{self.us_per_frame(replay):.1f} us/frame, {replay.commands / jobs:.1f} commands and "
            f"{replay.reads / jobs:.1f} reads per job (captured: {self.trips / self.captured.jobs:.1f} round trips "
            f"per job, the farm's Redis counted {self.captured.redis_reads / self.captured.jobs:.1f}), Redis "
            f"{100 * replay.busy:.0f}% busy, {replay.errors} error replies"
        )

    def figures(self) -> dict:
        return {
            "captured_jobs": self.captured.jobs,
            "captured_frames": self.captured.frames,
            "captured_trips": self.trips,
            "rounds": [{**r.__dict__, "us_per_frame": self.us_per_frame(r)} for r in self.replays],
        }


def verdict(results: list[CaseResult], replay: GoalReplay | None = None) -> str:
    """The goal's PASS or MISS, judged on the median of the goal case's rounds as measured
    (Redis's core idle between requests: the dearer figure), the rounds with the core kept
    busy and the traffic replayed on Redis alone beside it."""
    goal = [r for r in results if (r.mode, r.job_frames) == GOAL_CASE]
    idle = [r.redis_us_per_frame for r in goal if not r.core_kept_busy]
    if not idle:
        return "goal not measured (needs --modes shared and --job-frames 32)"
    us = statistics.median(idle)
    line = (
        f"50,000 frames/s goal (<= {GOAL_US_PER_FRAME:g} us of Redis CPU per frame, shared storage, 32-frame "
        f"jobs): {_judged(idle)}, {workers_per_core(us):.0f} workers of {WORKER_FPS[0]:g} frames/s per Redis "
        f"core ({us / GOAL_US_PER_FRAME:.2f}x the budget)"
    )
    busy = [r.redis_us_per_frame for r in goal if r.core_kept_busy]
    if busy:
        line += (
            f"; with Redis's core kept from idling, as under the goal's load: {_judged(busy)}, "
            f"{workers_per_core(statistics.median(busy)):.0f} workers"
        )
    if replay is not None:
        alone = [replay.us_per_frame(r) for r in replay.replays]
        line += (
            f"; its traffic replayed on Redis alone, the farm stopped: {_judged(alone)}, "
            f"{workers_per_core(statistics.median(alone)):.0f} workers"
        )
    return line


def _judged(us_per_frame: list[float]) -> str:
    """PASS or MISS on the median, with the rounds' range."""
    us = statistics.median(us_per_frame)
    state = "PASS" if us <= GOAL_US_PER_FRAME else "MISS"
    spread = (
        f" ({min(us_per_frame):.1f}-{max(us_per_frame):.1f} over {len(us_per_frame)})" if len(us_per_frame) > 1 else ""
    )
    return f"{state}: {us:.1f} us/frame{spread}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_worker:
        return serve_worker(json.loads(args.serve_worker))
    if args.serve_rq_floor:
        return serve_rq_floor(json.loads(args.serve_rq_floor))
    WORKER_FPS[0] = args.worker_fps
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    sizes = [int(s) for s in args.job_frames.split(",")]
    if set(modes) - {"shared", "bytes"}:
        raise SystemExit(f"--modes: shared and/or bytes, got {args.modes!r}")
    core = redis_core(args.no_pin)
    print(
        f"{args.workers} stand-in workers ({args.model_ms:g} ms/frame), {args.servers} server(s), "
        f"{args.frames} frames of {args.size}x{args.size} per case, {args.in_flight} jobs in flight, "
        f"{len(PROMPTS)} prompt; "
        + (
            f"Redis alone on CPU {core}, the rest on CPUs {sorted(os.sched_getaffinity(0))}"
            if core is not None
            else "Redis not pinned"
        )
    )
    results = []
    floors: list[RqFloor] = []
    replay: GoalReplay | None = None
    with tempfile.TemporaryDirectory(prefix="maskfarm-control-plane-") as scratch:
        farm = Farm(args, Path(scratch))
        try:
            farm.start()
            if core is not None:
                pin(farm.services.redis.pid, core)
            idle = idle_cpu_rate(farm.services.redis_url)
            trip_s, trip_kernel_s = round_trip_cpu(farm.services.redis_url)
            print(HEADER)
            for mode in modes:
                for job_frames in sizes:
                    result = farm.run_case(mode, job_frames)
                    results.append(result)
                    print(result.row(), flush=True)
            if GOAL_CASE[0] in modes and GOAL_CASE[1] in sizes:
                results += goal_rounds(farm, args.goal_rounds, None if args.no_busy_core else core)
            if args.floor_jobs > 0:
                floors = [farm.run_rq_floor(args.floor_jobs, worker) for worker in WORKER_KINDS]
            if args.replay_copies > 0 and GOAL_CASE[0] in modes and GOAL_CASE[1] in sizes:
                replay = farm.replay_goal_case(args.replay_copies, args.replay_in_flight, args.goal_rounds)
        except Exception:
            print(farm.services.log_tails(), file=sys.stderr)
            raise
        finally:
            farm.stop()
    for result in results:
        if (result.mode, result.job_frames) == GOAL_CASE and result.round == 0:
            print(f"per frame, {result.mode} {result.job_frames}-frame jobs: {result.breakdown()}")
            print(f"per job, {result.mode} {result.job_frames}-frame jobs: {result.breakdown('job')}")
            print(
                f"Redis idle (the farm up, nothing to do): {1e3 * idle:.1f} ms of CPU per second, "
                f"{1e6 * idle * result.wall_s / result.frames:.1f} us/frame of this case"
            )
            reads = result.redis_reads / result.frames
            print(
                f"an empty round trip (PING after PING) costs this Redis {1e6 * trip_s:.1f} us of CPU, "
                f"{1e6 * trip_kernel_s:.1f} of it in the kernel: this case's {result.redis_reads / result.jobs:.1f} "
                f"reads per job at that cost are {1e6 * trip_s * reads:.1f} us/frame of its "
                f"{result.redis_us_per_frame:.1f}"
            )
    for floor in floors:
        print(floor.row())
    print(verdict(results, replay))
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        **r.__dict__,
                        "redis_us_per_frame": r.redis_us_per_frame,
                        "workers_per_redis_core": r.workers_per_redis_core,
                    }
                    for r in results
                ]
                + [{"rq_floor": {**floor.__dict__, "us_per_job": floor.us_per_job}} for floor in floors]
                + ([{"replay": replay.figures()}] if replay else []),
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
