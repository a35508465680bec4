"""Turning API requests into plain, checked values, or saying precisely what is wrong.

Everything is checked before anything is stored or queued. A ``ValidationError`` names
the field as a path into the request (``frames[3].data``, ``params.smooth``) and the
reason; the server returns it as INVALID_ARGUMENT.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import TypeVar, cast

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from maskfarm.core.echo import quoted
from maskfarm.core.exrheader import is_exr, layer_channels, read_header
from maskfarm.core.frame_files import FrameFileError, ImageLimits, check_frame_path
from maskfarm.core.images import ImageError, probe_image
from maskfarm.core.jobs import ExrOptions, JobSpec, JobState, OutputFormat, Priority
from maskfarm.core.mask_files import InputFrames, InputOverwrite
from maskfarm.core.outputs import prompt_folders
from maskfarm.core.params import MASK_PARAMS, MaskParams, api_name
from maskfarm.core.prompts import OVERRIDES, Exemplar, Overrides, Prompt
from maskfarm.core.storage import StoragePathError, StorageRoots
from maskfarm.core.storage_access import StorageAccess, StorageDenied
from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1.enum_messages import members_by_number
from maskfarm.v1.params_messages import params_given

MAX_FRAMES = 10_000
"""Frames per job: a longer shot is several jobs (the client splits by itself)."""
MAX_PROMPTS = 256
MAX_PROMPT_CHARS = 1000
MAX_NEGATIVES = 16
MAX_LABELS = 64
MAX_LABEL_KEY_CHARS = 128
MAX_LABEL_VALUE_CHARS = 1024
MAX_REQUEST_ID_CHARS = 128
MAX_JOB_ID_CHARS = 64
"""The longest job id the store accepts (``maskfarm.jobqueue.keys.JOB_ID_PATTERN``): a longer one is malformed."""
MAX_FRAME_NAME_CHARS = 255
MAX_EXR_LAYER_CHARS = 255
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
STORAGE_OFF = "shared storage is not enabled on this server (--storage-root)"

FORMATS = {pb.OUTPUT_FORMAT_UNSPECIFIED: OutputFormat.PNG8, **members_by_number(OutputFormat)}
PRIORITIES = {pb.PRIORITY_UNSPECIFIED: Priority.NORMAL, **members_by_number(Priority)}
STATES = members_by_number(JobState)

T = TypeVar("T")
K = TypeVar("K")


class ValidationError(ValueError):
    """A request field is wrong: ``field`` is its path in the request."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PathDenied(ValidationError):
    """A path outside the roots the caller may use (``storage_access``), decided by the
    path alone: NOT_FOUND for a frame (``writing`` false), PERMISSION_DENIED for an
    ``output_dir``."""

    def __init__(self, field: str, reason: str, *, writing: bool) -> None:
        super().__init__(field, reason)
        self.writing = writing


@dataclass(frozen=True)
class JobQuery:
    """A checked ListJobs request."""

    states: frozenset[JobState]
    labels: dict[str, str]
    page_size: int
    page_token: str


def job_spec(
    request: pb.SubmitJobRequest,
    limits: ImageLimits,
    storage: StorageRoots = StorageRoots(),
    access: StorageAccess | None = None,
) -> JobSpec:
    """The job a SubmitJob request asks for; raises ``ValidationError``.

    Frames and ``output_dir`` given by path must lie under ``storage`` (see
    ``maskfarm.core.storage``; none: refused). A path frame is checked as far as this
    host sees the storage: when it does, the file must exist and its header pass the size
    limits; the worker checks again, on its own filesystem, before it reads. With
    ``access`` (the caller's own roots, see ``storage_access``) they must lie under those
    too (``PathDenied`` if not), checked before anything is looked up on the storage. No
    mask file may replace one of the job's frames (``mask_files``)."""
    if not request.frames:
        raise ValidationError("frames", "at least one frame is required")
    if len(request.frames) > MAX_FRAMES:
        raise ValidationError("frames", f"{len(request.frames)} frames, at most {MAX_FRAMES} per job")
    prompts, prompt_specs = _prompts(request, limits, storage, access)
    params = mask_params(request.params)
    output_format = _enum_value("format", request.format, pb.OutputFormat, FORMATS)
    priority = _enum_value("priority", request.priority, pb.Priority, PRIORITIES)
    labels = _labels("labels", request.labels)
    if len(request.request_id) > MAX_REQUEST_ID_CHARS:
        raise ValidationError("request_id", f"{len(request.request_id)} characters, at most {MAX_REQUEST_ID_CHARS}")
    frames = [_frame(f"frames[{index}]", frame, limits, storage, access) for index, frame in enumerate(request.frames)]
    exr = exr_options(request.exr)
    _check_exr_layer(request.frames, exr.layer)
    output_dir = _output_dir("output_dir", request.output_dir, storage, access) if request.output_dir else ""
    paths = [path for _, _, path in frames]
    if output_dir:
        _check_mask_file_names([name for _, name, _ in frames])
        _check_inputs_spared(
            paths, [name for _, name, _ in frames], output_dir, prompt_folders(prompts, params.union), output_format
        )
    return JobSpec(
        frames=[data for data, _, _ in frames],
        frame_names=[name for _, name, _ in frames],
        frame_paths=paths if any(paths) else [],
        output_dir=output_dir,
        prompts=prompts,
        prompt_specs=prompt_specs,
        params=params,
        format=output_format,
        priority=priority,
        labels=labels,
        request_id=request.request_id,
        keep_going=request.keep_going,
        exr=exr,
        storage_access=access,
    )


