"""Client-side subcommands: ``segment``, ``status``, ``cancel``, ``jobs``, ``workers``,
``health`` and ``up``.

Errors print one line on stderr and exit non-zero: 2 for what the user can fix in the
command (a bad parameter, an unreadable file, a pattern with no frames, an unknown job),
1 for everything else (a failed or cancelled job, an unreachable server), and, for
``segment --keep-going``, 3 when some frames failed (or were missing) and were skipped
while every other frame's masks were written.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from maskfarm.client.sequence_run import DEFAULT_CHUNK, DEFAULT_IN_FLIGHT
from maskfarm.core.formats import FILE_FORMAT_NAMES, MASK_FORMATS
from maskfarm.core.jobs import JobState


def add_commands(subcommands: argparse._SubParsersAction) -> None:
    from maskfarm.client.prompt_args import add_prompt_options
    from maskfarm.worker.cli import add_model_options

    segment = subcommands.add_parser(
        "segment",
        help="write one mask per frame and prompt",
        description="Frames are image files, globs (shots/*.png, in natural order) or frame patterns "
        "(shot.####.exr, shot.%%04d.exr: every frame on disk, or those of --frames). Masks go to "
        "OUTPUT/<prompt>/<frame name>.<ext>; frames whose masks all exist are skipped (resume) "
        "unless --overwrite. Through the service, each chunk of --chunk frames is one job.",
    )
    segment.add_argument(
        "frames", nargs="+", metavar="FRAMES", help="image files (PNG, JPEG, TIFF, WebP, BMP), globs or frame patterns"
    )
    segment.add_argument(
        "--frames",
        "-f",
        dest="frame_list",
        metavar="LIST",
        help="frames of the patterns: 1001-1100, 1001-1100x2 (every 2nd), 1001,1005,1010-1020",
    )
    segment.add_argument("--overwrite", action="store_true", help="redo frames whose masks exist (default: skip them)")
    segment.add_argument(
        "--keep-going",
        action="store_true",
        help="report and skip a frame that fails (or is missing) instead of stopping; exit 3 at the end if any did",
    )
    segment.add_argument(
        "--chunk", type=_positive, default=DEFAULT_CHUNK, help=f"frames per job (service only; default {DEFAULT_CHUNK})"
    )
    segment.add_argument(
        "--in-flight",
        type=_positive,
        default=DEFAULT_IN_FLIGHT,
        help=f"chunks queued or running at once (service only; default {DEFAULT_IN_FLIGHT})",
    )
    add_prompt_options(segment)
    segment.add_argument("--output", "-o", default="masks", help="output folder (default: masks)")
    segment.add_argument(
        "--format",
        choices=FILE_FORMAT_NAMES,
        default="png",
        help="; ".join(f"{fmt.name}: {fmt.description}" for fmt in MASK_FORMATS) + " (default: png)",
    )
    _add_mask_options(segment)
    segment.add_argument("--local", action="store_true", help="run the pipeline in this process (no server, no Redis)")
    segment.add_argument(
        "--priority",
        choices=("high", "normal", "low"),
        default="normal",
        help="queue to wait in (service only; default normal)",
    )
    segment.add_argument(
        "--shared-storage",
        action="store_true",
        help="the workers see these files at the same paths: send the frames by path and have "
        "the workers write the masks under --output (service only; the server and workers "
        "need a --storage-root holding both)",
    )
    segment.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label the job, e.g. shot=sq010 (service only; repeat for several)",
    )
    _add_exr_and_preview_options(segment)
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
    jobs.add_argument(
        "--state",
        action="append",
        default=[],
        choices=[state.value for state in JobState],
        help="only jobs in this state (repeat for several)",
    )
    jobs.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only jobs with this label (repeat: all must match)",
    )
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


def _add_mask_options(segment: argparse.ArgumentParser) -> None:
    """One flag per mask parameter, from its definition (``maskfarm.core.params``)."""
    from maskfarm.core.params import MASK_PARAMS

    for knob in MASK_PARAMS:
        flag, help = "--" + knob.name, knob.metadata["help"]
        if isinstance(knob.default, bool):
            segment.add_argument(flag, action="store_true", help=help)
            continue
        low, high = knob.metadata["bounds"]
        span = "" if isinstance(knob.default, float) else f", {low}-{high}"
        segment.add_argument(
            flag, type=type(knob.default), default=knob.default, help=f"{help}{span} (default {knob.default})"
        )


def _add_exr_and_preview_options(segment: argparse.ArgumentParser) -> None:
    group = segment.add_argument_group("OpenEXR frames and previews")
    group.add_argument(
        "--exr-layer",
        default="",
        metavar="LAYER",
        help="layer (AOV) of OpenEXR frames to read, e.g. diffuse for diffuse.R/G/B "
        "(default: R, G, B); a layer with only Y or one channel reads as grey",
    )
    group.add_argument(
        "--exposure",
        type=float,
        default=0.0,
        metavar="STOPS",
        help="exposure applied to OpenEXR frames' linear values before the sRGB conversion "
        "the model sees (-32 to 32; default 0)",
    )
    group.add_argument(
        "--preview",
        action="store_true",
        help="also write OUTPUT/preview/<prompt>/<frame>.jpg: each mask tinted red over its frame",
    )


def _previews(args: argparse.Namespace, frames, code: int) -> int:
    """``--preview``: after a run that wrote masks (exit 0, or 3: some frames skipped),
    the overlays of this run's frames (``maskfarm.client.previews``)."""
    if not args.preview or code not in (0, 3):
        return code

    from maskfarm.client.previews import write_previews

    try:
        written = write_previews(
            frames,
            args.prompt,
            args.output,
            args.format,
            union=args.union,
            exr_layer=args.exr_layer,
            exposure=args.exposure,
        )
    except (OSError, ValueError, ImportError) as error:
        print(f"maskfarm segment: --preview: {error}", file=sys.stderr)
        return 1
    print(f"{len(written)} previews written under {os.path.join(args.output, 'preview')}", file=sys.stderr)
    return code


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_target(parser: argparse.ArgumentParser) -> None:
    from maskfarm.client.client import DEFAULT_TARGET

    parser.add_argument(
        "--target",
        default=os.environ.get("MASKFARM_TARGET", DEFAULT_TARGET),
        help=f"server address (env MASKFARM_TARGET, default {DEFAULT_TARGET})",
    )
    _add_security(parser)


