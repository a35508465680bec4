"""Checking that an encoded frame is an image the worker can read, without trusting it.

The size is checked from the header alone, before a single pixel is decoded, so a
decompression bomb (a small file that claims a huge image) costs nothing. Only then is
the file checked for integrity: PNG by ``verify`` (chunk checksums through to IEND, no
inflating), the other formats by a full decode, whose cost the size check has bounded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

ALLOWED_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP")

# Pillow's own decompression-bomb guard is one process-wide limit, which would refuse
# (or warn about) frames before maskfarm's configured limits are applied; maskfarm checks
# those limits itself, from the header, before anything is decoded.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """The bytes are not an acceptable frame; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str


def probe_image(data: bytes, *, max_side: int, max_pixels: int) -> ImageInfo:
    """Checks an encoded frame and returns what it is; raises ``ImageError``."""
    if not data:
        raise ImageError("empty")
    image = _open(data)
    width, height = image.size
    if max(width, height) > max_side:
        raise ImageError(f"{width}x{height} {image.format}: a side is over {max_side} pixels")
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} {image.format}: {width * height} pixels, over {max_pixels}")
    if width == 0 or height == 0:
        raise ImageError(f"{width}x{height} {image.format}: no pixels")
    _check_integrity(image)
    return ImageInfo(image.format, width, height, image.mode)


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        if claimed := _sniff(data):
            raise ImageError(f"truncated or corrupt {claimed} header") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"truncated or corrupt {_sniff(data) or 'image'} header ({error})") from None
    if found := _any_format(data):
        raise ImageError(f"unsupported format {found} (allowed: {', '.join(ALLOWED_FORMATS)})")
    raise ImageError(f"not an image in a supported format ({', '.join(ALLOWED_FORMATS)}): "
                     f"starts with {data[:8]!r}")


def _sniff(data: bytes) -> str | None:
    """The allowed format whose signature ``data`` starts with, if any."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"BM"):
        return "BMP"
    return None


def _any_format(data: bytes) -> str | None:
    """The format Pillow recognises in ``data`` beyond the allowed ones, if any."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:
        return None


def _check_integrity(image: Image.Image) -> None:
    try:
        if image.format == "PNG":
            image.verify()
        else:
            image.load()
    except Exception as error:
        raise ImageError(f"truncated or corrupt {image.format} ({error})") from None