def mask_params(message: pb.MaskParams) -> MaskParams:
    """The mask parameters, unset fields taking the defaults; raises ``ValidationError``."""
    try:
        return MaskParams(**params_given(message))
    except ValueError as error:
        name, _, reason = str(error).partition(" ")
        raise ValidationError(f"params.{name}", reason) from None


def exr_options(message: pb.ExrOptions) -> ExrOptions:
    """How EXR frames are read; raises ``ValidationError``."""
    if message.layer and (len(message.layer) > MAX_EXR_LAYER_CHARS or not message.layer.isprintable()):
        raise ValidationError(
            "exr.layer",
            f"must be a printable layer name of at most {MAX_EXR_LAYER_CHARS} characters, got {quoted(message.layer)}",
        )
    try:
        return ExrOptions(layer=message.layer, exposure=message.exposure)
    except ValueError as error:
        raise ValidationError("exr.exposure", str(error).removeprefix("exposure ")) from None


def _check_exr_layer(frames: Iterable[pb.Frame], layer: str) -> None:
    """An EXR frame sent as bytes whose header shows no readable ``layer`` is refused
    here rather than failing the job at the worker (a frame given by path is left to the
    worker, which reads it: INVALID_INPUT). The frames have passed ``probe_image``."""
    for index, frame in enumerate(frames):
        if is_exr(frame.data):
            try:
                layer_channels(read_header(frame.data).channel_names, layer)
            except ValueError as error:
                name = f" ({frame.name})" if frame.name else ""
                raise ValidationError("exr.layer", f"frames[{index}]{name}: {error}") from None


def job_id(value: str) -> str:
    """A job id from a request, which must not be empty. (An id maskfarm never made is
    not malformed but unknown: the store does not find it, as with an expired job.)"""
    if not value:
        raise ValidationError("job_id", "required")
    if len(value) > MAX_JOB_ID_CHARS:
        raise ValidationError("job_id", f"{len(value)} characters, at most {MAX_JOB_ID_CHARS}")
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


def _prompts(
    request: pb.SubmitJobRequest, limits: ImageLimits, storage: StorageRoots, access: StorageAccess | None
) -> tuple[list[str], list[Prompt]]:
    """The prompts' names and, when the request gives ``prompt_specs``, the checked prompts
    (an image prompt's file as a frame's). Every prompt and negative counts towards
    ``MAX_PROMPTS``: each is one more decoder pass per frame."""
    if request.prompts and request.prompt_specs:
        raise ValidationError("prompt_specs", "give prompts or prompt_specs, not both")
    if not request.prompt_specs:
        if not request.prompts:
            raise ValidationError("prompts", "at least one prompt is required")
        if len(request.prompts) > MAX_PROMPTS:
            raise ValidationError("prompts", f"{len(request.prompts)} prompts, at most {MAX_PROMPTS} per job")
        for index, prompt in enumerate(request.prompts):
            _check_prompt(f"prompts[{index}]", prompt)
        return list(request.prompts), []
    conditions = sum(1 + len(spec.negatives) for spec in request.prompt_specs)
    if conditions > MAX_PROMPTS:
        raise ValidationError("prompt_specs", f"{conditions} prompts and negatives, at most {MAX_PROMPTS} per job")
    specs = [
        _prompt_spec(f"prompt_specs[{index}]", spec, limits, storage, access)
        for index, spec in enumerate(request.prompt_specs)
    ]
    return [spec.name for spec in specs], specs


def _prompt_spec(
    field: str, message: pb.Prompt, limits: ImageLimits, storage: StorageRoots, access: StorageAccess | None
) -> Prompt:
    has_image = message.HasField("image")
    if has_image == bool(message.text):
        raise ValidationError(field, "give text or image, exactly one")
    if message.text:
        _check_prompt(f"{field}.text", message.text)
    if len(message.negatives) > MAX_NEGATIVES:
        raise ValidationError(f"{field}.negatives", f"{len(message.negatives)} negatives, at most {MAX_NEGATIVES}")
    for index, negative in enumerate(message.negatives):
        _check_prompt(f"{field}.negatives[{index}]", negative)
    overrides = _prompt_overrides(f"{field}.params", message.params)
    image = None
    if has_image:
        data, name, path = _frame(f"{field}.image", message.image, limits, storage, access)
        image = Exemplar(data, path, name)
    return Prompt(message.text, tuple(message.negatives), image=image, **overrides)


