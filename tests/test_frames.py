"""Decoding frame files without losing bit depth, and refusing broken ones safely."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from maskfarm.worker.frames import decode_frame, to_rgb_uint8


def png_rgb16(samples: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one): IHDR, one IDAT, IEND."""
    height, width, _ = samples.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in samples)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_sixteen_bit_rgb_png_keeps_all_its_bits():
    samples = np.random.default_rng(1).integers(0, 65536, (9, 13, 3), dtype=np.uint16)
    frame = decode_frame(png_rgb16(samples))
    expected = ((samples.astype(np.int64) + 128) // 257).astype(np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(frame).numpy(), expected)
    high_byte_only = (samples >> 8).astype(np.uint8)
    assert not np.array_equal(expected, high_byte_only), "the test frame must tell the two roundings apart"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "WEBP", "BMP"])
def test_every_accepted_format_decodes(fmt):
    rgb = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    frame = to_rgb_uint8(decode_frame(buffer.getvalue()))
    assert frame.shape == (20, 30, 3)
    if fmt != "JPEG":
        np.testing.assert_array_equal(frame.numpy(), rgb)


@pytest.mark.parametrize("damage", ["truncated", "short-idat", "no-data", "not-an-image"])
def test_broken_files_raise_value_error_and_do_not_crash(damage):
    good = png_rgb16(np.zeros((64, 64, 3), dtype=np.uint16))
    data = {
        "truncated": good[: len(good) // 2],
        "short-idat": png_rgb16(np.zeros((64, 64, 3), dtype=np.uint16))[:33]
        + png_rgb16(np.zeros((2, 64, 3), dtype=np.uint16))[33:],
        "no-data": b"",
        "not-an-image": b"GIF89a nope",
    }[damage]
    with pytest.raises(ValueError):
        decode_frame(data)


def test_sixteen_bit_rgb_tiff_keeps_all_its_bits():
    import cv2

    samples = np.random.default_rng(3).integers(0, 65536, (9, 13, 3), dtype=np.uint16)
    ok, encoded = cv2.imencode(".tiff", samples[..., ::-1])
    frame = decode_frame(encoded.tobytes())
    expected = ((samples.astype(np.int64) + 128) // 257).astype(np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(frame).numpy(), expected)
