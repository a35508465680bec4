"""Turning API requests into plain, checked values, or saying precisely what is wrong.

Everything is checked before anything is stored or queued. A ``ValidationError`` names
the field as a path into the request (``frames[3].data``, ``params.smooth``) and the
reason; the server returns it as INVALID_ARGUMENT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from maskfarm.server.images import ImageError, probe_image
from maskfarm.server.jobs import ExrOptions, JobSpec, JobState, OutputFormat, Priority
from maskfarm.server.params import MaskParams
from maskfarm.v1 import segmentation_pb2 as pb

MAX_FRAMES = 10_000
"""Frames per job: a longer shot is several jobs (the client splits by itself)."""
MAX_PROMPTS = 256
MAX_PROMPT_CHARS = 1000
MAX_LABELS = 64
MAX_LABEL_KEY_CHARS = 128
MAX_LABEL_VALUE_CHARS = 1024
MAX_REQUEST_ID_CHARS = 128
MAX_FRAME_NAME_CHARS = 255
MAX_EXR_LAYER_CHARS = 255
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

FORMATS = {
    pb.OUTPUT_FORMAT_UNSPECIFIED: OutputFormat.PNG8,
    pb.OUTPUT_FORMAT_PNG8: OutputFormat.PNG8,
    pb.OUTPUT_FORMAT_PNG16: OutputFormat.PNG16,
    pb.OUTPUT_FORMAT_FLOAT32: OutputFormat.FLOAT32,
    pb.OUTPUT_FORMAT_EXR: OutputFormat.EXR,
    pb.OUTPUT_FORMAT_TIFF16: OutputFormat.TIFF16,
}
PRIORITIES = {
    pb.PRIORITY_UNSPECIFIED: Priority.NORMAL,
    pb.PRIORITY_HIGH: Priority.HIGH,
    pb.PRIORITY_NORMAL: Priority.NORMAL,
    pb.PRIORITY_LOW: Priority.LOW,
}
STATES = {
    pb.JOB_STATE_QUEUED: JobState.QUEUED,
    pb.JOB_STATE_RUNNING: JobState.RUNNING,
    pb.JOB_STATE_SUCCEEDED: JobState.SUCCEEDED,
    pb.JOB_STATE_FAILED: JobState.FAILED,
    pb.JOB_STATE_CANCELLED: JobState.CANCELLED,
}

T = TypeVar("T")


class ValidationError(ValueError):
    """A request field is wrong: ``field`` is its path in the request."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class ImageLimits:
    max_side: int = 16384
    max_pixels: int = 100_000_000


@dataclass(frozen=True)
class JobQuery:
    """A checked ListJobs request."""

    states: frozenset[JobState]
    labels: dict[str, str]
    page_size: int
    page_token: str


def job_spec(request: pb.SubmitJobRequest, limits: ImageLimits) -> JobSpec:
    """The job a SubmitJob request asks for; raises ``ValidationError``."""
    if not request.frames:
        raise ValidationError("frames", "at least one frame is required")
    if len(request.frames) > MAX_FRAMES:
        raise ValidationError("frames", f"{len(request.frames)} frames, at most {MAX_FRAMES} per job")
    if not request.prompts:
        raise ValidationError("prompts", "at least one prompt is required")
    if len(request.prompts) > MAX_PROMPTS:
        raise ValidationError("prompts", f"{len(request.prompts)} prompts, at most {MAX_PROMPTS} per job")
    for index, prompt in enumerate(request.prompts):
        _check_prompt(f"prompts[{index}]", prompt)
    params = mask_params(request.params)
    output_format = _enum_value("format", request.format, pb.OutputFormat, FORMATS)
    priority = _enum_value("priority", request.priority, pb.Priority, PRIORITIES)
    labels = _labels("labels", request.labels)
    if len(request.request_id) > MAX_REQUEST_ID_CHARS:
        raise ValidationError("request_id", f"{len(request.request_id)} characters, at most {MAX_REQUEST_ID_CHARS}")
    for index, frame in enumerate(request.frames):
        _check_frame(f"frames[{index}]", frame, limits)
    return JobSpec(
        frames=[frame.data for frame in request.frames],
        frame_names=[frame.name for frame in request.frames],
        prompts=list(request.prompts),
        params=params,
        format=output_format,
        priority=priority,
        labels=labels,
        request_id=request.request_id,
        keep_going=request.keep_going,
        exr=exr_options(request.exr),
    )


