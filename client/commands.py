"""Client-side subcommands: ``segment``, ``status``, ``cancel``, ``jobs``, ``workers``,
``health`` and ``up``.

Errors print one line on stderr and exit non-zero: 2 for what the user can fix in the
command (a bad parameter, an unreadable file, an unknown job), 1 for everything else (a
failed or cancelled job, an unreachable server).
"""

from __future__ import annotations

import argparse
import os
import sys

JOB_STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")


def add_commands(subcommands: argparse._SubParsersAction) -> None:
    from maskfarm.worker.cli import add_model_options

    segment = subcommands.add_parser("segment", help="write one mask per frame and prompt")
    segment.add_argument("frames", nargs="+", help="image files (PNG, JPEG, TIFF, WebP, BMP)")
    segment.add_argument("--prompt", "-p", action="append", required=True, help="text prompt; repeat for several")
    segment.add_argument("--output", "-o", default="masks", help="output folder (default: masks)")
    segment.add_argument("--format", choices=("png", "png16", "npy"), default="png",
                         help="png: 8-bit; png16: 16-bit; npy: float32, exact (default: png)")
    segment.add_argument("--threshold", type=float, default=0.4, help="probability above which a pixel is in (default 0.4)")
    segment.add_argument("--smooth", type=int, default=9, help="majority-vote smoothing kernel, 0-32 (default 9)")
    segment.add_argument("--dilate", type=int, default=0, help="grow (>0) or shrink (<0) by this many pixels, -32-32")
    segment.add_argument("--blur", type=int, default=0, help="Gaussian blur kernel of the final mask, 0-64")
    segment.add_argument("--soft", action="store_true", help="the probability map itself: no threshold/smooth/dilate/blur")
    segment.add_argument("--union", action="store_true", help="also write the union of the prompts' masks (union/)")
    segment.add_argument("--invert", action="store_true", help="write 1 - mask (applied last)")
    segment.add_argument("--local", action="store_true", help="run the pipeline in this process (no server, no Redis)")
    segment.add_argument("--priority", choices=("high", "normal", "low"), default="normal",
                         help="queue to wait in (service only; default normal)")
    segment.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                         help="label the job, e.g. shot=sq010 (service only; repeat for several)")
    _add_target(segment)
    add_model_options(segment)
    segment.set_defaults(run=run_segment)

    status = subcommands.add_parser("status", help="a job's state, progress, error, provenance and times")
    status.add_argument("job", help="job id")
    _add_target(status)
    status.set_defaults(run=run_status)

    cancel = subcommands.add_parser("cancel", help="cancel a job (a running one stops between batches)")
    cancel.add_argument("job", help="job id")
    _add_target(cancel)
    cancel.set_defaults(run=run_cancel)

    jobs = subcommands.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--state", action="append", default=[], choices=[s.lower() for s in JOB_STATES],
                      help="only jobs in this state (repeat for several)")
    jobs.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                      help="only jobs with this label (repeat: all must match)")
    jobs.add_argument("--limit", type=int, default=100, help="show at most this many (default 100; 0: all)")
    _add_target(jobs)
    jobs.set_defaults(run=run_jobs)

    workers = subcommands.add_parser("workers", help="list the live workers")
    _add_target(workers)
    workers.set_defaults(run=run_workers)

    health = subcommands.add_parser("health", help="exit 0 when the server reports SERVING")
    _add_target(health)
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer (default 5)")
    health.set_defaults(run=run_health)

    up = subcommands.add_parser(
        "up", help="run Redis (if none answers), a server and workers here, until Ctrl-C",
        description="An all-in-one maskfarm on this machine: uses the Redis at --redis-url or, if none "
        "answers, starts a private memory-only redis-server; starts `maskfarm server` and --workers "
        "`maskfarm worker` processes; prints the target once SERVING. Ctrl-C or SIGTERM stops them all, "
        "workers first (each finishes its current job).")
    up.add_argument("--listen", default=os.environ.get("MASKFARM_LISTEN", "127.0.0.1:50051"),
                    help="address the server listens on (env MASKFARM_LISTEN; default %(default)s)")
    up.add_argument("--redis-url", default=os.environ.get("MASKFARM_REDIS_URL", "redis://127.0.0.1:6379/0"),
                    help="Redis to use if one answers there (env MASKFARM_REDIS_URL; default %(default)s)")
    up.add_argument("--namespace", default=os.environ.get("MASKFARM_NAMESPACE", "maskfarm"),
                    help="prefix of maskfarm's Redis keys (env MASKFARM_NAMESPACE; default %(default)s)")
    up.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    up.add_argument("--stop-timeout", type=float, default=30.0,
                    help="seconds a worker gets to finish its job when stopping (default 30)")
    up.add_argument("--metrics-listen", default=os.environ.get("MASKFARM_METRICS_LISTEN", ""),
                    help="host:port of the server's Prometheus /metrics; worker N gets port + N "
                         "(env MASKFARM_METRICS_LISTEN; default: off)")
    add_model_options(up)
    up.set_defaults(run=run_up)


