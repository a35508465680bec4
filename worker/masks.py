"""From CLIPSeg logits to masks: pure tensor functions, one per step, batched.

Every function takes masks shaped (N, 1, H, W) on any device and does what the ComfyUI
node ``ApplyCLIPSeg+`` does to each of the N masks (docs/ARCHITECTURE.md, "What a mask is"):

1. ``binary_mask``: sigmoid(logits) > threshold.
2. ``smooth``: Gaussian blur of the boolean mask, rounded back to boolean: a weighted
   majority vote (torchvision.transforms.v2 semantics for bool tensors).
3. ``dilate``: |d| steps of a max (d > 0) or min (d < 0) filter over the 4-neighbour
   cross, edges replicated: a diamond of radius |d|.
4. ``blur``: the same Gaussian on the float mask.
5. ``resize_to``: bicubic to the frame's size, then clamped to [0, 1] (the node does not
   clamp; bicubic overshoots, and a mask outside [0, 1] helps nobody).

Sizes follow the node: an even Gaussian kernel size k means k + 1, sigma = 0.15 k + 0.35.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from maskfarm.core.params import MaskParams, odd_kernel


def binary_mask(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Boolean masks: the model's probability above ``threshold`` (computed in fp32)."""
    return torch.sigmoid(logits.float()) > threshold


def smooth(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Majority-vote smoothing of boolean masks; ``size`` 0 leaves them unchanged."""
    if size <= 0:
        return mask
    kernel = odd_kernel(size)
    return TF.gaussian_blur(mask, [kernel, kernel])


def dilate(mask: torch.Tensor, steps: int) -> torch.Tensor:
    """Grow (steps > 0) or shrink (steps < 0) float masks by |steps| pixels, diamond-shaped."""
    grow = steps > 0
    for _ in range(abs(steps)):
        mask = _cross_max(mask) if grow else -_cross_max(-mask)
    return mask


def blur(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Gaussian blur of float masks; ``size`` 0 leaves them unchanged."""
    if size <= 0:
        return mask
    kernel = odd_kernel(size)
    return TF.gaussian_blur(mask, [kernel, kernel])


def resize_to(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize (align_corners=False, no antialias) to (height, width), clamped to [0, 1]."""
    if tuple(mask.shape[-2:]) != tuple(size):
        mask = F.interpolate(mask, size=size, mode="bicubic", align_corners=False)
    return mask.clamp_(0, 1)


def mask_from_logits(logits: torch.Tensor, params: MaskParams) -> torch.Tensor:
    """Logits (N, H, W) to float masks (N, 1, H, W) at the model's resolution.

    With ``params.soft`` the mask is the sigmoid map itself; otherwise threshold, smooth,
    dilate and blur in that order. Resizing and union/invert come after (see pipeline).
    """
    logits = logits.unsqueeze(1)
    if params.soft:
        return torch.sigmoid(logits.float())
    mask = smooth(binary_mask(logits, params.threshold), params.smooth).float()
    return blur(dilate(mask, params.dilate), params.blur)


def _cross_max(mask: torch.Tensor) -> torch.Tensor:
    """Max over each pixel and its 4 neighbours, edge pixels repeated beyond the border."""
    padded = F.pad(mask, (1, 1, 1, 1), mode="replicate")
    vertical = F.max_pool2d(padded[..., :, 1:-1], kernel_size=(3, 1), stride=1)
    horizontal = F.max_pool2d(padded[..., 1:-1, :], kernel_size=(1, 3), stride=1)
    return torch.maximum(vertical, horizontal)
