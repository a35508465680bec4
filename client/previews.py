"""Preview overlays: each mask tinted over its frame, for a quick look at a shot's masks.

``maskfarm segment --preview`` writes ``OUTDIR/preview/<prompt-slug>/<frame-stem>.jpg``
(and ``preview/union/``) next to the masks, at the frame's size. JPEG, because a
preview is for eyes, not for compositing: a 4K preview is a few hundred KB, not 10 MB.

The frame is shown display-referred, as the model saw it: an OpenEXR frame through the
same layer, exposure and sRGB conversion (``maskfarm.core.exr``, which then needs the
OpenEXR package); other frames as Pillow shows them in 8 bits. Where the mask is m, the
pixel becomes ``(1 - a m) frame + a m colour`` (``a`` = ``opacity``): soft masks tint in
proportion.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from maskfarm.core.exrheader import is_exr
from maskfarm.core.outputs import mask_path, prompt_folders, read_mask

PREVIEW_FOLDER = "preview"
COLOUR = (255, 0, 0)
OPACITY = 0.5
JPEG_QUALITY = 90


def overlay(
    frame_rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = COLOUR, opacity: float = OPACITY
) -> Image.Image:
    """The (H, W, 3) uint8 frame with the (H, W) mask in [0, 1] tinted over it in ``colour``."""
    frame = np.asarray(frame_rgb, dtype=np.float32)
    weight = opacity * np.clip(np.asarray(mask, dtype=np.float32), 0, 1)[..., None]
    if weight.shape[:2] != frame.shape[:2]:
        raise ValueError(
            f"mask {weight.shape[1]}x{weight.shape[0]} does not fit frame {frame.shape[1]}x{frame.shape[0]}"
        )
    tinted = frame * (1 - weight) + np.asarray(colour, dtype=np.float32) * weight
    return Image.fromarray(np.round(tinted).clip(0, 255).astype(np.uint8), "RGB")


def display_frame(path: str | Path, exr_layer: str = "", exposure: float = 0.0) -> np.ndarray:
    """A frame file as display-referred (H, W, 3) uint8 RGB (see the module docstring)."""
    data = Path(path).read_bytes()
    if is_exr(data):
        from maskfarm.core.exr import exr_to_rgb8

        return exr_to_rgb8(data, exr_layer, exposure)
    with Image.open(path) as image:
        if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            return np.repeat(
                np.round(np.asarray(image, dtype=np.float64).clip(0, 65535) / 257).astype(np.uint8)[..., None],
                3,
                axis=2,
            )
        if image.mode == "F":
            grey = (np.asarray(image, dtype=np.float32) * 255).clip(0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        return np.asarray(image.convert("RGB"))


def preview_path(outdir: str | Path, folder: str, frame_name: str) -> Path:
    """``outdir/preview/<folder>/<frame stem>.jpg``."""
    return mask_path(Path(outdir) / PREVIEW_FOLDER, folder, frame_name).with_suffix(".jpg")


def write_previews(
    frame_paths: Sequence[str | Path],
    prompts: Sequence[str],
    outdir: str | Path,
    fmt: str,
    *,
    union: bool = False,
    exr_layer: str = "",
    exposure: float = 0.0,
) -> list[Path]:
    """A preview for every mask of ``frame_paths`` found under ``outdir`` (as ``maskfarm
    segment`` wrote them in ``fmt``), written whole like the masks; returns their paths.
    A frame without masks (it failed) gets none."""
    written = []
    folders = prompt_folders(prompts, union)
    for frame_path in map(Path, frame_paths):
        masks = {folder: mask_path(outdir, folder, frame_path.name, fmt) for folder in folders}
        masks = {folder: path for folder, path in masks.items() if path.is_file()}
        if not masks:
            continue
        frame = display_frame(frame_path, exr_layer, exposure)
        for folder, path in masks.items():
            target = preview_path(outdir, folder, frame_path.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            overlay(frame, read_mask(path)).save(partial, format="JPEG", quality=JPEG_QUALITY)
            partial.replace(target)
            written.append(target)
    return written