def mask_params(message: pb.MaskParams) -> MaskParams:
    """The mask parameters, unset fields taking the defaults; raises ``ValidationError``."""
    given = {
        name: getattr(message, name)
        for name in ("threshold", "smooth", "dilate", "blur")
        if message.HasField(name)
    }
    flags = {"soft": message.soft, "invert": message.invert, "union": message.union_mask}
    try:
        return MaskParams(**given, **flags)
    except ValueError as error:
        name, _, reason = str(error).partition(" ")
        raise ValidationError(f"params.{name}", reason) from None


def exr_options(message: pb.ExrOptions) -> ExrOptions:
    """How EXR frames are read; raises ``ValidationError``."""
    if message.layer and (len(message.layer) > MAX_EXR_LAYER_CHARS or not message.layer.isprintable()):
        raise ValidationError("exr.layer", f"must be a printable layer name of at most {MAX_EXR_LAYER_CHARS} "
                                           f"characters, got {message.layer[:80]!r}")
    try:
        return ExrOptions(layer=message.layer, exposure=message.exposure)
    except ValueError as error:
        raise ValidationError("exr.exposure", str(error).removeprefix("exposure ")) from None


def job_id(value: str) -> str:
    """A job id from a request, which must not be empty. (An id maskfarm never made is
    not malformed but unknown: the store does not find it, as with an expired job.)"""
    if not value:
        raise ValidationError("job_id", "required")
    return value


def frame_index(field: str, value: int) -> int:
    if value < 0:
        raise ValidationError(field, f"must be >= 0, got {value}")
    return value


def job_query(request: pb.ListJobsRequest) -> JobQuery:
    """The checked filters and paging of a ListJobs request."""
    states = frozenset(
        _enum_value(f"states[{i}]", state, pb.JobState, STATES) for i, state in enumerate(request.states)
    )
    if request.page_size < 0:
        raise ValidationError("page_size", f"must be >= 0, got {request.page_size}")
    return JobQuery(
        states=states,
        labels=_labels("labels", request.labels),
        page_size=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
        page_token=request.page_token,
    )


def _check_prompt(field: str, prompt: str) -> None:
    if not prompt.strip():
        raise ValidationError(field, "blank")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(field, f"{len(prompt)} characters, at most {MAX_PROMPT_CHARS}")


def _check_frame(field: str, frame: pb.Frame, limits: ImageLimits) -> None:
    name = frame.name
    if len(name) > MAX_FRAME_NAME_CHARS:
        raise ValidationError(f"{field}.name", f"{len(name)} characters, at most {MAX_FRAME_NAME_CHARS}")
    if any(char in name for char in "/\\\0") or name in (".", ".."):
        raise ValidationError(f"{field}.name", f"must be a plain file name, got {name!r}")
    try:
        probe_image(frame.data, max_side=limits.max_side, max_pixels=limits.max_pixels)
    except ImageError as error:
        raise ValidationError(f"{field}.data", str(error)) from None


def _enum_value(field: str, number: int, enum: EnumTypeWrapper, values: dict[int, T]) -> T:
    if number not in values:
        known = ", ".join(name for name in enum.keys() if enum.Value(name) in values)
        raise ValidationError(field, f"unknown value {number} (known: {known})")
    return values[number]


def _labels(field: str, labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise ValidationError(field, f"{len(labels)} labels, at most {MAX_LABELS}")
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_KEY_CHARS:
            raise ValidationError(f"{field}[{key!r}]", f"keys must have 1 to {MAX_LABEL_KEY_CHARS} characters")
        if len(value) > MAX_LABEL_VALUE_CHARS:
            raise ValidationError(f"{field}[{key!r}]", f"{len(value)} characters, at most {MAX_LABEL_VALUE_CHARS}")
    return dict(labels)
