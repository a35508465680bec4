"""Checking that an encoded frame is an image the worker can read, without trusting it.

The size is checked from the header alone, before a single pixel is decoded, so a
decompression bomb (a small file that claims a huge image) costs nothing. Only then is
the file checked for integrity: PNG by ``verify`` (chunk checksums through to IEND, no
inflating), the other formats by a full decode, whose cost the size check has bounded.
OpenEXR is the exception: only its header is read (``maskfarm.server.exrheader``: the
display window is the frame's size, the data window is bounded too, every chunk must lie
inside the file); its pixels are decompressed by the worker alone, which reports a corrupt
chunk as the job's INVALID_INPUT.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from maskfarm.server.exrheader import ExrHeaderError, is_exr, read_header, readable_layers

ALLOWED_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP")
"""What Pillow opens for the server; OpenEXR (``"EXR"``) is read by maskfarm itself."""
EXR_MAGIC = b"\x76\x2f\x31\x01"
"""The first bytes of an OpenEXR file."""

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
    layers: tuple[str, ...] = ()
    """EXR only: the layers that read as a picture (``""``: R, G, B)."""


def probe_image(data: bytes, *, max_side: int, max_pixels: int) -> ImageInfo:
    """Checks an encoded frame and returns what it is; raises ``ImageError``."""
    if not data:
        raise ImageError("empty")
    if is_exr(data):
        return probe_exr(data, max_side=max_side, max_pixels=max_pixels)
    image = _open(data)
    info = _check_size(image, max_side, max_pixels)
    _check_integrity(image)
    return info


def probe_exr(data: bytes, *, max_side: int, max_pixels: int) -> ImageInfo:
    """Checks an OpenEXR file from its header alone; raises ``ImageError``. The display
    window is the frame and must fit the limits; so must every part's data window (what
    the worker decodes), which may lie partly outside it (overscan)."""
    try:
        header = read_header(data)
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


def probe_image_file(path: str, *, max_side: int, max_pixels: int) -> ImageInfo | None:
    """Checks an image file's header only (format, size limits), for a frame given by
    path: such frames may be many and large, so no pixel is read and the file's integrity
    is left to the worker's decode. None for an OpenEXR file, whose header the worker
    reads. Raises ``ImageError``, or ``OSError`` when the file cannot be read."""
    with open(path, "rb") as file:
        head = file.read(16)
        if head.startswith(EXR_MAGIC):
            return None
        file.seek(0)
        try:
            image = Image.open(file, formats=ALLOWED_FORMATS)
        except (UnidentifiedImageError, SyntaxError, ValueError):
            if claimed := _sniff(head):
                raise ImageError(f"truncated or corrupt {claimed} header") from None
            raise ImageError(f"not an image in a supported format ({', '.join(ALLOWED_FORMATS)}, EXR): "
                             f"starts with {head[:8]!r}") from None
        return _check_size(image, max_side, max_pixels)


def _check_size(image: Image.Image, max_side: int, max_pixels: int) -> ImageInfo:
    """What the header says, if within the size limits; raises ``ImageError``."""
    width, height = image.size
    if max(width, height) > max_side:
        raise ImageError(f"{width}x{height} {image.format}: a side is over {max_side} pixels")
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} {image.format}: {width * height} pixels, over {max_pixels}")
    if width == 0 or height == 0:
        raise ImageError(f"{width}x{height} {image.format}: no pixels")
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
        raise ImageError(f"unsupported format {found} (allowed: {', '.join(ALLOWED_FORMATS)}, EXR)")
    raise ImageError(f"not an image in a supported format ({', '.join(ALLOWED_FORMATS)}, EXR): "
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
