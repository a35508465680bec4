"""Worker-side subcommands: ``maskfarm worker``, ``maskfarm model synthetic`` (and the
in-process ``segment --local``).

Only argparse at import time; torch is imported by the command that runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from maskfarm.core.frame_files import ImageLimits


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
        help="full: the exact CIDAS/clipseg-rd64-refined architecture (~150M parameters); tiny: for fast tests",
    )
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.set_defaults(run=run_synthetic)
    check = model_commands.add_parser(
        "check", help="exit 0 when the model's weights can be had here (answers in seconds)"
    )
    check.add_argument("model", nargs="?", default=os.environ.get("MASKFARM_MODEL", "CIDAS/clipseg-rd64-refined"))
    check.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the hub (default 5)")
    check.set_defaults(run=run_check)


def _add_worker_command(subcommands: argparse._SubParsersAction) -> None:
    worker = subcommands.add_parser(
        "worker",
        help="run a worker: load the model once, then serve the job queues (needs Redis and torch)",
        description="Serve maskfarm's RQ queues (high, normal, low) in this process with one loaded model. "
        "SIGTERM finishes the current job, then exits. Every flag falls back to its MASKFARM_* variable.",
    )
    worker.add_argument(
        "--redis-url",
        default=os.environ.get("MASKFARM_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis holding the queues, jobs and masks (env MASKFARM_REDIS_URL; default %(default)s)",
    )
    worker.add_argument(
        "--namespace",
        default=os.environ.get("MASKFARM_NAMESPACE", "maskfarm"),
        help="prefix of maskfarm's Redis keys and RQ queues; must match the server's "
        "(env MASKFARM_NAMESPACE; default %(default)s)",
    )
    worker.add_argument(
        "--name",
        default=os.environ.get("MASKFARM_WORKER_NAME", ""),
        help="worker name, unique among live workers (env MASKFARM_WORKER_NAME; default host.pid)",
    )
    worker.add_argument(
        "--burst",
        action="store_true",
        default=os.environ.get("MASKFARM_BURST", "") == "1",
        help="exit once the queues are empty (env MASKFARM_BURST=1)",
    )
    worker.add_argument(
        "--log-level",
        default=os.environ.get("MASKFARM_LOG_LEVEL", "INFO"),
        help="logging level (env MASKFARM_LOG_LEVEL; default %(default)s)",
    )
    worker.add_argument(
        "--heartbeat-s",
        type=_number(float, "MASKFARM_HEARTBEAT_S"),
        default=os.environ.get("MASKFARM_HEARTBEAT_S") or "10.0",
        help="how often a busy worker renews its job's lease (env MASKFARM_HEARTBEAT_S; default %(default)s)",
    )
    worker.add_argument(
        "--job-lease-s",
        type=_number(int, "MASKFARM_JOB_LEASE_S"),
        default=os.environ.get("MASKFARM_JOB_LEASE_S") or "30",
        help="a running job not heard from for this long is taken as lost and run again "
        "(env MASKFARM_JOB_LEASE_S; default %(default)s)",
    )
    worker.add_argument(
        "--maintenance-s",
        type=_number(int, "MASKFARM_MAINTENANCE_S"),
        default=os.environ.get("MASKFARM_MAINTENANCE_S") or "15",
        help="how often the worker looks for lost jobs, idle or not (env MASKFARM_MAINTENANCE_S; default %(default)s)",
    )
    worker.add_argument(
        "--batch-frames",
        type=_number(int, "MASKFARM_BATCH_FRAMES"),
        default=os.environ.get("MASKFARM_BATCH_FRAMES") or None,
        help="run small jobs waiting together as one batch of up to this many frames; 0 or 1: "
        "never (env MASKFARM_BATCH_FRAMES; default: the model batch, --max-batch)",
    )
    worker.add_argument(
        "--batch-wait-ms",
        type=_number(float, "MASKFARM_BATCH_WAIT_MS"),
        default=os.environ.get("MASKFARM_BATCH_WAIT_MS") or "5.0",
        help="how long a batch that found jobs waiting waits for more; with an empty queue a "
        "job starts at once (env MASKFARM_BATCH_WAIT_MS; default %(default)s)",
    )
    worker.add_argument(
        "--codec-threads",
        type=_number(int, "MASKFARM_CODEC_THREADS"),
        default=os.environ.get("MASKFARM_CODEC_THREADS") or None,
        help="threads decoding frames and encoding masks beside the model (env "
        "MASKFARM_CODEC_THREADS; default: 1 on a CPU, up to 8 with a GPU)",
    )
    worker.add_argument(
        "--metrics-listen",
        default=os.environ.get("MASKFARM_METRICS_LISTEN", ""),
        help="host:port to serve Prometheus /metrics on (env MASKFARM_METRICS_LISTEN; default: off)",
    )
    worker.add_argument(
        "--health-file",
        default=os.environ.get("MASKFARM_HEALTH_FILE", ""),
        metavar="FILE",
        help="touch FILE with every heartbeat that reaches Redis, for `maskfarm worker-health` "
        "(env MASKFARM_HEALTH_FILE; default: none)",
    )
    _add_storage_options(worker)
    _add_frame_limit_options(worker)
    add_model_options(worker)
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


def _add_storage_options(worker: argparse.ArgumentParser) -> None:
    """Shared storage: where jobs may read frames and write masks by path."""
    worker.add_argument(
        "--storage-root",
        action="append",
        metavar="DIR",
        help="shared storage: a folder under which jobs may name frames and output_dir by path; "
        "repeat for several (env MASKFARM_STORAGE_ROOTS, separated by ':' or commas; default: none)",
    )
    worker.add_argument(
        "--output-mode",
        type=_octal,
        metavar="MODE",
        default=os.environ.get("MASKFARM_OUTPUT_MODE", "0644"),
        help="octal mode of the mask files written under a job's output_dir "
        "(env MASKFARM_OUTPUT_MODE; default %(default)s)",
    )


def _add_frame_limit_options(worker: argparse.ArgumentParser) -> None:
    """The frame limits, the server's flags and variables (``maskfarm.core.frame_files``):
    give both the same values. Unset: the variable, else the default."""
    worker.add_argument(
        "--max-side", type=int, help="largest frame side, pixels (env MASKFARM_MAX_SIDE; default 16384)"
    )
    worker.add_argument(
        "--max-pixels",
        type=int,
        help="largest frame, pixels; also Pillow's bomb guard (env MASKFARM_MAX_PIXELS; default 100000000)",
    )
    worker.add_argument(
        "--max-frame-mib",
        type=int,
        help="largest frame file read by path, MiB (env MASKFARM_MAX_FRAME_MIB; default 1024)",
    )
    worker.add_argument(
        "--frame-read-timeout-s",
        type=float,
        help="seconds a frame file's open and read may take (env MASKFARM_FRAME_READ_TIMEOUT_S; default 30)",
    )


def image_limits(args: argparse.Namespace | None = None) -> ImageLimits:
    """The frame limits of the flags given in ``args``, else of the variables
    (``ImageLimits.from_env``); raises ``ValueError``."""
    import dataclasses

    from maskfarm.core.frame_files import ImageLimits

    limits = ImageLimits.from_env()
    given = {field.name: getattr(args, field.name, None) for field in dataclasses.fields(limits)}
    return dataclasses.replace(limits, **{name: value for name, value in given.items() if value is not None})


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an octal file mode such as 0644, got {text!r}") from None


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model --device --dtype --max-batch`` with their MASKFARM_* fallbacks."""
    parser.add_argument(
        "--model",
        default=os.environ.get("MASKFARM_MODEL", "CIDAS/clipseg-rd64-refined"),
        help="Hugging Face id or local directory (env MASKFARM_MODEL)",
    )
    parser.add_argument(
        "--device",
        default=os.environ.get("MASKFARM_DEVICE", "auto"),
        help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ... (env MASKFARM_DEVICE)",
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "fp32", "bf16", "fp16"),
        default=os.environ.get("MASKFARM_DTYPE", "auto"),
        help="auto = bf16 on CUDA, fp32 (exact) on CPU (env MASKFARM_DTYPE)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        default=os.environ.get("MASKFARM_COMPILE", "") == "1",
        help="torch.compile the vision tower: faster once warm, ~1 min of compiling at start (env MASKFARM_COMPILE=1)",
    )
    parser.add_argument(
        "--max-batch",
        type=_number(int, "MASKFARM_MAX_BATCH"),
        default=os.environ.get("MASKFARM_MAX_BATCH") or None,
        help="(frame, prompt) pairs per model batch; bounds memory (env MASKFARM_MAX_BATCH; default 64 on CUDA, 8 on CPU)",
    )


