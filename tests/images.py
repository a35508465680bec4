"""Small encoded test images, made with Pillow."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encoded_image(
    format: str = "PNG", size: tuple[int, int] = (32, 24), mode: str = "RGB", *, noise: bool = False
) -> bytes:
    """An image file's bytes: flat grey, or random noise (which does not compress)."""
    if noise:
        pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert(mode)
    else:
        image = Image.new(mode, size, 100 if mode in ("L", "I;16", "I", "F") else (100, 150, 200))
    buffer = io.BytesIO()
    image.save(buffer, format)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG that claims ``width`` x ``height`` but holds almost no data: a
    decompression bomb as far as its header goes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
