"""OpenEXR test files, written with the OpenEXR package, and the documented conversion
written out independently as the reference."""

from __future__ import annotations

import io

import numpy as np

OpenEXR = __import__("pytest").importorskip("OpenEXR")


def exr_bytes(
    channels: dict[str, np.ndarray],
    *,
    data_origin: tuple[int, int] = (0, 0),
    display: tuple[int, int, int, int] | None = None,
    compression=None,
) -> bytes:
    """A single-part scanline EXR holding ``channels`` (each H x W, half, float or uint32)
    as its data window at ``data_origin`` (x, y), in the ``display`` window (x_min, y_min,
    x_max, y_max; default: the data window)."""
    height, width = next(iter(channels.values())).shape
    x, y = data_origin
    data_window = ((x, y), (x + width - 1, y + height - 1))
    display_window = ((display[0], display[1]), (display[2], display[3])) if display else data_window
    header = {
        "compression": OpenEXR.ZIP_COMPRESSION if compression is None else compression,
        "type": OpenEXR.scanlineimage,
        "dataWindow": data_window,
        "displayWindow": display_window,
    }
    buffer = io.BytesIO()
    OpenEXR.File(header, {name: np.ascontiguousarray(values) for name, values in channels.items()}).write(buffer)
    return buffer.getvalue()


def reference_srgb8(linear: np.ndarray, exposure: float = 0.0) -> np.ndarray:
    """The conversion maskfarm documents, step by step in float32: NaN -> 0, times
    2^exposure, clamp [0, 1], sRGB OETF, round to 8 bits."""
    v = np.asarray(linear, dtype=np.float32).copy()
    v[np.isnan(v)] = 0
    v = np.minimum(np.maximum(v * np.float32(2**exposure), np.float32(0)), np.float32(1))
    low = v * np.float32(12.92)
    high = np.float32(1.055) * np.power(v, np.float32(1 / 2.4)) - np.float32(0.055)
    out = np.where(v <= np.float32(0.0031308), low, high)
    return np.round(out * np.float32(255)).astype(np.uint8)


def linear_ramp(height: int, width: int, seed: int = 0, top: float = 1.5) -> np.ndarray:
    """Values over [0, top], dense in the dark end (where the sRGB curve is steep)."""
    rng = np.random.default_rng(seed)
    return (rng.random((height, width)) ** 3 * top).astype(np.float32)
