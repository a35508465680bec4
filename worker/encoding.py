"""A frame's float masks as the bytes of the job's output format (what the store keeps).

PNG8, PNG16, EXR and TIFF16 are the same files ``maskfarm segment --local`` writes (both
encode with ``encode_file``), so the service and the local tool agree byte for byte;
FLOAT32 is raw little-endian float32, row-major, ``height * width * 4`` bytes.
"""

from __future__ import annotations

import cv2
import numpy as np

from maskfarm.core.formats import MaskFormat, file_format, output_format
from maskfarm.core.jobs import OutputFormat, StoredFrame
from maskfarm.core.outputs import PNG_COMPRESS_LEVEL, encode_mask, quantise

PNG_OPTIONS = (
    [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
    if hasattr(cv2, "IMWRITE_PNG_FILTER")
    else None
)
"""zlib level 1 and one row filter, Sub (each value less its left neighbour: masks are
smooth along rows). Pillow tries every filter on every row, which costs more than the
compression: OpenCV's libpng this way is 2-3x faster for files no bigger
(docs/BENCHMARKS.md, "PNG masks through OpenCV"). None with an OpenCV that cannot choose
the filter (4.11 cannot, 5.0 can), which would be no faster than Pillow."""


def encode_file(mask: np.ndarray, fmt: str | MaskFormat) -> bytes:
    """One (H, W) mask in [0, 1] as the bytes of its file: ``outputs.encode_mask``'s, but
    PNGs (8- and 16-bit grey) through OpenCV (``PNG_OPTIONS``): the same pixels, other
    bytes, made faster."""
    spec = file_format(fmt)
    if spec.container != "PNG" or PNG_OPTIONS is None:
        return encode_mask(mask, spec)
    values = np.ascontiguousarray(quantise(mask, spec))
    encoded, data = cv2.imencode(".png", values, PNG_OPTIONS)
    if not encoded:
        raise ValueError(f"OpenCV could not encode a {values.dtype} mask of shape {values.shape} as PNG")
    return data.tobytes()


def encode_output(mask: np.ndarray, fmt: OutputFormat) -> bytes:
    """One (H, W) mask in [0, 1] as the bytes of ``fmt``."""
    spec = output_format(fmt)
    if spec.raw_in_service:
        return np.ascontiguousarray(mask, dtype="<f4").tobytes()
    return encode_file(mask, spec)


def frame_result(index: int, masks: np.ndarray, fmt: OutputFormat, union: bool) -> StoredFrame:
    """The stored result of frame ``index`` from its (K, H, W) masks; the last is the
    union when ``union`` is set (the pipeline's order)."""
    encoded = [encode_output(mask, fmt) for mask in masks]
    height, width = masks.shape[1:]
    if union:
        return StoredFrame(index, width, height, encoded[:-1], encoded[-1])
    return StoredFrame(index, width, height, encoded)