def _add_target(parser: argparse.ArgumentParser) -> None:
    from maskfarm.client.client import DEFAULT_TARGET

    parser.add_argument("--target", default=os.environ.get("MASKFARM_TARGET", DEFAULT_TARGET),
                        help="server address (env MASKFARM_TARGET, default localhost:50051)")
    _add_security(parser)


def _add_security(parser: argparse.ArgumentParser) -> None:
    """Token and TLS flags; each one left unset falls back to its variable (see
    ``maskfarm.client.security``)."""
    group = parser.add_argument_group("authentication and TLS")
    group.add_argument("--token", help="bearer token for a server with --auth-tokens (env MASKFARM_TOKEN; "
                       "prefer the variable: arguments are visible to other users)")
    group.add_argument("--tls", action="store_true", default=None,
                       help="use TLS, trusting the system's CAs (env MASKFARM_TLS=1; implied by the files below)")
    group.add_argument("--tls-ca", help="PEM file of the CA that signed the server's certificate (env MASKFARM_TLS_CA)")
    group.add_argument("--tls-cert", help="PEM client certificate, for mutual TLS (env MASKFARM_TLS_CLIENT_CERT)")
    group.add_argument("--tls-key", help="PEM private key of --tls-cert (env MASKFARM_TLS_CLIENT_KEY)")


def _security_options(args: argparse.Namespace) -> dict:
    """The Client's token and TLS arguments, from the flags."""
    return dict(token=args.token, tls=args.tls, ca_cert=args.tls_ca, client_cert=args.tls_cert,
                client_key=args.tls_key)


def _client(args: argparse.Namespace):
    """A ``Client`` for the command's --target, token and TLS flags."""
    from maskfarm.client.client import Client

    return Client(args.target, **_security_options(args))


def run_segment(args: argparse.Namespace) -> int:
    from maskfarm.server.params import MaskParams

    try:
        params = MaskParams(threshold=args.threshold, smooth=args.smooth, dilate=args.dilate, blur=args.blur,
                            soft=args.soft, invert=args.invert, union=args.union)
    except ValueError as error:
        print(f"maskfarm segment: --{error}", file=sys.stderr)
        return 2
    if args.local:
        from maskfarm.worker.cli import run_local_segment

        return run_local_segment(args, params)
    return _reporting_errors("segment", lambda: _segment_through_service(args, params))


def _segment_through_service(args: argparse.Namespace, params) -> int:
    from maskfarm.client.progress import JobProgress
    from maskfarm.client.remote import segment_files

    labels = _labels(args.label)
    bars: list[JobProgress] = []
    queued: list[str] = []

    def submitted(jobs) -> None:
        queued.extend(job.id for job in jobs)
        for part, job in enumerate(jobs, 1):
            label = f"job {job.id}" + (f" ({part}/{len(jobs)})" if len(jobs) > 1 else "")
            bars.append(JobProgress(label))
            print(f"maskfarm segment: {label}: {job.total} frames queued", file=sys.stderr)

    with _client(args) as client:
        try:
            written = segment_files(
                client, args.frames, args.prompt, args.output, args.format,
                on_submitted=submitted, on_update=lambda part, job: bars[part].update(job),
                threshold=params.threshold, smooth=params.smooth, dilate=params.dilate, blur=params.blur,
                soft=params.soft, invert=params.invert, union=params.union,
                priority=args.priority, labels=labels,
            )
        except KeyboardInterrupt:
            for job_id in queued:
                client.cancel(job_id)
            print(f"\nmaskfarm segment: interrupted; cancelled {' '.join(queued) or 'nothing'}", file=sys.stderr)
            raise
    print(f"{len(written)} masks written under {args.output}", file=sys.stderr)
    return 0


def run_status(args: argparse.Namespace) -> int:
    def show() -> int:
        with _client(args) as client:
            job = client.get(args.job)
        print(describe_job(job))
        return 0

    return _reporting_errors("status", show)


def run_cancel(args: argparse.Namespace) -> int:
    def cancel() -> int:
        with _client(args) as client:
            job = client.cancel(args.job)
        note = " (cancel requested: it stops between batches)" if job.cancel_requested and not job.state.terminal else ""
        print(f"{job.id}: {job.state.value}{note}")
        return 0

    return _reporting_errors("cancel", cancel)


