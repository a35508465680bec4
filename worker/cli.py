"""Worker-side subcommands: ``maskfarm worker``, ``maskfarm model synthetic`` (and the
in-process ``segment --local``).

Only argparse at import time; torch is imported by the command that runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from maskfarm.core.defaults import DEFAULT_MODEL


def add_commands(subcommands: argparse._SubParsersAction) -> None:
    _add_worker_command(subcommands)
    _add_worker_health_command(subcommands)
    model = subcommands.add_parser("model", help="manage CLIPSeg models")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    synthetic = model_commands.add_parser(
        "synthetic", help="write a random-weight model directory (for tests and benchmarks; masks are meaningless)"
    )
    synthetic.add_argument("directory", help="where to write the model")
    synthetic.add_argument(
        "--preset",
        choices=("full", "tiny"),
        default="tiny",
        help=f"full: the exact {DEFAULT_MODEL} architecture (~150M parameters); tiny: for fast tests",
    )
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.set_defaults(run=run_synthetic)
    check = model_commands.add_parser(
        "check", help="exit 0 when the model's weights can be had here (answers in seconds)"
    )
    check.add_argument("model", nargs="?", default=os.environ.get("MASKFARM_MODEL", DEFAULT_MODEL))
    check.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the hub (default 5)")
    check.set_defaults(run=run_check)


def _add_worker_command(subcommands: argparse._SubParsersAction) -> None:
    from maskfarm.core.settings import add_arguments
    from maskfarm.worker.settings import WorkerSettings

    worker = subcommands.add_parser(
        "worker",
        help="run a worker: load the model once, then serve the job queues (needs Redis and torch)",
        description="Serve maskfarm's RQ queues (high, normal, low) in this process with one loaded model. "
        "SIGTERM finishes the current job, then exits. Every flag falls back to its MASKFARM_* variable.",
    )
    add_arguments(WorkerSettings, worker)
    worker.set_defaults(run=run_worker)


def _add_worker_health_command(subcommands: argparse._SubParsersAction) -> None:
    check = subcommands.add_parser(
        "worker-health",
        help="exit 0 when the worker writing its --health-file was heard by Redis lately (a liveness probe)",
        description="Reads the age of a worker's health file (maskfarm worker --health-file): exit 0 when the "
        "worker's last heartbeat reached Redis within --within seconds, 1 otherwise. Needs neither Redis nor torch.",
    )
    check.add_argument(
        "--file",
        default=os.environ.get("MASKFARM_HEALTH_FILE", ""),
        help="the worker's health file (env MASKFARM_HEALTH_FILE)",
    )
    check.add_argument(
        "--within",
        type=float,
        default=60.0,
        help="seconds since the last heartbeat that still count as alive (default %(default)s: "
        "twice the default job lease)",
    )
    check.set_defaults(run=run_worker_health)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model --device --dtype --compile --max-batch --frame-threads``, the worker's own flags with their
    MASKFARM_* fallbacks (for ``segment --local`` and ``up``)."""
    from maskfarm.core.settings import add_arguments
    from maskfarm.worker.settings import MODEL_OPTIONS, WorkerSettings

    add_arguments(WorkerSettings, parser, MODEL_OPTIONS)


def run_worker(args: argparse.Namespace) -> int:
    from huggingface_hub.utils import logging as hub_logging

    from maskfarm.core.settings import from_args
    from maskfarm.worker.settings import WorkerSettings
    from maskfarm.worker.weights import unloadable_model_message

    hub_logging.disable_propagation()  # the hub prints its warnings itself: through ours too, each came twice
    try:  # a wrong setting is said at once, before the model is looked for
        settings = from_args(WorkerSettings, args)
    except ValueError as error:
        print(f"maskfarm worker: {error}", file=sys.stderr)
        return 2
    if problem := unloadable_model_message(args.model):  # before torch's imports, which take seconds
        print(f"maskfarm worker: {problem}", file=sys.stderr)
        return 2
    from maskfarm.worker.model import ModelLoadError
    from maskfarm.worker.runner import RedisUnreachable, run

    configure_logging(args.log_level)
    try:
        return run(settings)
    except ModelLoadError as error:
        print(f"maskfarm worker: {error}", file=sys.stderr)
        return 2
    except RedisUnreachable as error:
        print(
            f"maskfarm worker: {error}\nStart Redis (redis-server), or point --redis-url / MASKFARM_REDIS_URL "
            "at the one the server uses.",
            file=sys.stderr,
        )
        return 2