def _add_security(parser: argparse.ArgumentParser) -> None:
    """Token and TLS flags; each one left unset falls back to its variable (see
    ``maskfarm.client.security``)."""
    group = parser.add_argument_group("authentication and TLS")
    group.add_argument(
        "--token",
        help="bearer token for a server with --auth-tokens (env MASKFARM_TOKEN; "
        "prefer the variable: arguments are visible to other users)",
    )
    group.add_argument(
        "--tls",
        action="store_true",
        default=None,
        help="use TLS, trusting the system's CAs (env MASKFARM_TLS=1; implied by the files below)",
    )
    group.add_argument("--tls-ca", help="PEM file of the CA that signed the server's certificate (env MASKFARM_TLS_CA)")
    group.add_argument("--tls-cert", help="PEM client certificate, for mutual TLS (env MASKFARM_TLS_CLIENT_CERT)")
    group.add_argument("--tls-key", help="PEM private key of --tls-cert (env MASKFARM_TLS_CLIENT_KEY)")


def _security_options(args: argparse.Namespace) -> dict:
    """The Client's token and TLS arguments, from the flags."""
    return dict(token=args.token, tls=args.tls, ca_cert=args.tls_ca, client_cert=args.tls_cert, client_key=args.tls_key)


def _client(args: argparse.Namespace):
    """A ``Client`` for the command's --target, token and TLS flags."""
    from maskfarm.client.client import Client

    return Client(args.target, **_security_options(args))


