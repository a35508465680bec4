"""``maskfarm up``: Redis (if none answers), a server and workers on this machine, until Ctrl-C.

It brings every part of maskfarm together, so it lives above them all (``maskfarm.local_cluster``
does the work).
"""

from __future__ import annotations

import argparse
import os
import sys

from maskfarm.core.defaults import DEFAULT_LISTEN, DEFAULT_NAMESPACE, DEFAULT_REDIS_URL
from maskfarm.worker.cli import add_model_options


def add_commands(subcommands: argparse._SubParsersAction) -> None:
    up = subcommands.add_parser(
        "up",
        help="run Redis (if none answers), a server and workers here, until Ctrl-C",
        description="An all-in-one maskfarm on this machine: uses the Redis at --redis-url (it must answer) "
        "or, when none is given, the local one at 6379 or, if none answers there, a private memory-only "
        "redis-server; starts `maskfarm server` and --workers `maskfarm worker` processes; prints the target "
        "once SERVING. Refuses a --listen address in use and a model whose weights cannot be had. Ctrl-C or "
        "SIGTERM stops them all, workers first (each finishes its current job); a second Ctrl-C kills them.",
    )
    up.add_argument(
        "--listen",
        default=os.environ.get("MASKFARM_LISTEN", DEFAULT_LISTEN),
        help="address the server listens on (env MASKFARM_LISTEN; default %(default)s)",
    )
    up.add_argument(
        "--redis-url",
        default=os.environ.get("MASKFARM_REDIS_URL", ""),
        help="Redis to use; an error when it does not answer (env MASKFARM_REDIS_URL; default: "
        f"{DEFAULT_REDIS_URL} if it answers, else a private one)",
    )
    up.add_argument(
        "--private-redis",
        action="store_true",
        help="always start a private, memory-only redis-server (gone when up stops)",
    )
    up.add_argument(
        "--namespace",
        default=os.environ.get("MASKFARM_NAMESPACE", DEFAULT_NAMESPACE),
        help="prefix of maskfarm's Redis keys (env MASKFARM_NAMESPACE; default %(default)s)",
    )
    up.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    up.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds a worker gets to finish its job when stopping (default 30)",
    )
    up.add_argument(
        "--metrics-listen",
        default=os.environ.get("MASKFARM_METRICS_LISTEN", ""),
        help="host:port of the server's Prometheus /metrics; worker N gets port + N "
        "(env MASKFARM_METRICS_LISTEN; default: off)",
    )
    up.add_argument(
        "--storage-root",
        action="append",
        default=[],
        metavar="DIR",
        help="shared storage for the server and the workers: a folder under which jobs may name "
        "frames and output_dir by path; repeat for several (default: $MASKFARM_STORAGE_ROOTS)",
    )
    add_model_options(up)
    up.set_defaults(run=run_up)


def run_up(args: argparse.Namespace) -> int:
    import signal
    import threading

    from maskfarm.local_cluster import ClusterError, ClusterSettings, ClusterStopped, LocalCluster

    worker_flags = ["--model", args.model, "--device", args.device, "--dtype", args.dtype]
    if args.max_batch:
        worker_flags += ["--max-batch", str(args.max_batch)]
    if args.compile:
        worker_flags.append("--compile")
    if args.frame_threads:
        worker_flags += ["--frame-threads", str(args.frame_threads)]
    problem = _model_problem(args.model)
    if problem:
        print(f"maskfarm up: {problem}", file=sys.stderr)
        return 2
    settings = ClusterSettings(
        listen=args.listen,
        redis_url=args.redis_url,
        private_redis=args.private_redis,
        namespace=args.namespace,
        workers=args.workers,
        worker_flags=tuple(worker_flags),
        stop_timeout_s=args.stop_timeout,
        metrics_listen=args.metrics_listen,
        storage_roots=tuple(os.path.abspath(root) for root in args.storage_root),
    )
    stop = threading.Event()
    cluster = LocalCluster(settings, stop_requested=stop.is_set)

    def on_signal(*_) -> None:
        if stop.is_set():
            cluster.kill()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    try:
        cluster.start()
        print(
            f"maskfarm up: serving on {cluster.target} (Redis {cluster.redis_url}); "
            f"export MASKFARM_TARGET={cluster.target}",
            flush=True,
        )
        cluster.wait_for_workers()
        print(f"maskfarm up: {args.workers} worker(s) ready; Ctrl-C stops everything", flush=True)
        cluster.supervise()
    except ClusterStopped:
        print("maskfarm up: stopped before it was ready", file=sys.stderr)
        return 130
    except ClusterError as error:
        print(f"maskfarm up: {error}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
    return 0


def _model_problem(model: str) -> str | None:
    """Why the workers of ``up`` could not load ``model`` (the same quick look ``maskfarm model
    check`` takes), so that ``up`` stops in seconds, before it starts anything; None when
    they probably can, or when the worker extra is not installed here to tell."""
    try:
        from maskfarm.worker.weights import unloadable_model_message

        return unloadable_model_message(model)
    except ImportError:  # no huggingface_hub: no worker could run here either, and it will say so
        return None
