"""The benchmarks' stand-in model: a ``Segmenter`` that takes a fixed time per frame.

bench/control_plane.py and bench/gpu_feed.py run the real worker (chunking, decoding,
encoding, storing) around it, to see what the CPU side costs when the model is a GPU's:
``model_ms`` per frame (2 ms: 500 frames/s) spent asleep, as a GPU's time is, with the GIL
released and no CPU used. Its masks are a soft-edged ellipse at each frame's size (one
array per size, reused), so encoding costs what a real mask's does.
"""

from __future__ import annotations

import time
from types import SimpleNamespace


def stand_in_segmenter(model_ms: float, max_batch: int = 64):
    """A ``Segmenter`` whose model takes ``model_ms`` per frame: the worker's own
    chunking, decoding and encoding around it are the real ones. (Importing the worker
    imports torch; no model is loaded or run.)"""
    import numpy as np
    import torch

    from maskfarm.worker.pipeline import Segmenter

    masks: dict[tuple[int, int], np.ndarray] = {}

    def blob(height: int, width: int) -> np.ndarray:
        if (height, width) not in masks:
            y, x = np.mgrid[0:height, 0:width]
            distance = ((x - width / 2) / (0.2 * width)) ** 2 + ((y - height / 2) / (0.25 * height)) ** 2
            masks[height, width] = np.clip(1.5 - distance, 0, 1).astype(np.float32)
        return masks[height, width]

    class StandInSegmenter(Segmenter):
        def __init__(self) -> None:  # no model to load
            self.loaded = SimpleNamespace(
                device=torch.device("cpu"),
                dtype=torch.float32,
                name="stand-in",
                revision="",
                dtype_name="fp32",
                synthetic=False,
            )
            self.max_batch = max_batch
            self.compiled = False
            self.observer = None
            self._frame_threads = None

        def warm(self) -> None:
            pass

        def _batch_masks(self, chunk) -> list:
            time.sleep(model_ms / 1000 * len(chunk))
            shapes = [(len(r.prompts), r.frame.shape[0], r.frame.shape[1]) for r in chunk]
            return [lambda k=k, h=h, w=w: np.broadcast_to(blob(h, w), (k, h, w)) for k, h, w in shapes]

    return StandInSegmenter()
