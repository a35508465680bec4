"""A straightforward per-frame reference for the mask pipeline, written from the node's semantics.

It does what ``ApplyCLIPSeg+`` does, step by step and without maskfarm's code: the
processor per frame, the plain model call per (frame, prompt), then threshold, torchvision
v2 blur of the boolean stack, scipy grey dilation/erosion with a cross footprint, blur,
bicubic resize. maskfarm's pipeline must agree with it.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2 as T

CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def reference_rgb_uint8(frame) -> np.ndarray:
    """The conversion rules of docs/ARCHITECTURE.md, written independently with PIL and numpy."""
    if isinstance(frame, Image.Image):
        if frame.mode.startswith("I"):
            return reference_rgb_uint8(np.asarray(frame).astype(np.uint16))
        return np.asarray(frame.convert("RGB"))
    if isinstance(frame, torch.Tensor):
        frame = frame.numpy()
    if frame.dtype == np.uint16:
        frame = np.round(frame / 257.0).astype(np.uint8)
    elif frame.dtype.kind == "f":
        frame = (torch.from_numpy(frame) * 255).clamp(0, 255).byte().numpy()
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    return np.ascontiguousarray(frame[..., :3])


def reference_logits(model, processor, pixel_values: torch.Tensor, prompt: str) -> torch.Tensor:
    """The plain model call for one frame's pixel values (1, 3, H, W) and one prompt."""
    tokens = processor.tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        return model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixel_values
        ).logits[0]


def expand_mask(mask: torch.Tensor, expand: int) -> torch.Tensor:
    out = []
    for m in mask:
        output = m.numpy()
        for _ in range(abs(expand)):
            operation = scipy.ndimage.grey_erosion if expand < 0 else scipy.ndimage.grey_dilation
            output = operation(output, footprint=CROSS)
        out.append(torch.from_numpy(output))
    return torch.stack(out)


def reference_masks(logits: torch.Tensor, size, threshold, smooth, dilate, blur, soft=False) -> torch.Tensor:
    """Node post-processing of stacked logits (N, 352, 352) for frames of one ``size``; unclamped."""
    if soft:
        probabilities = torch.sigmoid(logits)
        return F.interpolate(probabilities.unsqueeze(1), size=size, mode="bicubic").squeeze(1)
    outputs = torch.sigmoid(logits) > threshold
    if smooth > 0:
        if smooth % 2 == 0:
            smooth += 1
        outputs = T.functional.gaussian_blur(outputs, smooth)
    outputs = outputs.float()
    if dilate != 0:
        outputs = expand_mask(outputs, dilate)
    if blur > 0:
        if blur % 2 == 0:
            blur += 1
        outputs = T.functional.gaussian_blur(outputs, blur)
    return F.interpolate(outputs.unsqueeze(1), size=size, mode="bicubic").squeeze(1)
