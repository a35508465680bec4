"""Frames in every form users hold them, turned into what CLIPSeg sees: RGB uint8.

The rules (docs/ARCHITECTURE.md, "What a mask is", step 1): alpha is dropped, palette images go
through their palette, grey is replicated to three channels, 16-bit values v become
round(v / 257), and float frames in [0, 1] become trunc(clamp(x * 255, 0, 255)) exactly as
the ComfyUI node does (``image.mul(255).clamp(0, 255).byte()``).

Accepted: PIL images of any mode; numpy arrays and torch tensors shaped HxW, HxWxC (C in
1, 3, 4) or BxHxWxC (a batch, as ComfyUI passes ``IMAGE``), of dtype uint8, uint16, bool
or float; encoded image bytes (see ``decode_frame``), OpenEXR included.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from PIL.TiffImagePlugin import TiffImageFile

from maskfarm.core.exr import exr_to_rgb8
from maskfarm.core.exrheader import is_exr
from maskfarm.core.jobs import ExrOptions

Frame = Union[Image.Image, np.ndarray, torch.Tensor]

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def to_rgb_uint8(frame: Frame) -> torch.Tensor:
    """One frame as an (H, W, 3) uint8 tensor, on the frame's device for tensors, else CPU."""
    if isinstance(frame, Image.Image):
        return _pil_to_rgb_uint8(frame)
    if isinstance(frame, np.ndarray):
        frame = torch.from_numpy(np.ascontiguousarray(frame))
    if isinstance(frame, torch.Tensor):
        return _tensor_to_rgb_uint8(frame)
    raise TypeError(f"a frame must be a PIL image, numpy array or torch tensor, got {type(frame).__name__}")


def iter_frames(frames: Frame | Iterable[Frame]) -> Iterator[Frame]:
    """Yield single frames from a frame, a BxHxWxC batch, or any iterable of those."""
    if isinstance(frames, (np.ndarray, torch.Tensor)):
        if frames.ndim == 4:
            yield from frames
        else:
            yield frames
    elif isinstance(frames, Image.Image):
        yield frames
    else:
        for frame in frames:
            yield from iter_frames(frame)


def decode_frame(data: bytes, exr: ExrOptions | None = None) -> Frame:
    """Decode an encoded image file (PNG, JPEG, TIFF, WebP, BMP, OpenEXR) without losing
    bit depth.

    Pillow decodes every frame, except 16-bit colour PNG and TIFF, of which Pillow keeps
    only 8 bits: OpenCV decodes those at full depth. (torchvision's ``decode_png`` would
    too, but 0.29 crashes the process on some corrupt PNG data; OpenCV reports it.)
    OpenEXR (known by its magic bytes) is scene-linear: ``exr`` says which layer and what
    exposure make it the 8-bit sRGB picture the model reads (``maskfarm.core.exr``).
    Raises ``ValueError`` for bytes that are not a whole image (or lack the EXR layer).
    """
    if is_exr(data):
        exr = exr or ExrOptions()
        return exr_to_rgb8(data, exr.layer, exr.exposure)
    try:
        image = Image.open(io.BytesIO(data))
        if _is_sixteen_bit_colour(image, data):
            return _decode_with_opencv(data)
        image.load()
    except UnidentifiedImageError:  # its message names a BytesIO object, which tells the user nothing
        raise ValueError("cannot decode image: not an image Pillow can read") from None
    except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot decode image: {error}") from None
    return image


def _is_sixteen_bit_colour(image: Image.Image, data: bytes) -> bool:
    if image.format == "PNG":
        # IHDR, always the first chunk: bit depth at byte 24, colour type (2 RGB, 6 RGBA) at 25.
        return data[24] == 16 and data[25] in (2, 6)
    if isinstance(image, TiffImageFile):
        bits = image.tag_v2.get(258, (8,))
        return len(bits) >= 3 and max(bits) == 16
    return False


def _decode_with_opencv(data: bytes) -> np.ndarray:
    import cv2

    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ValueError("cannot decode image: OpenCV found the 16-bit image data broken or incomplete")
    return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA if decoded.shape[-1] == 4 else cv2.COLOR_BGR2RGB)


def _pil_to_rgb_uint8(image: Image.Image) -> torch.Tensor:
    if image.mode in _SIXTEEN_BIT_MODES:
        samples = np.asarray(image).clip(0, 65535).astype(np.uint16)
        return _tensor_to_rgb_uint8(torch.from_numpy(samples))
    if image.mode == "F":
        return _tensor_to_rgb_uint8(torch.from_numpy(np.asarray(image, dtype=np.float32)))
    if image.mode != "RGB":
        image = image.convert("RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB")
    return torch.from_numpy(np.array(image)[..., :3])


def _tensor_to_rgb_uint8(frame: torch.Tensor) -> torch.Tensor:
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"a frame must be HxW or HxWxC with C in 1..4, got shape {tuple(frame.shape)}")
    channels = frame.shape[-1]
    frame = frame[..., :3] if channels >= 3 else frame[..., :1].expand(*frame.shape[:2], 3)
    return _to_uint8(frame).contiguous()


def _to_uint8(frame: torch.Tensor) -> torch.Tensor:
    if frame.dtype == torch.uint8:
        return frame
    if frame.dtype == torch.bool:
        return frame.to(torch.uint8) * 255
    if frame.is_floating_point():
        return (frame.float() * 255).clamp(0, 255).to(torch.uint8)
    if frame.dtype == torch.uint16:
        # round(v / 257) in integers; there are no ties since 257 is odd.
        return ((frame.to(torch.int32) + 128) // 257).to(torch.uint8)
    raise TypeError(f"frame dtype {frame.dtype} is not supported: use uint8, uint16, bool or float in [0, 1]")