HTTP_CLIENT_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")
"""The HTTP clients the Hugging Face hub talks through: each logs every request at INFO."""


def configure_logging(level: str) -> None:
    """The worker's log format at ``level``; the hub's HTTP clients say only warnings unless
    ``level`` is DEBUG (a line per request is noise in a worker's log, not news)."""
    import logging

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet = logging.getLogger().getEffectiveLevel() > logging.DEBUG
    for name in HTTP_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)


def run_worker_health(args: argparse.Namespace) -> int:
    from maskfarm.worker.liveness import age_s

    if not args.file:
        print("maskfarm worker-health: no health file: give --file or MASKFARM_HEALTH_FILE", file=sys.stderr)
        return 2
    age = age_s(args.file)
    if age is None:
        print(
            f"maskfarm worker-health: {args.file} does not exist: the worker has not reached Redis yet", file=sys.stderr
        )
        return 1
    if age > args.within:
        print(f"maskfarm worker-health: last heartbeat {age:.0f} s ago (more than {args.within:g} s)", file=sys.stderr)
        return 1
    print(f"alive: last heartbeat {age:.0f} s ago")
    return 0


def run_synthetic(args: argparse.Namespace) -> int:
    from maskfarm.worker.synthetic import NOTICE, write_synthetic_model

    path = write_synthetic_model(args.directory, preset=args.preset, seed=args.seed)
    print(f"wrote {path}: {args.preset} {NOTICE}", file=sys.stderr)
    return 0


def run_check(args: argparse.Namespace) -> int:
    from maskfarm.worker.weights import weights_unavailable

    reason = weights_unavailable(args.model, args.timeout)
    if reason:
        print(f"maskfarm: no weights for {args.model}: {reason}", file=sys.stderr)
        return 1
    print(f"{args.model}: available")
    return 0


def run_local_segment(args: argparse.Namespace, params, frames, report) -> int:
    """The ``segment --local`` command: load the model here and write mask files for
    ``frames`` (the files ``maskfarm.client.sequence_run.plan_frames`` left to do),
    reporting to ``report`` (its ``SequenceReport``); returns the exit code."""
    from maskfarm.worker.weights import unloadable_model_message

    if problem := unloadable_model_message(args.model):  # before torch's imports, which take seconds
        report.progress.interrupt()
        print(f"maskfarm: {problem}", file=sys.stderr)
        return 2
    from maskfarm.core.frame_files import ImageLimits, configure_pillow
    from maskfarm.core.jobs import ExrOptions
    from maskfarm.worker.local import segment_files_locally
    from maskfarm.worker.model import ModelLoadError
    from maskfarm.worker.pipeline import Segmenter

    try:
        segmenter = Segmenter.load(
            args.model, args.device, args.dtype, args.max_batch, args.compile, args.frame_threads
        )
    except (ModelLoadError, ValueError) as error:  # ValueError: a model option out of range
        report.progress.interrupt()
        print(f"maskfarm: {error}", file=sys.stderr)
        return 2
    if segmenter.loaded.synthetic:
        report.note(f"{args.model} is a synthetic model with random weights: these masks are meaningless")
    try:
        limits = ImageLimits.from_env()
        configure_pillow(limits)
        written = segment_files_locally(
            segmenter,
            frames,
            args.prompt,
            args.output,
            params,
            args.format,
            keep_going=args.keep_going,
            on_failed=report.failed,
            on_done=lambda name: report.progress.advance(),
            exr=ExrOptions(args.exr_layer, args.exposure),
            limits=limits,
        )
    except ValueError as error:
        report.progress.interrupt()
        print(f"maskfarm: {error}", file=sys.stderr)
        return 2
    return report.finish(len(written))