def run_segment(args: argparse.Namespace) -> int:
    from maskfarm.client.prompt_args import PromptArgsError, prompts_from_args
    from maskfarm.client.sequence_run import SequenceReport, plan_frames
    from maskfarm.client.sequences import SequenceError
    from maskfarm.core.params import MASK_PARAMS, MaskParams

    try:
        params = MaskParams(**{knob.name: getattr(args, knob.name) for knob in MASK_PARAMS})
    except ValueError as error:
        print(f"maskfarm segment: --{error}", file=sys.stderr)
        return 2
    try:
        args.prompt = prompts_from_args(args, params)
    except PromptArgsError as error:
        print(f"maskfarm segment: {error}", file=sys.stderr)
        return 2
    try:
        plan = plan_frames(
            args.frames,
            args.frame_list,
            args.prompt,
            args.output,
            args.format,
            union=args.union,
            overwrite=args.overwrite,
            keep_going=args.keep_going,
        )
    except SequenceError as error:
        print(f"maskfarm segment: {error}", file=sys.stderr)
        return 2
    report = SequenceReport(plan, args.output)
    if not plan.frames:
        return report.finish(0)
    if args.local:
        from maskfarm.worker.cli import run_local_segment

        return _previews(args, plan.frames, run_local_segment(args, params, plan.frames, report))
    code = _reporting_errors(
        "segment", lambda: _segment_through_service(args, params, plan.frames, report), args.target
    )
    return _previews(args, plan.frames, code)


def _segment_through_service(args: argparse.Namespace, params, frames, report) -> int:
    from maskfarm.client.sequence_run import segment_sequence

    labels = _labels(args.label)
    with _client(args) as client:
        try:
            written = segment_sequence(
                client,
                frames,
                args.prompt,
                args.output,
                args.format,
                report,
                chunk=args.chunk,
                in_flight=args.in_flight,
                **dataclasses.asdict(params),
                priority=args.priority,
                labels=labels,
                keep_going=args.keep_going,
                **_storage_options(args),
                exr_layer=args.exr_layer,
                exposure=args.exposure,
            )
        except KeyboardInterrupt:
            print(
                "maskfarm segment: interrupted; the jobs in flight were cancelled (run again to resume)",
                file=sys.stderr,
            )
            raise
    return report.finish(written)


def _storage_options(args: argparse.Namespace) -> dict[str, str]:
    """``--shared-storage``: the job's output_dir, and with it frames sent by path."""
    from maskfarm.client.remote import shared_storage_options

    return shared_storage_options(args.output) if args.shared_storage else {}


def run_status(args: argparse.Namespace) -> int:
    def show() -> int:
        with _client(args) as client:
            job = client.get(args.job)
        print(describe_job(job))
        return 0

    return _reporting_errors("status", show, args.target)


def run_cancel(args: argparse.Namespace) -> int:
    def cancel() -> int:
        with _client(args) as client:
            job = client.cancel(args.job)
        note = (
            " (cancel requested: it stops between batches)" if job.cancel_requested and not job.state.terminal else ""
        )
        print(f"{job.id}: {job.state.value}{note}")
        return 0

    return _reporting_errors("cancel", cancel, args.target)


def run_jobs(args: argparse.Namespace) -> int:
    from itertools import islice

    def list_jobs() -> int:
        with _client(args) as client:
            found = client.jobs(state=args.state, labels=_labels(args.label))
            rows = [_job_row(job) for job in islice(found, args.limit or None)]
        print(_table(("JOB", "STATE", "FRAMES", "CREATED", "LABELS"), rows))
        return 0

    return _reporting_errors("jobs", list_jobs, args.target)


