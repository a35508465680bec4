"""Frames to CLIPSeg pixel values, as tensor ops on the model's device.

Does what the model's image processor does (squash-resize to 352x352 bilinear with
antialiasing, rescale by 1/255, normalise with the processor's mean and std), batched and
without a PIL round trip per frame. The resize is computed in uint8 like PIL's, so the
result is within one grey level of the processor's pixel values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from transformers import CLIPSegProcessor


@dataclass(frozen=True)
class PixelSpec:
    """What the model expects of its input: size, rescale factor, normalisation."""

    height: int
    width: int
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_processor(cls, processor: CLIPSegProcessor) -> PixelSpec:
        image_processor = processor.image_processor
        size = image_processor.size
        height, width = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
        return cls(
            height=height,
            width=width,
            rescale_factor=float(image_processor.rescale_factor),
            mean=tuple(image_processor.image_mean),
            std=tuple(image_processor.image_std),
        )


def pixel_values(
    frames: Sequence[torch.Tensor], spec: PixelSpec, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(H, W, 3) uint8 frames of any sizes to a (B, 3, height, width) batch in ``dtype``."""
    resized = [
        TF.resize(
            frame.to(device, non_blocking=True).permute(2, 0, 1),
            [spec.height, spec.width],
            interpolation=InterpolationMode.BILINEAR,
            antialias=True,
        )
        for frame in frames
    ]
    batch = torch.stack(resized).float().mul_(spec.rescale_factor)
    return TF.normalize(batch, list(spec.mean), list(spec.std), inplace=True).to(dtype)
