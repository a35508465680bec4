"""A frame's float masks as the bytes of the job's output format (what the store keeps).

PNG8, PNG16, EXR and TIFF16 are the same files ``maskfarm segment --local`` writes
(``encode_mask``), so the service and the local tool agree byte for byte; FLOAT32 is raw
little-endian float32, row-major, ``height * width * 4`` bytes.
"""

from __future__ import annotations

import numpy as np

from maskfarm.core.formats import output_format
from maskfarm.core.jobs import OutputFormat, StoredFrame
from maskfarm.core.outputs import encode_mask


def encode_output(mask: np.ndarray, fmt: OutputFormat) -> bytes:
    """One (H, W) mask in [0, 1] as the bytes of ``fmt``."""
    spec = output_format(fmt)
    if spec.raw_in_service:
        return np.ascontiguousarray(mask, dtype="<f4").tobytes()
    return encode_mask(mask, spec)


def frame_result(index: int, masks: np.ndarray, fmt: OutputFormat, union: bool) -> StoredFrame:
    """The stored result of frame ``index`` from its (K, H, W) masks; the last is the
    union when ``union`` is set (the pipeline's order)."""
    encoded = [encode_output(mask, fmt) for mask in masks]
    height, width = masks.shape[1:]
    if union:
        return StoredFrame(index, width, height, encoded[:-1], encoded[-1])
    return StoredFrame(index, width, height, encoded)