def _prompt_overrides(field: str, message: pb.MaskParams) -> Overrides:
    """A prompt's own mask parameters, checked; the others (soft, invert, union_mask) are the job's."""
    for name, value in params_given(message).items():
        knob = next(knob for knob in MASK_PARAMS if knob.name == name)
        if name not in OVERRIDES and (value or not isinstance(knob.default, bool)):
            raise ValidationError(f"{field}.{api_name(knob)}", "is the job's: set it in the request's params")
    given = params_given(message, OVERRIDES)
    try:
        MaskParams(**given)
    except ValueError as error:
        name, _, reason = str(error).partition(" ")
        raise ValidationError(f"{field}.{name}", reason) from None
    return cast(Overrides, given)


def _check_prompt(field: str, prompt: str) -> None:
    if not prompt.strip():
        raise ValidationError(field, "blank")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(field, f"{len(prompt)} characters, at most {MAX_PROMPT_CHARS}")


def _frame(
    field: str, frame: pb.Frame, limits: ImageLimits, storage: StorageRoots, access: StorageAccess | None
) -> tuple[bytes, str, str]:
    """A checked frame as ``(data, name, path)``: its bytes, or ``b""`` and its path."""
    if frame.data and frame.path:
        raise ValidationError(field, "give data or path, not both")
    _check_frame_name(f"{field}.name", frame.name)
    if not frame.path:
        try:
            probe_image(frame.data, max_side=limits.max_side, max_pixels=limits.max_pixels)
        except ImageError as error:
            hint = "" if frame.data else " (give the image file's bytes, or its path on shared storage)"
            raise ValidationError(f"{field}.data", f"{error}{hint}") from None
        return frame.data, frame.name, ""
    path = _frame_path(f"{field}.path", frame.path, limits, storage, access)
    name = frame.name or os.path.basename(path)
    _check_frame_name(f"{field}.path", name)
    return b"", name, path


def _check_frame_name(field: str, name: str) -> None:
    if len(name) > MAX_FRAME_NAME_CHARS:
        raise ValidationError(field, f"{len(name)} characters, at most {MAX_FRAME_NAME_CHARS}")
    if any(char in name for char in "/\\\0") or name in (".", ".."):
        raise ValidationError(field, f"must be a plain file name, got {quoted(name)}")


def _frame_path(field: str, path: str, limits: ImageLimits, storage: StorageRoots, access: StorageAccess | None) -> str:
    """A frame's checked, normalised path, under the caller's own roots too (``access``);
    where this host sees the storage, its file is opened and its header probed as
    ``maskfarm.core.frame_files`` rules (no blocking, bounded size and read time, size
    limits for every format)."""
    if not storage:
        raise ValidationError(field, STORAGE_OFF)
    try:
        if access is not None:
            access.check_read(path)
        path = check_frame_path(path, limits, storage)
    except StorageDenied as error:
        raise PathDenied(field, str(error), writing=False) from None
    except (StoragePathError, FrameFileError) as error:
        raise ValidationError(field, str(error)) from None
    return path


def _check_mask_file_names(names: list[str]) -> None:
    """Mask files under an output_dir are named after their frames' stems (see
    ``maskfarm.core.outputs``): every frame needs a name, and no two the same stem."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if not name:
            raise ValidationError(
                f"frames[{index}].name", "required with output_dir (mask files are named after their frame)"
            )
        stem = PurePath(name).stem
        if stem in seen:
            raise ValidationError(
                f"frames[{index}].name",
                f"{quoted(name)} names the same mask files as frames[{seen[stem]}] under output_dir",
            )
        seen[stem] = index


def _check_inputs_spared(
    paths: list[str], names: list[str], output_dir: str, folders: list[str], output_format: OutputFormat
) -> None:
    """No mask file may replace one of the job's frames (``mask_files``); checked as far
    as this host sees the storage (by path where it does not)."""
    try:
        InputFrames(paths).check(output_dir, folders, names, output_format)
    except InputOverwrite as error:
        raise ValidationError("output_dir", str(error)) from None


def _output_dir(field: str, path: str, storage: StorageRoots, access: StorageAccess | None) -> str:
    if not storage:
        raise ValidationError(field, STORAGE_OFF)
    try:
        if access is not None:
            access.check_write(path)
        return storage.output_dir(path)
    except StorageDenied as error:
        raise PathDenied(field, str(error), writing=True) from None
    except StoragePathError as error:
        raise ValidationError(field, str(error)) from None


def _enum_value(field: str, number: K, enum: EnumTypeWrapper, values: Mapping[K, T]) -> T:
    if number not in values:
        known = ", ".join(name for name in enum.keys() if enum.Value(name) in values)
        raise ValidationError(field, f"unknown value {number} (known: {known})")
    return values[number]


def _labels(field: str, labels: Mapping[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise ValidationError(field, f"{len(labels)} labels, at most {MAX_LABELS}")
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_KEY_CHARS:
            raise ValidationError(f"{field}[{quoted(key)}]", f"keys must have 1 to {MAX_LABEL_KEY_CHARS} characters")
        if len(value) > MAX_LABEL_VALUE_CHARS:
            raise ValidationError(
                f"{field}[{quoted(key)}]", f"{len(value)} characters, at most {MAX_LABEL_VALUE_CHARS}"
            )
    return dict(labels)