def run_workers(args: argparse.Namespace) -> int:
    def list_workers() -> int:
        with _client(args) as client:
            workers = client.workers()
        rows = [
            (w.name, w.state, w.device, w.model, w.dtype, w.current_job_id or "-", _time(w.last_heartbeat))
            for w in workers
        ]
        print(_table(("WORKER", "STATE", "DEVICE", "MODEL", "DTYPE", "JOB", "HEARTBEAT"), rows))
        return 0

    return _reporting_errors("workers", list_workers, args.target)


def describe_job(job) -> str:
    """A job as ``key  value`` lines, for ``maskfarm status``."""
    from maskfarm.client.prompts import describe_prompt

    state = job.state.value + (" (cancel requested)" if job.cancel_requested and not job.state.terminal else "")
    lines = [("job", job.id), ("state", state), ("progress", f"{job.done}/{job.total} frames")]
    if job.error_code:
        lines.append(("error", f"{job.error_code}: {job.error_message}"))
    prompts = ", ".join(describe_prompt(prompt) for prompt in job.prompt_specs or job.prompts)
    lines += [("prompts", prompts), ("format", job.format), ("priority", job.priority)]
    if job.labels:
        lines.append(("labels", " ".join(f"{k}={v}" for k, v in sorted(job.labels.items()))))
    lines += [("created", _time(job.created)), ("started", _time(job.started)), ("finished", _time(job.finished))]
    if job.provenance:
        p = job.provenance
        lines += [
            ("model", p.model + (f" @ {p.revision}" if p.revision else "")),
            ("dtype", p.dtype),
            ("device", p.device),
            ("worker", p.worker),
            ("maskfarm", p.maskfarm_version),
        ]
    return "\n".join(f"{key:<9}{value}" for key, value in lines)


def _job_row(job) -> tuple[str, ...]:
    labels = " ".join(f"{k}={v}" for k, v in sorted(job.labels.items()))
    return job.id, job.state.value, f"{job.done}/{job.total}", _time(job.created), labels or "-"


def _table(header: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]
    )


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


def _reporting_errors(command: str, run, target: str = "") -> int:
    """``run()``, with maskfarm's errors as one line on stderr and an exit code: 2 for
    what the user can fix in the command, 1 for the rest. A server that cannot be reached
    gets a second line: how to start one, or point at another (``target``)."""
    from maskfarm.client.errors import (
        FrameRefused,
        InvalidRequest,
        JobNotFound,
        MaskfarmError,
        StorageDenied,
        Unavailable,
    )

    try:
        return run()
    except BrokenPipeError:  # not the command's fault: ``maskfarm.cli.main`` ends quietly
        raise
    except (_UsageError, OSError) as error:
        print(f"maskfarm {command}: {error}", file=sys.stderr)
        return 2
    except FrameRefused as error:
        print(f"maskfarm {command}: {error.details} (--keep-going skips such frames)", file=sys.stderr)
        return 2
    except (InvalidRequest, JobNotFound, StorageDenied) as error:
        print(f"maskfarm {command}: {error.details}", file=sys.stderr)
        return 2
    except MaskfarmError as error:
        print(f"maskfarm {command}: {error}", file=sys.stderr)
        if isinstance(error, Unavailable) and target:
            print(
                f"maskfarm {command}: is a maskfarm server running at {target}? Start one with `maskfarm up`, "
                "or point --target (or MASKFARM_TARGET) at yours",
                file=sys.stderr,
            )
        return 1


def run_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from maskfarm.client.security import ChannelSecurity

    def check() -> int:
        with ChannelSecurity.resolve(**_security_options(args)).channel(args.target) as channel:
            try:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)  # type: ignore[attr-defined]  # stubs list no methods
            except grpc.RpcError as error:
                print(f"maskfarm health: {args.target}: {error.code().name}: {error.details()}", file=sys.stderr)
                return 1
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        print(f"{args.target}: {status}")
        return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1

    return _reporting_errors("health", check)
