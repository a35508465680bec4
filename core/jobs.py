"""What a job is, in the words the server and the worker share.

These plain types are the job as it lives in Redis (see ``store``): the server makes a
``JobSpec`` from a request, the store keeps it as a ``JobRecord``, the worker writes
``StoredFrame``\\ s and registers itself with a ``WorkerRecord``. Like the store, this module
imports only the standard library, so the worker can use it without grpc.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from maskfarm.core.params import MaskParams
from maskfarm.core.prompts import Prompt
from maskfarm.core.storage_access import StorageAccess


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
    """How a mask is encoded: greyscale PNG (8 or 16 bit), raw little-endian float32,
    a one-channel float32 OpenEXR, or a greyscale 16-bit TIFF."""

    PNG8 = "png8"
    PNG16 = "png16"
    FLOAT32 = "float32"
    EXR = "exr"
    TIFF16 = "tiff16"


MAX_EXPOSURE = 32.0


@dataclass(frozen=True)
class ExrOptions:
    """How an OpenEXR frame's linear light becomes the model's sRGB picture: the layer
    (AOV) read ("" = R, G, B) and the exposure in stops applied first."""

    layer: str = ""
    exposure: float = 0.0

    def __post_init__(self) -> None:
        if not -MAX_EXPOSURE <= self.exposure <= MAX_EXPOSURE:
            raise ValueError(f"exposure must be in [{-MAX_EXPOSURE:g}, {MAX_EXPOSURE:g}] stops, got {self.exposure}")


@dataclass(frozen=True)
class JobSpec:
    """A validated request: everything needed to create a job.

    ``frames[i]`` is the encoded file, or ``b""`` when the frame is read by the worker
    from ``frame_paths[i]`` (shared storage; ``frame_paths`` is empty when no frame is).
    ``prompts`` are the prompts' names; ``prompt_specs`` the prompts themselves when any
    is more than a text (negatives, its own parameters, an image), else empty.
    """

    frames: list[bytes]
    frame_names: list[str]
    prompts: list[str]
    params: MaskParams = MaskParams()
    format: OutputFormat = OutputFormat.PNG8
    priority: Priority = Priority.NORMAL
    labels: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    frame_paths: list[str] = field(default_factory=list)
    keep_going: bool = False
    output_dir: str = ""
    exr: ExrOptions = ExrOptions()
    storage_access: StorageAccess | None = None
    """The roots the job's owner may read and write (per-owner rules), None: the storage
    roots, unrestricted."""
    prompt_specs: list[Prompt] = field(default_factory=list)

    @property
    def input_bytes(self) -> int:
        exemplars = sum(len(prompt.image.data) for prompt in self.prompt_specs if prompt.image is not None)
        return sum(len(frame) for frame in self.frames) + exemplars


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
    frame_paths: list[str] = field(default_factory=list)
    """Per frame, its shared-storage path or ""; empty when every frame came as bytes."""
    keep_going: bool = False
    output_dir: str = ""
    exr: ExrOptions = ExrOptions()
    failed_frames: int = 0
    """Frames among ``done_frames`` that failed and were skipped (``keep_going``)."""
    storage_access: StorageAccess | None = None
    """The roots its owner may read frames from and write masks into, checked again by
    the worker; None: no per-owner rules (the storage roots, unrestricted)."""
    prompt_specs: list[Prompt] = field(default_factory=list)
    """The prompts when any is more than a text (see ``JobSpec``); empty: ``prompts``."""

    @property
    def total_frames(self) -> int:
        return len(self.frame_names)

    @property
    def specs(self) -> list[Prompt]:
        """The prompts, in order, each as a ``Prompt`` (a plain one for a text)."""
        return list(self.prompt_specs) or [Prompt(text) for text in self.prompts]

    def frame_path(self, index: int) -> str:
        """The shared-storage path of frame ``index``, or "" when it came as bytes."""
        return self.frame_paths[index] if self.frame_paths else ""


@dataclass(frozen=True)
class StoredFrame:
    """The masks of one frame, encoded in the job's output format.

    ``masks[k]`` belongs to ``prompts[k]``; ``union`` is the union mask when asked for.
    All masks have the frame's size. A job with an ``output_dir`` keeps the files' paths
    instead (``mask_paths``, ``union_path``; ``masks`` empty). A frame skipped under
    ``keep_going`` has only ``error``.
    """

    index: int
    width: int
    height: int
    masks: list[bytes]
    union: bytes | None = None
    mask_paths: list[str] = field(default_factory=list)
    union_path: str = ""
    error: str = ""

    @classmethod
    def failed(cls, index: int, error: str) -> StoredFrame:
        return cls(index, 0, 0, [], error=error)

    @property
    def nbytes(self) -> int:
        paths = sum(len(path) for path in self.mask_paths) + len(self.union_path)
        return sum(len(mask) for mask in self.masks) + len(self.union or b"") + paths + len(self.error)


@dataclass(frozen=True)
class WorkerRecord:
    """What a worker tells about itself beyond RQ's own worker record."""

    name: str
    device: str = ""
    model: str = ""
    revision: str = ""
    dtype: str = ""
    maskfarm_version: str = ""
    current_job: str = ""
