"""Masks as the server sends them (encoded), and decoded into arrays or PIL images.

A ``FrameResult`` holds one frame's encoded masks exactly as received, so they can be
written to disk untouched; ``FrameResult.decode`` turns them into a ``FrameMasks`` of
float32 arrays in [0, 1] (PNG8 ``v / 255``, PNG16 and TIFF16 ``v / 65535``, FLOAT32 and
EXR as sent) or, with ``as_pil=True``, PIL images (mode ``L``, ``I;16`` or ``F``). EXR
masks need the OpenEXR package (``pip install OpenEXR``), imported only for them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from typing import Union

import numpy as np
from PIL import Image

from maskfarm.core.formats import MaskFormat, output_format
from maskfarm.core.jobs import OutputFormat
from maskfarm.core.outputs import decode_mask, read_mask
from maskfarm.v1 import segmentation_pb2 as pb

MaskImage = Union[np.ndarray, Image.Image]


@dataclass(frozen=True)
class Mask:
    """One encoded mask of one frame: for prompt ``prompt_index``, or the union (-1)."""

    prompt_index: int
    prompt: str
    is_union: bool
    format: str
    """``"PNG8"``, ``"PNG16"``, ``"FLOAT32"``, ``"EXR"`` or ``"TIFF16"``: what ``data`` holds."""
    data: bytes = field(repr=False)
    width: int
    height: int
    path: str = ""
    """Shared storage (a job with an ``output_dir``): the file the worker wrote; ``data``
    is then empty."""

    def array(self) -> np.ndarray:
        """The mask as an (height, width) float32 array in [0, 1] (read from ``path``,
        which must be readable here, when the mask came as a file)."""
        if self.in_file:
            return read_mask(self.path)
        spec = self._mask_format
        if spec.raw_in_service:
            return np.frombuffer(self.data, dtype="<f4").reshape(self.height, self.width).astype(np.float32)
        return decode_mask(self.data, spec)  # EXR needs OpenEXR: says so when missing

    def image(self) -> Image.Image:
        """The mask as a PIL image: ``L`` (PNG8), ``I;16`` (PNG16, TIFF16) or ``F``
        (FLOAT32, EXR)."""
        if self._mask_format.is_float:
            return Image.fromarray(self.array())
        image = Image.open(self.path if self.in_file else io.BytesIO(self.data))
        image.load()
        return image

    @property
    def _mask_format(self) -> MaskFormat:
        """What ``format`` names (``maskfarm.core.formats``)."""
        if self.format not in OutputFormat.__members__:
            raise ValueError(f"Mask.format: unknown format {self.format!r}")
        return output_format(OutputFormat[self.format])

    @property
    def in_file(self) -> bool:
        """Whether the mask is a file the worker wrote (``path``) rather than ``data``."""
        return bool(self.path) and not self.data


@dataclass(frozen=True)
class FrameMasks:
    """One frame's decoded masks: one per prompt, in prompt order, and the union if asked."""

    index: int
    """The frame's position in the request (for ``Client.segment``: in its frame list)."""
    name: str
    masks: tuple[MaskImage, ...]
    union: MaskImage | None = None
    error: str = ""
    """Why the frame failed, when it was skipped under ``keep_going``: it then has no masks."""

    @property
    def failed(self) -> bool:
        return bool(self.error)


@dataclass(frozen=True)
class FrameResult:
    """One finished frame's masks, encoded as received: the prompts', then the union."""

    index: int
    name: str
    masks: tuple[Mask, ...]
    error: str = ""
    """Why the frame failed, when it was skipped under ``keep_going`` (it has no masks)."""

    @classmethod
    def from_message(cls, frame: pb.FrameResult) -> FrameResult:
        return cls(
            index=frame.frame_index,
            name=frame.frame_name,
            masks=tuple(
                Mask(
                    mask.prompt_index,
                    mask.prompt,
                    mask.is_union,
                    pb.OutputFormat.Name(mask.format).removeprefix("OUTPUT_FORMAT_"),
                    mask.data,
                    mask.width,
                    mask.height,
                    mask.path,
                )
                for mask in frame.masks
            ),
            error=frame.error,
        )

    def shifted(self, offset: int) -> FrameResult:
        """The same result with ``index`` moved by ``offset`` (a part of a split request)."""
        return replace(self, index=self.index + offset)

    def decode(self, *, as_pil: bool = False) -> FrameMasks:
        decode = Mask.image if as_pil else Mask.array
        return FrameMasks(
            index=self.index,
            name=self.name,
            masks=tuple(decode(mask) for mask in self.masks if not mask.is_union),
            union=next((decode(mask) for mask in self.masks if mask.is_union), None),
            error=self.error,
        )
