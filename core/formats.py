"""The mask formats, each defined once: every other list of formats derives from ``MASK_FORMATS``.

A format has two names: the file format's (``png``, ``npy``: ``maskfarm segment
--format``, ``maskfarm.core.outputs``) and the API's (``OutputFormat.PNG8``, proto
``OUTPUT_FORMAT_PNG8``, the client's ``"png8"``). Adding a format is adding a
``MaskFormat`` here, an ``OutputFormat`` member and the proto's value; the encoders in
``maskfarm.core.outputs`` go by its ``container``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from maskfarm.core.jobs import OutputFormat

Container = Literal["PNG", "TIFF", "NPY", "EXR"]


@dataclass(frozen=True)
class MaskFormat:
    """One mask format: its names, its file, and the values it holds."""

    name: str
    """As ``maskfarm segment --format`` and ``maskfarm.core.outputs`` spell it."""
    output: OutputFormat
    """The API's name for it (the job's ``format``)."""
    extension: str
    container: Container
    bits: int
    """8 or 16: unsigned integers round(clamp(m, 0, 1) * (2**bits - 1)); 32: float32 clamp(m, 0, 1)."""
    description: str
    raw_in_service: bool = False
    """The service carries the raw little-endian float32 values, not the file's bytes."""

    @property
    def is_float(self) -> bool:
        return self.bits == 32

    @property
    def top(self) -> int:
        """The integer that stands for 1.0 (1 for a float format)."""
        return 1 if self.is_float else 2**self.bits - 1


MASK_FORMATS = (
    MaskFormat("png", OutputFormat.PNG8, ".png", "PNG", 8, "8-bit"),
    MaskFormat("png16", OutputFormat.PNG16, ".png", "PNG", 16, "16-bit"),
    MaskFormat("npy", OutputFormat.FLOAT32, ".npy", "NPY", 32, "float32, exact", raw_in_service=True),
    MaskFormat("exr", OutputFormat.EXR, ".exr", "EXR", 32, "float32 OpenEXR (channel Y), exact"),
    MaskFormat("tiff16", OutputFormat.TIFF16, ".tif", "TIFF", 16, "16-bit TIFF"),
)
FILE_FORMAT_NAMES = tuple(fmt.name for fmt in MASK_FORMATS)
"""The file formats' names, in ``--format``'s order."""
_BY_NAME = {fmt.name: fmt for fmt in MASK_FORMATS}
_BY_OUTPUT = {fmt.output: fmt for fmt in MASK_FORMATS}


def file_format(name: str | MaskFormat) -> MaskFormat:
    """The format named ``name`` (``"png"``...); ValueError naming the choices otherwise."""
    if isinstance(name, MaskFormat):
        return name
    found = _BY_NAME.get(name)
    if found is None:
        raise ValueError(f"format must be one of {', '.join(FILE_FORMAT_NAMES)}, got {name!r}")
    return found


def output_format(output: OutputFormat) -> MaskFormat:
    """The format of a job's ``OutputFormat`` (the files its masks are written as)."""
    return _BY_OUTPUT[output]


def format_of_extension(extension: str) -> MaskFormat | None:
    """The first format whose files end in ``extension`` (``.png``: 8 or 16-bit alike to a
    reader); None for none."""
    return next((fmt for fmt in MASK_FORMATS if fmt.extension == extension), None)
