"""Where masks go on disk and how they are encoded: the same everywhere in maskfarm.

One folder per prompt, the frame's own file name kept, so sequences stay sequences:
``OUTDIR/<prompt-slug>/<frame-stem>.<ext>`` (``masks/red-car/shot.1001.png``), and
``OUTDIR/union/`` for the union mask. A slug is the prompt lowercased with every run of
other characters turned into ``-``; prompts that share a slug get ``-2``, ``-3``, ...

Formats (``maskfarm.core.formats``): ``png`` (8-bit grey), ``png16`` (16-bit grey), ``npy``
(float32, exact), ``exr`` (OpenEXR, channel ``Y``, float32, exact, ZIP; needs the OpenEXR
package) and ``tiff16`` (16-bit grey TIFF, deflate). Quantising is round(clamp(m, 0, 1) * max),
so ``tiff16`` holds the very values of ``png16``; ``npy`` and ``exr`` hold clamp(m, 0, 1).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from maskfarm.core.formats import MaskFormat, file_format, format_of_extension
from maskfarm.core.prompts import Prompt, prompt_name

PNG_COMPRESS_LEVEL = 1
"""zlib level 1: a 3840x2160 mask encodes in ~0.1 s instead of ~0.5 s at the default 6,
for files ~1.5x larger (masks are mostly flat, so still small)."""
TIFF_COMPRESSION = "tiff_adobe_deflate"
"""Deflate (zlib), which every TIFF reader that matters reads: masks are mostly flat."""
UNION = "union"


def prompt_slug(prompt: str) -> str:
    """``"Red car!"`` -> ``"red-car"``; a prompt with no letters or digits becomes ``"prompt"``."""
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-") or "prompt"


def prompt_folders(prompts: Sequence[str | Prompt], union: bool = False) -> list[str]:
    """Folder names for the prompts, in order, unique; then ``union`` when asked for. A
    ``Prompt`` is named by its text or its image's file stem (its negatives get none)."""
    taken: dict[str, int] = {UNION: 1} if union else {}
    folders = []
    for prompt in prompts:
        slug = prompt_slug(prompt_name(prompt))
        taken[slug] = taken.get(slug, 0) + 1
        folders.append(slug if taken[slug] == 1 else f"{slug}-{taken[slug]}")
    return folders + ([UNION] if union else [])


def mask_path(outdir: str | Path, folder: str, frame_name: str, fmt: str | MaskFormat = "png") -> Path:
    """``outdir/folder/<frame stem><ext>``: the frame's name with its extension replaced."""
    stem = Path(frame_name).name
    stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix else stem
    return Path(outdir) / folder / f"{stem}{file_format(fmt).extension}"


def quantise(mask: np.ndarray, fmt: str | MaskFormat) -> np.ndarray:
    """Float mask to the integers a ``png``/``png16``/``tiff16`` file holds; float32 for
    ``npy`` and ``exr``."""
    spec = file_format(fmt)
    mask = np.clip(np.asarray(mask, dtype=np.float32), 0, 1)
    if spec.is_float:
        return mask
    return np.round(mask * spec.top).astype(np.uint16 if spec.bits == 16 else np.uint8)


def encode_mask(mask: np.ndarray, fmt: str | MaskFormat = "png") -> bytes:
    """A mask as the bytes of its file."""
    spec = file_format(fmt)
    buffer = io.BytesIO()
    values = quantise(mask, spec)
    if spec.container == "EXR":
        from maskfarm.core.exr import encode_exr_mask

        return encode_exr_mask(values)
    if spec.container == "NPY":
        np.save(buffer, values)
    elif spec.container == "TIFF":
        Image.fromarray(values).save(buffer, format="TIFF", compression=TIFF_COMPRESSION)
    else:
        Image.fromarray(values).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def write_mask(path: str | Path, mask: np.ndarray, fmt: str | MaskFormat = "png") -> Path:
    """Write a mask file, creating its folder; written whole then renamed, never half-written."""
    return write_file(path, encode_mask(mask, fmt))


def write_file(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Write an already encoded mask file as ``write_mask`` does (whole, then renamed),
    with ``mode`` (None: the umask's). The partial file has a name of its own and is
    created new (``O_EXCL|O_NOFOLLOW``, owner-only until ``mode`` is set), so nothing found
    in the folder (a FIFO, a symlink) is opened, and a failure leaves no part. Not
    fsynced: readers never see part of a file, but a host crash may lose the newest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(partial, flags, 0o666 if mode is None else 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            if mode is not None:
                os.fchmod(file.fileno(), mode)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return path


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file back as float32 in [0, 1] (exact for ``npy`` and ``exr``); a file of
    another extension is read by Pillow, as a PNG is."""
    path = Path(path)
    return decode_mask(path.read_bytes(), format_of_extension(path.suffix) or "png")


def decode_mask(data: bytes, fmt: str | MaskFormat) -> np.ndarray:
    """A mask file's bytes back as float32 in [0, 1] (exact for ``npy`` and ``exr``; a PNG
    is read as the bit depth it holds, so ``png`` decodes ``png16`` files too)."""
    spec = file_format(fmt)
    if spec.container == "NPY":
        return np.load(io.BytesIO(data))
    if spec.container == "EXR":
        from maskfarm.core.exr import decode_exr_mask

        return decode_exr_mask(data)
    values = np.asarray(Image.open(io.BytesIO(data)))
    return values.astype(np.float32) / (65535 if values.dtype == np.uint16 else 255)
