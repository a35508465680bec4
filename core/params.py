"""What a mask request asks for: the node's knobs, their defaults and their ranges.

This is part of the contract between the server (which validates requests) and the
worker (whose pipeline computes masks), so it imports only the standard library.
Defaults and ranges are those of the ComfyUI node ``ApplyCLIPSeg+``.
"""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")

THRESHOLD_RANGE = (0.0, 1.0)
SMOOTH_RANGE = (0, 32)
DILATE_RANGE = (-32, 32)
BLUR_RANGE = (0, 64)


def _knob(
    default: T, help: str, *, bounds: tuple[float, float] | None = None, per_prompt: bool = False, api_name: str = ""
) -> T:
    """A mask parameter: its default, what it does (the CLI's help), its range, whether a
    prompt may set its own (``Prompt``), and its name in the API when that differs."""
    metadata = {"help": help, "bounds": bounds, "per_prompt": per_prompt, "api_name": api_name}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class MaskParams:
    """How the model's output becomes a mask.

    Sizes (``smooth``, ``dilate``, ``blur``) are in pixels of CLIPSeg's 352x352 output,
    as in the node. ``soft`` skips threshold/smooth/dilate/blur and returns the sigmoid
    map; ``union`` adds one mask per frame, the maximum over its prompts' masks;
    ``invert`` replaces every mask m by 1 - m, last (after the union).

    Each field says its help, range and API name (``_knob``), from which the API messages
    (``maskfarm.v1.params_messages``), the server's checks, the CLI's flags and the prompt
    overrides are all made: a new parameter is a field here, one in the .proto, and its
    step in the pipeline (``maskfarm.worker.masks``), plus the client's ``JobOptions`` field.

    Construction raises ``ValueError`` naming the parameter when a value is out of range.
    """

    threshold: float = _knob(0.4, "probability above which a pixel is in", bounds=THRESHOLD_RANGE, per_prompt=True)
    smooth: int = _knob(9, "majority-vote smoothing kernel", bounds=SMOOTH_RANGE, per_prompt=True)
    dilate: int = _knob(0, "grow (>0) or shrink (<0) by this many pixels", bounds=DILATE_RANGE, per_prompt=True)
    blur: int = _knob(0, "Gaussian blur kernel of the final mask", bounds=BLUR_RANGE, per_prompt=True)
    soft: bool = _knob(False, "the probability map itself: no threshold/smooth/dilate/blur")
    invert: bool = _knob(
        False, "write 1 - mask (applied last, to the union too: with --union, union/ holds the pixels no prompt covers)"
    )
    union: bool = _knob(False, "also write the union of the prompts' masks (union/)", api_name="union_mask")

    def __post_init__(self) -> None:
        for knob in fields(self):
            value, bounds = getattr(self, knob.name), knob.metadata["bounds"]
            if isinstance(knob.default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{knob.name} must be a bool, got {value!r}")
            elif isinstance(knob.default, float):
                _check_float(knob.name, value, bounds)
            else:
                _check_int(knob.name, value, bounds)


MASK_PARAMS: tuple[Field, ...] = fields(MaskParams)
"""Every mask parameter, in order, with its metadata (help, bounds, per_prompt, api_name)."""
PER_PROMPT: tuple[str, ...] = tuple(knob.name for knob in MASK_PARAMS if knob.metadata["per_prompt"])
"""The mask parameters a prompt may set for itself; the others stay the job's."""


def api_name(knob: Field) -> str:
    """A parameter's field name in the API's MaskParams message."""
    return knob.metadata["api_name"] or knob.name


def odd_kernel(size: int) -> int:
    """The node's rule for Gaussian kernel sizes: an even size k means k + 1."""
    return size + 1 if size % 2 == 0 else size


def _check_float(name: str, value: object, bounds: Any) -> None:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if math.isnan(value) or not low <= value <= high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")


def _check_int(name: str, value: object, bounds: Any) -> None:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
