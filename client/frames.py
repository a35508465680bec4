"""Frames as the API takes them: the bytes of an image file, plus a name for the outputs.

``encode_frame`` accepts what users hold:

- a file path (``str`` or ``os.PathLike``): sent as read; its name is the file name;
- ``bytes``: an encoded image file (PNG, JPEG, TIFF, WebP, BMP), sent as is;
- a PIL image: saved as PNG, losslessly (an image opened from a file keeps its file name);
- a numpy array, HxW or HxWxC with C in 1..4: saved as PNG, losslessly: uint8 as 8-bit,
  uint16 as 16-bit (grey through Pillow; colour through ``png16``, since Pillow cannot
  write 16-bit colour), bool as 0/255;
- float arrays (and PIL ``F`` images) in [0, 1] become trunc(clamp(255 x)) in 8 bits:
  exactly what the worker's pipeline does to them, so the masks are the same as in-process;
- a ``StoragePath``: a frame on shared storage, sent as its path (no bytes): the workers
  read it (the server must have a ``--storage-root`` holding it);
- a ``(name, frame)`` pair to give any of these a name.

Anything else raises ``TypeError``; an array of an unusable shape raises ``ValueError``.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from maskfarm.v1 import segmentation_pb2 as pb


@dataclass(frozen=True)
class StoragePath:
    """A frame given by its path on shared storage, which the workers read: an absolute
    path as the workers (and the server) see it, sent as it is. Its name, unless given
    in a ``(name, frame)`` pair, is the path's last component."""

    path: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", os.fspath(self.path))


FrameSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray, StoragePath]
"""One frame in any form ``encode_frame`` accepts (or a ``(name, FrameSource)`` pair)."""

_PNG_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "I;16"}
"""PIL modes a PNG holds as they are."""


@dataclass(frozen=True)
class EncodedFrame:
    """A frame ready to send: an image file's bytes and its name ("" for none); or, for a
    frame on shared storage, its ``path`` and no bytes."""

    data: bytes
    name: str = ""
    path: str = ""

    def message(self) -> pb.Frame:
        return pb.Frame(data=self.data, name=self.name, path=self.path)


def encode_frame(frame: FrameSource | tuple[str, FrameSource]) -> EncodedFrame:
    """One frame (see the module docstring) as an ``EncodedFrame``."""
    if isinstance(frame, tuple):
        name, source = frame
        return replace(encode_frame(source), name=str(name))
    if isinstance(frame, StoragePath):
        return EncodedFrame(b"", path=frame.path)
    if isinstance(frame, (str, os.PathLike)):
        path = Path(frame)
        return EncodedFrame(path.read_bytes(), path.name)
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return EncodedFrame(bytes(frame))
    if isinstance(frame, Image.Image):
        filename = getattr(frame, "filename", "") or ""
        return EncodedFrame(_pil_png(frame), Path(filename).name if filename else "")
    if isinstance(frame, np.ndarray):
        return EncodedFrame(_array_png(frame))
    raise TypeError(
        f"a frame must be a path, bytes, a PIL image, a numpy array or a (name, frame) pair; got {type(frame).__name__}"
    )


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG of an HxWx3 (RGB) or HxWx4 (RGBA) uint16 array: the few chunks the
    format needs (no filtering, zlib level 1), for what Pillow cannot write."""
    height, width, channels = pixels.shape
    colour_type = {3: 2, 4: 6}[channels]
    rows = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(height, -1)
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 1))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _pil_png(image: Image.Image) -> bytes:
    if image.mode == "F":
        return _array_png(np.asarray(image, dtype=np.float32))
    if image.mode in ("I", "I;16L", "I;16B", "I;16N"):
        return _array_png(np.asarray(image).clip(0, 65535).astype(np.uint16))
    if image.mode not in _PNG_MODES:
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return _save_png(image)


def _array_png(array: np.ndarray) -> bytes:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 2, 3, 4)):
        raise ValueError(f"a frame array must be HxW or HxWxC with C in 1..4, got shape {array.shape}")
    if array.ndim == 3 and array.shape[-1] <= 2:
        array = array[..., 0]  # grey (+ alpha, which the pipeline drops)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        array = (array.astype(np.float32) * np.float32(255)).clip(0, 255).astype(np.uint8)
    if array.dtype == np.uint16:
        return _save_png(Image.fromarray(np.ascontiguousarray(array))) if array.ndim == 2 else png16(array)
    if array.dtype != np.uint8:
        raise TypeError(f"frame arrays must be uint8, uint16, bool or float in [0, 1], got {array.dtype}")
    return _save_png(Image.fromarray(np.ascontiguousarray(array)))


def _save_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
