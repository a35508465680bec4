"""``Segmenter.stream_pending``: each frame's full-size work (resize, negatives, union,
invert) left to ``PendingMasks.finish``, which ``segment --local`` runs on its writer
threads. Finished anywhere, the masks are bit for bit the ones the previous formula made
in line: the 352x352 masks resized to the frame, clamped, the negatives' maximum subtracted,
the union appended, then 1 - masks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskfarm.core.params import MaskParams
from maskfarm.core.prompts import Prompt
from maskfarm.worker.frames import to_rgb_uint8
from maskfarm.worker.pipeline import Segmenter, _masks_per_params
from maskfarm.worker.preprocess import pixel_values

PROMPTS = [Prompt("a cat", negatives=("a hat",)), Prompt("a dog", threshold=0.3, blur=4)]
PARAMS = [
    MaskParams(),
    MaskParams(union=True, invert=True, dilate=2),
    MaskParams(soft=True, union=True),
    MaskParams(invert=True, smooth=0),
]


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir: Path) -> Segmenter:
    return Segmenter.load(str(tiny_model_dir), "cpu", max_batch=6)


def random_frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    sizes = [(37, 61), (352, 352), (90, 40), (200, 300), (5, 7)]
    return [rng.integers(0, 256, (*sizes[n % len(sizes)], 3), dtype=np.uint8) for n in range(count)]


def previous_formula(segmenter: Segmenter, frame: np.ndarray, params: MaskParams) -> np.ndarray:
    """The masks as the pipeline computed them before the full-size work was deferred."""
    rgb = to_rgb_uint8(frame)
    with torch.inference_mode():
        batch = pixel_values([rgb], segmenter._spec, torch.device("cpu"))
        conditions = [c for p in PROMPTS for c in (p.text, *p.negatives)]
        logits = segmenter._model.logits(batch, conditions, 8)
        rows = [p.params(params) for p in PROMPTS for _ in (p.text, *p.negatives)]
        small = _masks_per_params(logits, rows)  # the 352x352 steps, unchanged
        size = frame.shape[:2]
        full = small if tuple(small.shape[-2:]) == size else F.interpolate(small, size=size, mode="bicubic")
        full = full.clamp(0, 1)[:, 0]
        masks = torch.stack([(full[0] - full[1:2].amax(dim=0)).clamp(0, 1), full[2]])
        if params.union:
            masks = torch.cat([masks, masks.amax(dim=0, keepdim=True)])
        if params.invert:
            masks = 1 - masks
    return masks.numpy()


@pytest.mark.parametrize("params", PARAMS)
def test_finished_anywhere_the_masks_are_the_previous_formulas(segmenter: Segmenter, params: MaskParams) -> None:
    """One frame a call, so the model's batch (and its float rounding) is the same in all three."""
    for frame in random_frames(5):
        inline = segmenter.segment([frame], PROMPTS, params)[0].masks
        pending = list(segmenter.stream_pending([frame], PROMPTS, params))
        with ThreadPoolExecutor(2) as pool:
            elsewhere = pool.submit(pending[0].finish).result()
        expected = previous_formula(segmenter, frame, params)
        assert len(pending) == 1 and inline.dtype == elsewhere.dtype == np.float32
        assert inline.shape == (2 + params.union, *frame.shape[:2])
        assert inline.tobytes() == elsewhere.tobytes() == expected.tobytes()


def test_pending_masks_keep_their_frames_order(segmenter: Segmenter) -> None:
    frames = random_frames(7)
    pending = list(segmenter.stream_pending(frames, PROMPTS, MaskParams()))
    assert [p.index for p in pending] == list(range(7))
    assert [p.finish().shape[1:] for p in pending] == [f.shape[:2] for f in frames]