def run_jobs(args: argparse.Namespace) -> int:
    from itertools import islice

    def list_jobs() -> int:
        with _client(args) as client:
            found = client.jobs(state=args.state, labels=_labels(args.label))
            rows = [_job_row(job) for job in islice(found, args.limit or None)]
        print(_table(("JOB", "STATE", "FRAMES", "CREATED", "LABELS"), rows))
        return 0

    return _reporting_errors("jobs", list_jobs)


def run_workers(args: argparse.Namespace) -> int:
    def list_workers() -> int:
        with _client(args) as client:
            workers = client.workers()
        rows = [(w.name, w.state, w.device, w.model, w.dtype, w.current_job_id or "-", _time(w.last_heartbeat))
                for w in workers]
        print(_table(("WORKER", "STATE", "DEVICE", "MODEL", "DTYPE", "JOB", "HEARTBEAT"), rows))
        return 0

    return _reporting_errors("workers", list_workers)


def run_up(args: argparse.Namespace) -> int:
    import signal
    import threading

    from maskfarm.client.local_cluster import ClusterError, ClusterSettings, LocalCluster

    worker_flags = ["--model", args.model, "--device", args.device, "--dtype", args.dtype]
    if args.max_batch:
        worker_flags += ["--max-batch", str(args.max_batch)]
    if args.compile:
        worker_flags.append("--compile")
    settings = ClusterSettings(listen=args.listen, redis_url=args.redis_url, namespace=args.namespace,
                               workers=args.workers, worker_flags=tuple(worker_flags),
                               stop_timeout_s=args.stop_timeout, metrics_listen=args.metrics_listen)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    cluster = LocalCluster(settings)
    try:
        cluster.start()
        print(f"maskfarm up: serving on {cluster.target} (Redis {cluster.redis_url}); "
              f"export MASKFARM_TARGET={cluster.target}", flush=True)
        cluster.wait_for_workers()
        print(f"maskfarm up: {args.workers} worker(s) ready; Ctrl-C stops everything", flush=True)
        cluster.supervise(stop.is_set)
    except ClusterError as error:
        print(f"maskfarm up: {error}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
    return 0


def describe_job(job) -> str:
    """A job as ``key  value`` lines, for ``maskfarm status``."""
    state = job.state.value + (" (cancel requested)" if job.cancel_requested and not job.state.terminal else "")
    lines = [("job", job.id), ("state", state), ("progress", f"{job.done}/{job.total} frames")]
    if job.error_code:
        lines.append(("error", f"{job.error_code}: {job.error_message}"))
    lines += [("prompts", ", ".join(job.prompts)), ("format", job.format), ("priority", job.priority)]
    if job.labels:
        lines.append(("labels", " ".join(f"{k}={v}" for k, v in sorted(job.labels.items()))))
    lines += [("created", _time(job.created)), ("started", _time(job.started)), ("finished", _time(job.finished))]
    if job.provenance:
        p = job.provenance
        lines += [("model", p.model + (f" @ {p.revision}" if p.revision else "")), ("dtype", p.dtype),
                  ("device", p.device), ("worker", p.worker), ("maskfarm", p.maskfarm_version)]
    return "\n".join(f"{key:<9}{value}" for key, value in lines)


def _job_row(job) -> tuple[str, ...]:
    labels = " ".join(f"{k}={v}" for k, v in sorted(job.labels.items()))
    return job.id, job.state.value, f"{job.done}/{job.total}", _time(job.created), labels or "-"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *rows])


def _time(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _UsageError(f"--label: expected KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels


class _UsageError(ValueError):
    """A command-line value that cannot be used."""


def _reporting_errors(command: str, run) -> int:
    """``run()``, with maskfarm's errors as one line on stderr and an exit code: 2 for
    what the user can fix in the command, 1 for the rest."""
    from maskfarm.client.errors import InvalidRequest, JobNotFound, MaskfarmError

    try:
        return run()
    except (_UsageError, OSError) as error:
        print(f"maskfarm {command}: {error}", file=sys.stderr)
        return 2
    except (InvalidRequest, JobNotFound) as error:
        print(f"maskfarm {command}: {error.details}", file=sys.stderr)
        return 2
    except MaskfarmError as error:
        print(f"maskfarm {command}: {error}", file=sys.stderr)
        return 1


def run_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from maskfarm.client.security import ChannelSecurity

    def check() -> int:
        with ChannelSecurity.resolve(**_security_options(args)).channel(args.target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                                  timeout=args.timeout)
            except grpc.RpcError as error:
                print(f"maskfarm health: {args.target}: {error.code().name}: {error.details()}", file=sys.stderr)
                return 1
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        print(f"{args.target}: {status}")
        return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1

    return _reporting_errors("health", check)
