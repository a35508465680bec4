"""What a mask request asks for: the node's knobs, their defaults and their ranges.

This is part of the contract between the server (which validates requests) and the
worker (whose pipeline computes masks), so it imports only the standard library.
Defaults and ranges are those of the ComfyUI node ``ApplyCLIPSeg+``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

THRESHOLD_RANGE = (0.0, 1.0)
SMOOTH_RANGE = (0, 32)
DILATE_RANGE = (-32, 32)
BLUR_RANGE = (0, 64)


@dataclass(frozen=True)
class MaskParams:
    """How the model's output becomes a mask.

    Sizes (``smooth``, ``dilate``, ``blur``) are in pixels of CLIPSeg's 352x352 output,
    as in the node. ``soft`` skips threshold/smooth/dilate/blur and returns the sigmoid
    map; ``union`` adds one mask per frame, the maximum over its prompts' masks;
    ``invert`` replaces every mask m by 1 - m, last (after the union).

    Construction raises ``ValueError`` naming the parameter when a value is out of range.
    """

    threshold: float = 0.4
    smooth: int = 9
    dilate: int = 0
    blur: int = 0
    soft: bool = False
    invert: bool = False
    union: bool = False

    def __post_init__(self) -> None:
        _check_float("threshold", self.threshold, THRESHOLD_RANGE)
        _check_int("smooth", self.smooth, SMOOTH_RANGE)
        _check_int("dilate", self.dilate, DILATE_RANGE)
        _check_int("blur", self.blur, BLUR_RANGE)
        for name in ("soft", "invert", "union"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")


def odd_kernel(size: int) -> int:
    """The node's rule for Gaussian kernel sizes: an even size k means k + 1."""
    return size + 1 if size % 2 == 0 else size


def _check_float(name: str, value: object, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if math.isnan(value) or not low <= value <= high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")


def _check_int(name: str, value: object, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
