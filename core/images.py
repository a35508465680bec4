"""Checking that an encoded frame is an image the worker can read, without trusting it.

The size is checked from the header alone, before a single pixel is decoded, so a
decompression bomb (a small file that claims a huge image) costs nothing. Only then is
the file checked for integrity: PNG by ``verify`` (chunk checksums through to IEND, no
inflating), the other formats by a full decode, whose cost the size check has bounded.
OpenEXR is the exception: only its header is read (``maskfarm.core.exrheader``: the
display window is the frame's size, the data window is bounded too, every chunk must lie
inside the file); its pixels are decompressed by the worker alone, which reports a corrupt
chunk as the job's INVALID_INPUT.

Pillow's own decompression-bomb guard is set by ``maskfarm.core.frame_files.configure_pillow``
from the same pixel limit in the server and the worker; a header it refuses is reported
here as over the limit, like one the size check refuses.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from maskfarm.core.exrheader import ExrHeaderError, is_exr, read_header, readable_layers

ALLOWED_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP")
"""What Pillow opens for the server; OpenEXR (``"EXR"``) is read by maskfarm itself."""
EXR_MAGIC = b"\x76\x2f\x31\x01"
"""The first bytes of an OpenEXR file."""
EXR_HEAD_BYTES = 1 << 20
"""How much of an EXR file given by path is read first for its header (read whole, within
the file size limit, only when its header is longer)."""


class ImageError(ValueError):
    """The bytes are not an acceptable frame; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str
    layers: tuple[str, ...] = ()
    """EXR only: the layers that read as a picture (``""``: R, G, B)."""


def probe_image(data: bytes, *, max_side: int, max_pixels: int) -> ImageInfo:
    """Checks an encoded frame and returns what it is; raises ``ImageError``."""
    info = probe_header(data, max_side=max_side, max_pixels=max_pixels)
    if info.format != "EXR":
        _check_integrity(_open(data, max_pixels))
    return info


def probe_header(data: bytes, *, max_side: int, max_pixels: int) -> ImageInfo:
    """Checks a whole encoded frame's format and size from its header alone (no pixel
    decoded, integrity not checked: the decode that follows finds a corrupt one);
    raises ``ImageError``. What every frame passes before it is decoded."""
    if not data:
        raise ImageError("empty")
    if is_exr(data):
        return probe_exr(data, max_side=max_side, max_pixels=max_pixels)
    return _check_size(_open(data, max_pixels), max_side, max_pixels)


def probe_exr(data: bytes, *, max_side: int, max_pixels: int, check_chunks: bool = True) -> ImageInfo:
    """Checks an OpenEXR file from its header alone; raises ``ImageError``. The display
    window is the frame and must fit the limits; so must every part's data window (what
    the worker decodes), which may lie partly outside it (overscan). ``check_chunks``:
    ``data`` is the whole file (see ``exrheader.read_header``)."""
    try:
        header = read_header(data, check_chunks=check_chunks)
    except ExrHeaderError as error:
        raise ImageError(f"truncated or corrupt EXR ({error})") from None
    window = header.display_window
    _check_exr_size("EXR", window.width, window.height, max_side, max_pixels)
    for part in header.parts:
        _check_exr_size("EXR data window", part.data_window.width, part.data_window.height, max_side, max_pixels)
        if any(channel.x_sampling != 1 or channel.y_sampling != 1 for channel in part.channels):
            raise ImageError("EXR with subsampled channels (luminance/chroma) is not supported")
    layers = tuple(readable_layers(header.channel_names))
    if not layers:
        names = ", ".join(header.channel_names[:20])
        raise ImageError(f"EXR has no layer readable as a picture (R, G, B; Y; or one channel): {names}")
    return ImageInfo("EXR", window.width, window.height, "RGB", layers)


def _check_exr_size(what: str, width: int, height: int, max_side: int, max_pixels: int) -> None:
    if max(width, height) > max_side:
        raise ImageError(f"{width}x{height} {what}: a side is over {max_side} pixels")
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} {what}: {width * height} pixels, over {max_pixels}")


def probe_image_head(file: BinaryIO, *, max_side: int, max_pixels: int) -> ImageInfo:
    """Checks an open image file's header only (format, size limits, EXR windows), for a
    frame given by path: such frames may be many and large, so only the header is read
    (an EXR's first ``EXR_HEAD_BYTES``) and the file's integrity is left to the worker's
    decode. Raises ``ImageError``, or ``OSError`` when the file cannot be read."""
    head = file.read(32)
    if not head:
        raise ImageError("empty")
    if head.startswith(EXR_MAGIC):
        return _probe_exr_head(head + file.read(EXR_HEAD_BYTES - len(head)), file, max_side, max_pixels)
    file.seek(0)
    try:
        image = Image.open(file, formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as error:
        raise ImageError(_over_pillow_limit(head, error, max_pixels)) from None
    except (UnidentifiedImageError, SyntaxError, ValueError):
        if claimed := _sniff(head):
            raise ImageError(f"truncated or corrupt {claimed} header") from None
        raise ImageError(
            f"not an image in a supported format ({', '.join(ALLOWED_FORMATS)}, EXR): starts with {head[:8]!r}"
        ) from None
    return _check_size(image, max_side, max_pixels)


def _probe_exr_head(head: bytes, file: BinaryIO, max_side: int, max_pixels: int) -> ImageInfo:
    """``probe_exr`` of an EXR file's start; the rest is read only for a longer header."""
    if len(head) == EXR_HEAD_BYTES:
        try:
            read_header(head, check_chunks=False)
        except ExrHeaderError:
            head += file.read()
    return probe_exr(head, max_side=max_side, max_pixels=max_pixels, check_chunks=False)


def _over_pillow_limit(head: bytes, error: Exception, max_pixels: int) -> str:
    """The message for a header Pillow's bomb guard refused (at twice the limit, see
    ``frame_files.configure_pillow``), in the size check's words: a PNG's size is read
    from its IHDR, any other format's pixel count from Pillow's message."""
    claimed = _sniff(head) or "image"
    if claimed == "PNG" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return f"{width}x{height} PNG: {width * height} pixels, over {max_pixels}"
    found = re.search(r"\((\d+) pixels\)", str(error))
    return f"{claimed}: {found.group(1) if found else 'too many'} pixels, over {max_pixels}"


def _check_size(image: Image.Image, max_side: int, max_pixels: int) -> ImageInfo:
    """What the header says, if within the size limits; raises ``ImageError``."""
    width, height = image.size
    if max(width, height) > max_side:
        raise ImageError(f"{width}x{height} {image.format}: a side is over {max_side} pixels")
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} {image.format}: {width * height} pixels, over {max_pixels}")
    if width == 0 or height == 0:
        raise ImageError(f"{width}x{height} {image.format}: no pixels")
    assert image.format is not None, "Image.open names the format of what it opened"
    return ImageInfo(image.format, width, height, image.mode)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as error:
        raise ImageError(_over_pillow_limit(data, error, max_pixels)) from None
    except UnidentifiedImageError:
        if claimed := _sniff(data):
            raise ImageError(f"truncated or corrupt {claimed} header") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"truncated or corrupt {_sniff(data) or 'image'} header ({error})") from None
    if found := _any_format(data):
        raise ImageError(f"unsupported format {found} (allowed: {', '.join(ALLOWED_FORMATS)}, EXR)")
    raise ImageError(
        f"not an image in a supported format ({', '.join(ALLOWED_FORMATS)}, EXR): starts with {data[:8]!r}"
    )


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
    if is_exr(data):
        return "EXR"
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
