"""What a job is, in the words the server and the worker share.

These plain types are the job as it lives in Redis (see ``store``): the server makes a
``JobSpec`` from a request, the store keeps it as a ``JobRecord``, the worker writes
``FrameResult``\\ s and registers itself with a ``WorkerInfo``. Like the store, this module
imports only the standard library, so the worker can use it without grpc.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from maskfarm.server.params import MaskParams

JOB_FUNCTION = "maskfarm.worker.job.run_job"
"""The RQ job function, by dotted name: the server enqueues it without importing it.
It is called with one argument, the job id."""

DEFAULT_NAMESPACE = "maskfarm"


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class ErrorCode(str, enum.Enum):
    """Why a job failed (the API's ErrorCode, by lower-case name)."""

    INVALID_INPUT = "invalid_input"
    EXPIRED = "expired"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    OUT_OF_MEMORY = "out_of_memory"
    INTERNAL = "internal"


class Priority(str, enum.Enum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


PRIORITIES = (Priority.HIGH, Priority.NORMAL, Priority.LOW)
"""The order in which workers serve the queues."""


class OutputFormat(str, enum.Enum):
    """How a mask is encoded: greyscale PNG, 8 or 16 bit, or raw little-endian float32."""

    PNG8 = "png8"
    PNG16 = "png16"
    FLOAT32 = "float32"


def queue_name(priority: Priority, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The RQ queue of a priority: ``maskfarm-high``, ``maskfarm-normal``, ``maskfarm-low``."""
    return f"{namespace}-{priority.value}"


@dataclass(frozen=True)
class JobSpec:
    """A validated request: everything needed to create a job."""

    frames: list[bytes]
    frame_names: list[str]
    prompts: list[str]
    params: MaskParams = MaskParams()
    format: OutputFormat = OutputFormat.PNG8
    priority: Priority = Priority.NORMAL
    labels: dict[str, str] = field(default_factory=dict)
    request_id: str = ""

    @property
    def input_bytes(self) -> int:
        return sum(len(frame) for frame in self.frames)


@dataclass(frozen=True)
class Provenance:
    """What made a job's masks; the worker sets it when it starts the job."""

    model: str = ""
    revision: str = ""
    dtype: str = ""
    device: str = ""
    maskfarm_version: str = ""
    worker: str = ""


@dataclass(frozen=True)
class JobRecord:
    """A job as stored. Times are Unix seconds; ``None`` until they happen."""

    id: str
    state: JobState
    prompts: list[str]
    frame_names: list[str]
    params: MaskParams
    format: OutputFormat
    priority: Priority
    labels: dict[str, str]
    request_id: str
    created_at: float
    queue_deadline: float
    """A job still queued after this fails as expired: its inputs may be gone."""
    result_ttl: int
    input_bytes: int
    done_frames: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error_code: ErrorCode | None = None
    error_message: str = ""
    cancel_requested: bool = False
    attempts: int = 0
    provenance: Provenance = Provenance()

    @property
    def total_frames(self) -> int:
        return len(self.frame_names)


@dataclass(frozen=True)
class FrameResult:
    """The masks of one frame, encoded in the job's output format.

    ``masks[k]`` belongs to ``prompts[k]``; ``union`` is the union mask when asked for.
    All masks have the frame's size.
    """

    index: int
    width: int
    height: int
    masks: list[bytes]
    union: bytes | None = None

    @property
    def nbytes(self) -> int:
        return sum(len(mask) for mask in self.masks) + len(self.union or b"")


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker tells about itself beyond RQ's own worker record."""

    name: str
    device: str = ""
    model: str = ""
    revision: str = ""
    dtype: str = ""
    maskfarm_version: str = ""
    current_job: str = ""
