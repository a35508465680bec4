"""OpenEXR in maskfarm: a frame's linear light as the sRGB picture the model sees, and a
mask as a one-channel float32 file.

A frame (``exr_to_rgb8``) is its display window: the data window's pixels at their
place, black elsewhere, pixels of the data window outside the display window (overscan)
dropped. The layer's channels are read (``maskfarm.core.exrheader.layer_channels``:
R, G, B, or grey from Y or a single channel; A ignored), then per value, in float32:
NaN becomes 0, ``v * 2**exposure`` is clamped to [0, 1] (so +inf is 1), the sRGB transfer
function applied (12.92 v up to 0.0031308, else 1.055 v^(1/2.4) - 0.055), and the result
rounded to 8 bits: every input reaches the model as 8-bit RGB, and a display-referred
picture is what CLIPSeg was trained on. The service's worker, ``--local`` and the preview
overlays all use this function, so they agree to the bit.

A mask (``encode_exr_mask``) is channel ``Y``, float32, ZIP compressed, values clamped to
[0, 1]: exactly the float32 values an ``npy`` mask holds.

Needs the ``OpenEXR`` package (``pip install OpenEXR``), imported only when used: the
client library's core needs only grpcio and protobuf.
"""

from __future__ import annotations

import io
from types import ModuleType

import numpy as np

from maskfarm.core.exrheader import Box, layer_channels, read_header

SRGB_LINEAR_LIMIT = 0.0031308
MASK_CHANNEL = "Y"


def exr_to_rgb8(data: bytes, layer: str = "", exposure: float = 0.0) -> np.ndarray:
    """An EXR file's ``layer`` as display-referred sRGB, (H, W, 3) uint8 of the display
    window (see the module docstring). Raises ``ValueError`` for a file that does not
    decode or a layer it lacks (naming the layers it has)."""
    return srgb8(read_linear(data, layer), exposure)


def read_linear(data: bytes, layer: str = "") -> np.ndarray:
    """The display window of ``layer``'s channels, float32 (H, W, 3) or (H, W, 1), linear
    as stored; black outside the data window. Raises ``ValueError``."""
    header = read_header(data)  # raises ExrHeaderError (a ValueError), cheaply, before any decoding
    names = layer_channels(header.channel_names, layer)
    parts = _read_parts(data)
    display = header.display_window
    frame = np.zeros((display.height, display.width, len(names)), dtype=np.float32)
    for index, name in enumerate(names):
        pixels, window = _find_channel(parts, name)
        x0, y0 = max(window.x_min, display.x_min), max(window.y_min, display.y_min)
        x1, y1 = min(window.x_max, display.x_max), min(window.y_max, display.y_max)
        if x0 > x1 or y0 > y1:
            continue
        frame[y0 - display.y_min : y1 - display.y_min + 1, x0 - display.x_min : x1 - display.x_min + 1, index] = pixels[
            y0 - window.y_min : y1 - window.y_min + 1, x0 - window.x_min : x1 - window.x_min + 1
        ]
    return frame


def srgb8(linear: np.ndarray, exposure: float = 0.0) -> np.ndarray:
    """Linear values (H, W, C), C 1 or 3, as sRGB (H, W, 3) uint8: the conversion of the
    module docstring, in float32."""
    values = np.nan_to_num(np.asarray(linear, dtype=np.float32), nan=0.0, posinf=np.inf, neginf=-np.inf)
    values = np.clip(values * np.float32(2.0**exposure), 0, 1)
    encoded = np.where(
        values <= SRGB_LINEAR_LIMIT,
        values * np.float32(12.92),
        np.float32(1.055) * values ** np.float32(1 / 2.4) - np.float32(0.055),
    )
    rgb = np.round(np.clip(encoded, 0, 1) * np.float32(255)).astype(np.uint8)
    return np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb


def encode_exr_mask(mask: np.ndarray) -> bytes:
    """An (H, W) mask as an EXR file: channel ``Y``, float32 in [0, 1], ZIP compressed."""
    exr = openexr()
    values = np.ascontiguousarray(np.clip(np.asarray(mask, dtype=np.float32), 0, 1))
    buffer = io.BytesIO()
    header = {"compression": exr.ZIP_COMPRESSION, "type": exr.scanlineimage}
    exr.File(header, {MASK_CHANNEL: values}).write(buffer)
    return buffer.getvalue()


def decode_exr_mask(data: bytes) -> np.ndarray:
    """A mask EXR back as (H, W) float32: channel ``Y`` (or the file's only channel) of its
    display window."""
    return read_linear(data, "")[..., 0].copy()


def openexr() -> ModuleType:
    """The ``OpenEXR`` module, or ``ImportError`` saying how to install it."""
    try:
        import OpenEXR
    except ImportError:
        raise ImportError("reading or writing OpenEXR files needs the OpenEXR package: pip install OpenEXR") from None
    return OpenEXR


def _read_parts(data: bytes) -> list:
    exr = openexr()
    try:
        parts = exr.File(io.BytesIO(data), separate_channels=True).parts
    except Exception as error:  # the binding raises RuntimeError, ValueError, ...
        raise ValueError(f"cannot decode EXR: {error}") from None
    if not parts:  # the binding reports broken pixel data as a file without parts
        raise ValueError("cannot decode EXR: corrupt or truncated pixel data")
    return parts


def _find_channel(parts: list, name: str) -> tuple[np.ndarray, Box]:
    for part in parts:
        if name in part.channels:
            (x_min, y_min), (x_max, y_max) = part.header["dataWindow"]
            window = Box(int(x_min), int(y_min), int(x_max), int(y_max))
            pixels = part.channels[name].pixels
            if pixels is None or pixels.shape != (window.height, window.width):
                raise ValueError(f"cannot decode EXR: channel {name!r} is subsampled or incomplete")
            return pixels.astype(np.float32), window
    raise ValueError(f"cannot decode EXR: channel {name!r} is missing")