def run_worker(args: argparse.Namespace) -> int:
    import logging

    from huggingface_hub.utils import logging as hub_logging

    from maskfarm.core.storage import StorageRoots
    from maskfarm.worker.weights import unloadable_model_message

    hub_logging.disable_propagation()  # the hub prints its warnings itself: through ours too, each came twice
    if problem := unloadable_model_message(args.model):  # before torch's imports, which take seconds
        print(f"maskfarm worker: {problem}", file=sys.stderr)
        return 2
    from maskfarm.worker.model import ModelLoadError
    from maskfarm.worker.runner import RedisUnreachable, WorkerSettings, run

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = WorkerSettings(
            redis_url=args.redis_url,
            namespace=args.namespace,
            model=args.model,
            device=args.device,
            dtype=args.dtype,
            max_batch=args.max_batch,
            compile=args.compile,
            name=args.name,
            burst=args.burst,
            heartbeat_s=args.heartbeat_s,
            job_lease_s=args.job_lease_s,
            maintenance_s=args.maintenance_s,
            metrics_listen=args.metrics_listen,
            batch_frames=args.batch_frames,
            batch_wait_ms=args.batch_wait_ms,
            codec_threads=args.codec_threads,
            storage_roots=StorageRoots.parse(args.storage_root or os.environ.get("MASKFARM_STORAGE_ROOTS", "")).roots,
            output_mode=args.output_mode,
            health_file=args.health_file,
            image_limits=image_limits(args),
        )
    except ValueError as error:
        print(f"maskfarm worker: {error}", file=sys.stderr)
        return 2
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
    from maskfarm.core.frame_files import configure_pillow
    from maskfarm.core.jobs import ExrOptions
    from maskfarm.worker.local import segment_files
    from maskfarm.worker.model import ModelLoadError
    from maskfarm.worker.pipeline import Segmenter

    try:
        segmenter = Segmenter.load(args.model, args.device, args.dtype, args.max_batch, args.compile)
    except ModelLoadError as error:
        report.progress.interrupt()
        print(f"maskfarm: {error}", file=sys.stderr)
        return 2
    if segmenter.loaded.synthetic:
        report.note(f"{args.model} is a synthetic model with random weights: these masks are meaningless")
    try:
        limits = image_limits()
        configure_pillow(limits)
        written = segment_files(
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


def _number(kind: type[int] | type[float], variable: str) -> Callable[[str], int | float]:
    """An argparse ``type`` for a flag that falls back to ``variable``. The defaults are the
    variables' raw text, which argparse converts only when the flag's command runs: a bad
    value is that command's usage error, never another command's crash."""

    def convert(text: str) -> int | float:
        try:
            return kind(text)
        except ValueError:
            wanted = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r} (the flag, or {variable})") from None

    return convert
