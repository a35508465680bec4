"""The CLIPSeg mask pipeline: frames and prompts in, one mask per (frame, prompt) out.

``Segmenter`` is what everything else in maskfarm calls: the local CLI, the RQ worker and
the benchmarks. It reads frames lazily and yields each frame's masks as soon as they are
made, so memory is bounded by one chunk of ``max_batch`` (frame, prompt) pairs, however long
the job. What a mask means is defined in DESIGN.md and ``maskfarm.worker.masks``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from maskfarm.server.params import MaskParams
from maskfarm.worker.frames import Frame, iter_frames, to_rgb_uint8
from maskfarm.worker.inference import MaskModel
from maskfarm.worker.masks import mask_from_logits, resize_to
from maskfarm.worker.model import DEFAULT_MODEL, LoadedModel, load_model
from maskfarm.worker.preprocess import PixelSpec, pixel_values

DEFAULT_MAX_BATCH = {"cuda": 64, "cpu": 8}

log = logging.getLogger(__name__)


class PipelineObserver(Protocol):
    """Told how long each stage of a chunk took and how big each model batch was (metrics)."""

    def stage(self, name: str, seconds: float) -> None: ...

    def batch(self, pairs: int) -> None: ...


@dataclass(frozen=True)
class FrameMasks:
    """The masks of one frame: ``masks[k]`` for prompt k, then the union if it was asked for.

    Masks are float32 in [0, 1] at the frame's own height and width, already inverted when
    ``invert`` was asked for.
    """

    index: int
    masks: np.ndarray


class Segmenter:
    """Runs the whole pipeline on one loaded model; reuse it across jobs (it caches prompts)."""

    def __init__(self, loaded: LoadedModel, max_batch: int | None = None, compile: bool = False) -> None:
        self.loaded = loaded
        self.max_batch = max_batch or DEFAULT_MAX_BATCH.get(loaded.device.type, 8)
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")
        self._model = MaskModel(loaded)
        if compile:
            self._model.compile()
        self.compiled = compile
        self.observer: PipelineObserver | None = None
        self._spec = PixelSpec.from_processor(loaded.processor)

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        device: str = "auto",
        dtype: str | None = None,
        max_batch: int | None = None,
        compile: bool = False,
    ) -> Segmenter:
        """Load a model (see ``maskfarm.worker.model.load_model``) and wrap it."""
        return cls(load_model(model, device, dtype), max_batch, compile)

    def provenance(self) -> dict[str, str]:
        """Where masks come from: model id, revision (when known), dtype and device."""
        return {
            "model": self.loaded.name,
            "revision": self.loaded.revision or "",
            "dtype": self.loaded.dtype_name,
            "device": str(self.loaded.device),
        }

    def warm(self) -> None:
        """Run tiny frames through everything, so the first real job pays no start-up cost.

        Compiled, a batch of one, a small batch and a full chunk are run, which are the
        shape classes torch.compile specialises on; later batches reuse those kernels.
        """
        sizes = sorted({1, 2, self.max_batch}) if self.compiled else [1]
        for count in sizes:
            self.segment([np.zeros((8, 8, 3), dtype=np.uint8)] * count, ["warm-up"])

    def segment(
        self, frames: Frame | Iterable[Frame], prompts: str | Sequence[str], params: MaskParams = MaskParams()
    ) -> list[FrameMasks]:
        """All masks at once; prefer ``stream`` for long jobs."""
        return list(self.stream(frames, prompts, params))

    def stream(
        self, frames: Frame | Iterable[Frame], prompts: str | Sequence[str], params: MaskParams = MaskParams()
    ) -> Iterator[FrameMasks]:
        """Yield each frame's masks, in frame order, as soon as its chunk is done.

        ``frames`` is one frame, a BxHxWxC batch, or any iterable of frames (read lazily).
        Raises ``ValueError`` for no prompts or a blank prompt.
        """
        prompts = _check_prompts(prompts)
        index = 0
        source = iter_frames(frames)
        while chunk := list(itertools.islice(source, max(1, self.max_batch // len(prompts)))):
            for masks in self._chunk_masks([to_rgb_uint8(frame) for frame in chunk], prompts, params):
                yield FrameMasks(index, masks)
                index += 1

    def _chunk_masks(self, frames: list[torch.Tensor], prompts: list[str], params: MaskParams) -> list[np.ndarray]:
        """One chunk's masks. Out of device memory, the batch is halved and the chunk tried
        again in halves, down to one pair at a time; the smaller batch stays for later
        chunks, so a worker settles on what its device holds."""
        try:
            with self._stage("preprocess"):
                batch = pixel_values(frames, self._spec, self.loaded.device, self.loaded.dtype)
            sizes = [(frame.shape[0], frame.shape[1]) for frame in frames]
            return self.masks_from_pixel_values(batch, sizes, prompts, params)
        except torch.cuda.OutOfMemoryError:
            if self.max_batch == 1:
                raise
        # Retried outside the except block, so the failed attempt's tensors are freed first.
        self._halve_batch()
        half = max(1, len(frames) // 2)
        masks = self._chunk_masks(frames[:half], prompts, params)
        return masks + (self._chunk_masks(frames[half:], prompts, params) if frames[half:] else [])

    def _halve_batch(self) -> None:
        if self.loaded.device.type == "cuda":
            torch.cuda.empty_cache()
        self.max_batch //= 2
        log.warning("out of device memory: batch halved to %d (frame, prompt) pairs", self.max_batch)

    @torch.inference_mode()
    def masks_from_pixel_values(
        self, batch: torch.Tensor, sizes: Sequence[tuple[int, int]], prompts: Sequence[str], params: MaskParams
    ) -> list[np.ndarray]:
        """The pipeline after preprocessing: (F, 3, 352, 352) pixel values to each frame's masks.

        ``sizes[f]`` is frame f's (height, width). For callers that preprocess themselves
        (and for the parity tests, which feed the processor's own pixel values).
        """
        count = len(prompts)
        with self._stage("model"):
            logits = self._model.logits(batch.to(self.loaded.device, self.loaded.dtype), list(prompts), self.max_batch)
        if self.observer is not None:
            self.observer.batch(batch.shape[0] * count)
        with self._stage("postprocess"):
            small = mask_from_logits(logits, params)
            return [self._frame_masks(small[f * count : (f + 1) * count], size, params) for f, size in enumerate(sizes)]

    @staticmethod
    def _frame_masks(small: torch.Tensor, size: tuple[int, int], params: MaskParams) -> np.ndarray:
        masks = resize_to(small, tuple(size))[:, 0]
        if params.union:
            masks = torch.cat([masks, masks.amax(dim=0, keepdim=True)])
        if params.invert:
            masks = 1 - masks
        return masks.cpu().numpy()

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Times a stage for the observer, if any (waiting for the GPU, so the time is real)."""
        if self.observer is None:
            yield
            return
        start = time.perf_counter()
        yield
        if self.loaded.device.type == "cuda":
            torch.cuda.synchronize(self.loaded.device)
        self.observer.stage(name, time.perf_counter() - start)


def _check_prompts(prompts: str | Sequence[str]) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("prompts: at least one prompt is needed")
    for position, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompts[{position}]: a prompt must be a non-blank string, got {prompt!r}")
    return prompts
