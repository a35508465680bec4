"""Typed, immutable views of the API's jobs and workers (``maskfarm.v1`` messages).

Enum values are plain strings without their proto prefix (``"QUEUED"``, ``"PNG8"``,
``"OUT_OF_MEMORY"``), timestamps are aware UTC datetimes (``None`` when unset), and the
original message stays at hand as ``.message`` for anything these views leave out.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from maskfarm.client.prompts import Prompt, prompt_from_message
from maskfarm.core import jobs as core
from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1.enum_messages import proto_numbers

_PROTO_STATES = proto_numbers(core.JobState)


class JobState(str, enum.Enum):
    """A job's state as the API names it: core's ``JobState`` (``maskfarm.core.jobs``,
    what the store keeps: ``"queued"``) by its member name (``"QUEUED"``); whether it is
    terminal and its proto number come from there."""

    QUEUED = core.JobState.QUEUED.name
    RUNNING = core.JobState.RUNNING.name
    SUCCEEDED = core.JobState.SUCCEEDED.name
    FAILED = core.JobState.FAILED.name
    CANCELLED = core.JobState.CANCELLED.name

    @property
    def terminal(self) -> bool:
        return self.stored.is_terminal

    @property
    def proto(self) -> pb.JobState:
        return _PROTO_STATES[self.stored]

    @property
    def stored(self) -> core.JobState:
        """The same state as core (and the store) names it."""
        return core.JobState[self.name]


@dataclass(frozen=True)
class Provenance:
    """What made a job's masks (set once a worker starts it)."""

    model: str
    revision: str
    dtype: str
    device: str
    maskfarm_version: str
    worker: str


@dataclass(frozen=True)
class Job:
    """A job as the server last reported it."""

    id: str
    state: JobState
    done: int
    """Frames finished: masks stored, or (``keep_going``) failed and skipped."""
    total: int
    prompts: tuple[str, ...]
    frame_names: tuple[str, ...]
    labels: Mapping[str, str]
    format: str
    priority: str
    request_id: str
    error_code: str | None
    """Set when FAILED: ``"INVALID_INPUT"``, ``"EXPIRED"``, ``"TIMEOUT"``, ... ."""
    error_message: str
    provenance: Provenance | None
    created: datetime | None
    started: datetime | None
    finished: datetime | None
    cancel_requested: bool
    message: pb.Job = field(repr=False, compare=False)
    failed: int = 0
    """Frames among ``done`` that failed and were skipped (``keep_going``)."""
    keep_going: bool = False
    output_dir: str = ""
    """Shared storage: where the worker writes the masks ("" when they come as bytes)."""
    prompt_specs: tuple[Prompt, ...] = ()
    """The prompts with their negatives, own parameters or images (an image without its
    bytes), for a job submitted with any; empty for plain prompts (see ``prompts``)."""

    @classmethod
    def from_message(cls, job: pb.Job) -> Job:
        error_code = None
        if job.HasField("error") and job.error.code != pb.ERROR_CODE_UNSPECIFIED:
            error_code = _enum_name(pb.ErrorCode, job.error.code, "ERROR_CODE_")
        provenance = Provenance(**{name: getattr(job.provenance, name) for name in Provenance.__dataclass_fields__})
        return cls(
            id=job.id,
            state=JobState(_enum_name(pb.JobState, job.state, "JOB_STATE_")),
            done=job.progress.done_frames,
            total=job.progress.total_frames,
            prompts=tuple(job.prompts),
            frame_names=tuple(job.frame_names),
            labels=dict(job.labels),
            format=_enum_name(pb.OutputFormat, job.format, "OUTPUT_FORMAT_"),
            priority=_enum_name(pb.Priority, job.priority, "PRIORITY_"),
            request_id=job.request_id,
            error_code=error_code,
            error_message=job.error.message,
            provenance=provenance if provenance.model else None,
            created=_datetime(job, "create_time"),
            started=_datetime(job, "start_time"),
            finished=_datetime(job, "finish_time"),
            cancel_requested=job.cancel_requested,
            message=job,
            failed=job.progress.failed_frames,
            keep_going=job.keep_going,
            output_dir=job.output_dir,
            prompt_specs=tuple(prompt_from_message(prompt) for prompt in job.prompt_specs),
        )


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker: what it runs on and what it is doing."""

    name: str
    hostname: str
    pid: int
    state: str
    device: str
    model: str
    revision: str
    dtype: str
    queues: tuple[str, ...]
    """Priorities it serves, highest first: ``("HIGH", "NORMAL", "LOW")``."""
    current_job_id: str
    maskfarm_version: str
    started: datetime | None
    last_heartbeat: datetime | None
    message: pb.Worker = field(repr=False, compare=False)

    @classmethod
    def from_message(cls, worker: pb.Worker) -> WorkerInfo:
        return cls(
            name=worker.name,
            hostname=worker.hostname,
            pid=worker.pid,
            state=worker.state,
            device=worker.device,
            model=worker.model,
            revision=worker.revision,
            dtype=worker.dtype,
            queues=tuple(_enum_name(pb.Priority, queue, "PRIORITY_") for queue in worker.queues),
            current_job_id=worker.current_job_id,
            maskfarm_version=worker.maskfarm_version,
            started=_datetime(worker, "start_time"),
            last_heartbeat=_datetime(worker, "last_heartbeat"),
            message=worker,
        )


def _enum_name(enum_type, number: int, prefix: str) -> str:
    try:
        return enum_type.Name(number).removeprefix(prefix)
    except ValueError:
        return str(number)


def _datetime(message, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    stamp: Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=timezone.utc)
