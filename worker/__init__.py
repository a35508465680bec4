"""maskfarm's GPU side: the CLIPSeg mask pipeline (pure torch), model loading, the RQ worker.

In-process use (needs the ``worker`` extra)::

    from maskfarm.worker import MaskParams, Segmenter

    segmenter = Segmenter.load("CIDAS/clipseg-rd64-refined")
    for result in segmenter.stream(frames, ["car"], MaskParams(dilate=4)):
        ...

The names are imported when first used, so ``maskfarm.worker.cli`` (the command line) stays
quick to import without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maskfarm.core.params import MaskParams
    from maskfarm.worker.pipeline import Segmenter
    from maskfarm.worker.synthetic import write_synthetic_model

__all__ = ["MaskParams", "Segmenter", "write_synthetic_model"]

_HOMES = {
    "MaskParams": "maskfarm.core.params",
    "Segmenter": "maskfarm.worker.pipeline",
    "write_synthetic_model": "maskfarm.worker.synthetic",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'maskfarm.worker' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
