"""``JobOptions``: everything a job asks for besides its frames and prompts, as one typed object.

``Client.submit``, ``submit_parts`` and ``segment`` take one (or its fields as keywords,
which change the given one), and it alone turns into the SubmitJob request, so a new
option is one field here, one in the .proto and one in the server's validation.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from maskfarm.client.errors import InvalidRequest
from maskfarm.client.prompts import Prompt, prompt_fields
from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1.params_messages import params_from_values

Format = Literal["png8", "png16", "float32", "exr", "tiff16"]
FORMATS: tuple[str, ...] = get_args(Format)
Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[str, ...] = get_args(Priority)


@dataclass(frozen=True)
class JobOptions:
    """A job's options. Unset mask parameters (None) take the server's defaults, those of
    ``ApplyCLIPSeg+``.

    ``keep_going``: a frame that fails is reported in its result (``FrameResult.error``)
    and skipped instead of failing the job. ``exr_layer`` and ``exposure`` (stops) say how
    OpenEXR frames are read. ``output_dir`` (shared storage: an absolute path the workers
    see): the workers write the mask files there, named as ``maskfarm segment`` names
    them, and the results carry their paths (``Mask.path``) instead of bytes.
    """

    threshold: float | None = None
    smooth: int | None = None
    dilate: int | None = None
    blur: int | None = None
    soft: bool = False
    invert: bool = False
    union: bool = False
    format: Format = "png8"
    priority: Priority = "normal"
    labels: Mapping[str, str] = field(default_factory=dict)
    keep_going: bool = False
    exr_layer: str = ""
    exposure: float = 0.0
    output_dir: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", dict(self.labels or {}))
        object.__setattr__(self, "output_dir", os.fspath(self.output_dir))

    def changed(self, **changes: Any) -> JobOptions:
        """These options with some fields changed; ``TypeError`` names an unknown one."""
        known = {option.name for option in dataclasses.fields(self)}
        if unknown := sorted(set(changes) - known):
            raise TypeError(f"unknown job option(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes) if changes else self

    def request(self, prompts: Sequence[str | Prompt]) -> pb.SubmitJobRequest:
        """The SubmitJob request of these options, without frames or request id. Raises
        ``InvalidRequest`` for a format or priority it does not know (the server checks
        everything else)."""
        return pb.SubmitJobRequest(
            **prompt_fields(prompts),
            params=params_from_values(dataclasses.asdict(self)),
            # Value() returns the plain int that the generated stubs type as the enum's class.
            format=cast(
                pb.OutputFormat, pb.OutputFormat.Value(f"OUTPUT_FORMAT_{_choice('format', self.format, FORMATS)}")
            ),
            priority=cast(pb.Priority, pb.Priority.Value(f"PRIORITY_{_choice('priority', self.priority, PRIORITIES)}")),
            labels=dict(self.labels),
            keep_going=self.keep_going,
            exr=pb.ExrOptions(layer=self.exr_layer, exposure=self.exposure),
            output_dir=self.output_dir,
        )


def job_options(options: JobOptions | None, changes: Mapping[str, Any]) -> JobOptions:
    """``options`` (default: all defaults) with ``changes``, the keywords a call was given."""
    return (options or JobOptions()).changed(**changes)


def _choice(field: str, value: str, known: Sequence[str]) -> str:
    if str(value).lower() not in known:
        raise InvalidRequest(f"{field}: unknown value {value!r} (known: {', '.join(known)})")
    return str(value).upper()
