"""The CLIPSeg mask pipeline: frames and prompts in, one mask per (frame, prompt) out.

``Segmenter`` is what everything else in maskfarm calls: the local CLI, the RQ worker and
the benchmarks. It reads frames lazily and yields each frame's masks as soon as they are
made, so memory is bounded by one chunk of ``max_batch`` (frame, prompt) pairs, however long
the job. What a mask means is defined in docs/ARCHITECTURE.md and ``maskfarm.worker.masks``.

``stream`` is one request's frames with one set of prompts and parameters;
``stream_requests`` is the general form, where every frame brings its own prompts and
parameters (the worker batches several small jobs that way): one chunk still runs the
vision tower once for all its frames and the decoder over all its (frame, prompt) pairs.

A prompt may be a ``maskfarm.core.prompts.Prompt``: its negatives are more conditions
decoded against the same vision features (no second vision pass), each post-processed with
the prompt's parameters; its mask is the positive's minus the negatives' maximum, clamped
to [0, 1], at the frame's size. Its positive may be an exemplar image instead of a text
(CLIPSeg's visual prompt), embedded once and cached as a text is.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
import torch

from maskfarm.core.params import MaskParams
from maskfarm.core.prompts import Prompt, as_prompt
from maskfarm.worker.frame_threads import FrameThreads, frame_threads_for, results
from maskfarm.worker.frames import Frame, iter_frames, to_rgb_uint8
from maskfarm.worker.inference import Condition, MaskModel
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
class FrameOutput:
    """The masks of one frame: ``masks[k]`` for prompt k, then the union if it was asked for.

    Masks are float32 in [0, 1] at the frame's own height and width, already inverted when
    ``invert`` was asked for.
    """

    index: int
    masks: np.ndarray
    tag: object = None
    """The ``FrameRequest``'s tag (``stream_requests``); None from ``stream``."""
    chunk_end: bool = False
    """The last frame of its model chunk: the next frame waits for another model pass
    (the worker stores a chunk's frames together)."""


@dataclass(frozen=True)
class PendingMasks:
    """One frame's masks made at the model's resolution; ``finish()`` returns what
    ``FrameOutput.masks`` holds (resized to the frame, negatives subtracted, union, invert).

    ``finish`` may run on another thread (torch releases the GIL), so a caller can overlap
    the full-size work with the model's next chunk (``segment --local`` does it on its
    writer threads); the result is the same wherever it runs."""

    index: int
    finish: Callable[[], np.ndarray]
    tag: object = None


@dataclass(frozen=True)
class FrameRequest:
    """One frame and what to make of it; ``tag`` is the caller's, handed back with the masks."""

    frame: Frame
    prompts: Sequence[str | Prompt]
    params: MaskParams = MaskParams()
    tag: object = None


class Segmenter:
    """Runs the whole pipeline on one loaded model; reuse it across jobs (it caches prompts).

    On a CPU a chunk's frames go through the model ``frame_threads`` at a time, one frame
    per call, each call on its share of the cores (``maskfarm.worker.frame_threads``); on a
    GPU a chunk is one batched call.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        max_batch: int | None = None,
        compile: bool = False,
        frame_threads: int | None = None,
    ) -> None:
        self.loaded = loaded
        if frame_threads is not None and frame_threads < 1:
            raise ValueError(f"frame threads (--frame-threads) must be at least 1, got {frame_threads}")
        self.frame_threads = frame_threads_for(loaded.device, compile, frame_threads)
        self.max_batch = max_batch or max(DEFAULT_MAX_BATCH.get(loaded.device.type, 8), self.frame_threads)
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")
        self._model = MaskModel(loaded)
        if compile:
            self._model.compile()
        self.compiled = compile
        self._frame_threads = FrameThreads.sharing(self.frame_threads)
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
        frame_threads: int | None = None,
    ) -> Segmenter:
        """Load a model (see ``maskfarm.worker.model.load_model``) and wrap it."""
        return cls(load_model(model, device, dtype), max_batch, compile, frame_threads)

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
        self, frames: Frame | Iterable[Frame], prompts: str | Sequence[str | Prompt], params: MaskParams = MaskParams()
    ) -> list[FrameOutput]:
        """All masks at once; prefer ``stream`` for long jobs."""
        return list(self.stream(frames, prompts, params))

    def stream(
        self, frames: Frame | Iterable[Frame], prompts: str | Sequence[str | Prompt], params: MaskParams = MaskParams()
    ) -> Iterator[FrameOutput]:
        """Yield each frame's masks, in frame order, as soon as its chunk is done.

        ``frames`` is one frame, a BxHxWxC batch, or any iterable of frames (read lazily).
        Raises ``ValueError`` for no prompts or a blank prompt.
        """
        prompts = _check_prompts(prompts)
        return self.stream_requests(FrameRequest(frame, prompts, params) for frame in iter_frames(frames))

    def stream_requests(self, requests: Iterable[FrameRequest]) -> Iterator[FrameOutput]:
        """Yield each request's masks, in request order, as soon as its chunk is done.

        ``FrameOutput.index`` is the request's position in ``requests`` (read lazily); a
        chunk holds as many requests as fit in ``max_batch`` pairs (at least one). Raises
        ``ValueError`` for a request with no prompts or a blank prompt.
        """
        for pending in self._pending_chunks(requests):
            with self._stage("postprocess"):
                masks = [frame.finish() for frame in pending]
            for position, (frame, frame_masks) in enumerate(zip(pending, masks)):
                yield FrameOutput(frame.index, frame_masks, frame.tag, chunk_end=position == len(pending) - 1)

    def stream_pending(
        self, frames: Frame | Iterable[Frame], prompts: str | Sequence[str | Prompt], params: MaskParams = MaskParams()
    ) -> Iterator[PendingMasks]:
        """``stream``, each frame's full-size work left to its ``PendingMasks.finish``. With
        frame threads the next chunk is already in the model while one is given out (its
        frames read one chunk early), so the threads never wait for the caller's work on
        the masks (``segment --local``: full size, encoding, writing)."""
        prompts = _check_prompts(prompts)
        requests = (FrameRequest(frame, prompts, params) for frame in iter_frames(frames))
        for pending in self._pending_chunks(requests, ahead=self._frame_threads is not None):
            yield from pending

    def _pending_chunks(self, requests: Iterable[FrameRequest], ahead: bool = False) -> Iterator[list[PendingMasks]]:
        """Each chunk's masks, in order: made when asked for, or with ``ahead`` begun before
        the chunk before it is given out (a caller that stops after a chunk, as a cancelled
        worker run does, wants none made beyond it: ``stream`` never reads ahead). A
        request that fails to be read lets every chunk before it through, then raises."""
        started: deque[_StartedChunk] = deque()
        chunks = self._chunks(requests)
        index = 0
        try:
            while True:
                chunk, error = _next_or_error(chunks)
                if chunk:
                    for earlier in started:  # more frames follow: its last ones go side by side too
                        earlier.share_rest()
                    started.append(self._start_chunk(chunk, index))
                    index += len(chunk)
                while started and (len(started) > ahead or not chunk):
                    yield started.popleft().pending()
                if not chunk:
                    if error is not None:
                        raise error
                    return
        finally:
            for left in started:  # the caller stopped early: drop the work nobody will take
                left.cancel()

    def _start_chunk(self, chunk: list[FrameRequest], first: int) -> _StartedChunk:
        """The chunk's masks begun: queued on the frame threads (see ``_StartedChunk``), or
        made now."""
        if self._frame_threads is None:
            return _StartedChunk(chunk, first, self._batch_masks, made=self._batch_masks(chunk))
        # Every condition embedded (and cached) here first: the threads only read the cache.
        conditions = [c for r in chunk for p in cast("Sequence[Prompt]", r.prompts) for c in _conditions(p)]
        self._model.text_embeddings(list(dict.fromkeys(conditions)))
        return _StartedChunk(chunk, first, self._batch_masks, threads=self._frame_threads)

    def _chunks(self, requests: Iterable[FrameRequest]) -> Iterator[list[FrameRequest]]:
        """Requests (frames made RGB uint8 tensors) in chunks of at most ``max_batch``
        pairs, at least one request each. A request that fails to be read (a frame that
        does not decode) first lets the chunk before it through, then raises."""
        source = iter(requests)
        chunk: list[FrameRequest] = []
        pairs = 0
        while True:
            try:
                request = next(source)
            except StopIteration:
                break
            except Exception as error:
                if chunk:
                    yield chunk
                raise error
            prompts = _check_prompts(request.prompts)
            rows = sum(1 + len(prompt.negatives) for prompt in prompts)
            if chunk and pairs + rows > self.max_batch:
                yield chunk
                chunk, pairs = [], 0
            chunk.append(FrameRequest(to_rgb_uint8(request.frame), prompts, request.params, request.tag))
            pairs += rows
            if pairs >= self.max_batch:
                yield chunk
                chunk, pairs = [], 0
        if chunk:
            yield chunk

    def _batch_masks(self, chunk: list[FrameRequest]) -> list[Callable[[], np.ndarray]]:
        """One chunk's masks in one model call, each frame's to be finished at its size
        (its frames already RGB uint8 tensors, its prompts ``Prompt``s). Out of device memory,
        the batch is halved and the chunk tried again in halves, down to one pair at a
        time; the smaller batch stays for later chunks, so a worker settles on what its
        device holds."""
        try:
            # _chunks made the frames tensors and the prompts Prompts (checked).
            frames = [cast(torch.Tensor, request.frame) for request in chunk]
            with self._stage("preprocess"):
                batch = pixel_values(frames, self._spec, self.loaded.device, self.loaded.dtype)
            sizes = [(frame.shape[0], frame.shape[1]) for frame in frames]
            prompts = [cast("Sequence[Prompt]", r.prompts) for r in chunk]
            return self._masks(batch, sizes, prompts, [r.params for r in chunk])
        except torch.cuda.OutOfMemoryError:
            if self.max_batch == 1:
                raise
        # Retried outside the except block, so the failed attempt's tensors are freed first.
        self._halve_batch()
        half = max(1, len(chunk) // 2)
        masks = self._batch_masks(chunk[:half])
        return masks + (self._batch_masks(chunk[half:]) if chunk[half:] else [])

    def _halve_batch(self) -> None:
        if self.loaded.device.type == "cuda":
            torch.cuda.empty_cache()
        self.max_batch //= 2
        log.warning("out of device memory: batch halved to %d (frame, prompt) pairs", self.max_batch)

    def masks_from_pixel_values(
        self, batch: torch.Tensor, sizes: Sequence[tuple[int, int]], prompts: Sequence[str | Prompt], params: MaskParams
    ) -> list[np.ndarray]:
        """The pipeline after preprocessing: (F, 3, 352, 352) pixel values to each frame's masks.

        ``sizes[f]`` is frame f's (height, width). For callers that preprocess themselves
        (and for the parity tests, which feed the processor's own pixel values).
        """
        count = len(sizes)
        return [finish() for finish in self._masks(batch, sizes, [_check_prompts(prompts)] * count, [params] * count)]

    @torch.inference_mode()
    def _masks(
        self,
        batch: torch.Tensor,
        sizes: Sequence[tuple[int, int]],
        prompts: Sequence[Sequence[Prompt]],
        params: Sequence[MaskParams],
    ) -> list[Callable[[], np.ndarray]]:
        """Frame f's masks for its own ``prompts[f]`` and ``params[f]``: one vision pass for
        the batch, the decoder over every (frame, condition) pair (a prompt's conditions are
        its positive, then its negatives), post-processing at the model's resolution batched
        per distinct parameters; each frame's full-size work is left to its finisher."""
        batch = batch.to(self.loaded.device, self.loaded.dtype)
        conditions = [[c for prompt in frame_prompts for c in _conditions(prompt)] for frame_prompts in prompts]
        counts = [len(frame_conditions) for frame_conditions in conditions]
        with self._stage("model"):
            if all(frame_conditions == conditions[0] for frame_conditions in conditions):
                logits = self._model.logits(batch, conditions[0], self.max_batch)
            else:
                frame_index = [f for f, count in enumerate(counts) for _ in range(count)]
                pair_conditions = [c for frame_conditions in conditions for c in frame_conditions]
                logits = self._model.pair_logits(batch, frame_index, pair_conditions, self.max_batch)
        if self.observer is not None:
            self.observer.batch(sum(counts))
        with self._stage("postprocess"):
            row_params = [
                prompt.params(params[f])
                for f, frame_prompts in enumerate(prompts)
                for prompt in frame_prompts
                for _ in _conditions(prompt)
            ]
            small = _masks_per_params(logits, row_params).split(counts)
        return [
            functools.partial(self._frame_masks, small[f], (int(size[0]), int(size[1])), prompts[f], params[f])
            for f, size in enumerate(sizes)
        ]

    @staticmethod
    @torch.inference_mode()
    def _frame_masks(
        small: torch.Tensor, size: tuple[int, int], prompts: Sequence[Prompt], params: MaskParams
    ) -> np.ndarray:
        masks = _subtract_negatives(resize_to(small, size)[:, 0], prompts)
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


class _StartedChunk:
    """A chunk whose masks are made (``made``) or being made on the frame threads.

    Its frames go side by side, a frame per call, as many at a time as there are threads;
    the rest (fewer than the threads) are kept back. When more frames follow, they join
    the others (``share_rest``); when none does (a stream's last chunk, or a caller that
    reads each chunk before the next starts, as the worker does) they are made in one
    call on every core once the others are done, so no core idles through the last
    frames while one thread makes a frame alone."""

    def __init__(
        self,
        requests: list[FrameRequest],
        first: int,
        make: Callable[[list[FrameRequest]], list[Callable[[], np.ndarray]]],
        *,
        threads: FrameThreads | None = None,
        made: list[Callable[[], np.ndarray]] | None = None,
    ) -> None:
        self.requests = requests
        self.first = first
        self._make = make
        self._threads = threads
        self._made = made
        self._futures: list[Future[list[Callable[[], np.ndarray]]]] = []
        self._rest: list[FrameRequest] = []
        if threads is not None:
            side_by_side = len(requests) - len(requests) % threads.threads
            self._futures = threads.submit(make, [[r] for r in requests[:side_by_side]])
            self._rest = requests[side_by_side:]

    def share_rest(self) -> None:
        """Queues the frames kept back on the frame threads too, a frame per call."""
        if self._threads is not None and self._rest:
            self._futures += self._threads.submit(self._make, [[r] for r in self._rest])
            self._rest = []

    def finishers(self) -> list[Callable[[], np.ndarray]]:
        """Each frame's finisher, once every frame's model call has ended."""
        if self._made is None:
            made = [finish for frame in results(self._futures) for finish in frame]
            self._made = made + (self._make(self._rest) if self._rest else [])
        return self._made

    def pending(self) -> list[PendingMasks]:
        return [
            PendingMasks(self.first + k, finish, request.tag)
            for k, (request, finish) in enumerate(zip(self.requests, self.finishers()))
        ]

    def cancel(self) -> None:
        """Drops the frames not started yet (those running end on their own)."""
        for future in self._futures:
            future.cancel()
        self._rest = []


def _next_or_error(chunks: Iterator[list[FrameRequest]]) -> tuple[list[FrameRequest], BaseException | None]:
    """The next chunk; an empty one at the end, or with the error that reading raised."""
    try:
        return next(chunks), None
    except StopIteration:
        return [], None
    except Exception as error:
        return [], error


def _masks_per_params(logits: torch.Tensor, params: Sequence[MaskParams]) -> torch.Tensor:
    """Masks (N, 1, H, W) at the model's resolution: row n of ``logits`` post-processed
    with ``params[n]``, all rows that share parameters in one batch."""
    groups: dict[MaskParams, list[int]] = {}
    for row, row_params in enumerate(params):
        groups.setdefault(row_params, []).append(row)
    if len(groups) == 1:
        return mask_from_logits(logits, params[0])
    masks: torch.Tensor | None = None
    for group_params, rows in groups.items():
        index = torch.tensor(rows, device=logits.device)
        small = mask_from_logits(logits.index_select(0, index), group_params)
        if masks is None:
            masks = small.new_empty((logits.shape[0], *small.shape[1:]))
        masks[index] = small
    assert masks is not None, "params has a row, so groups has one"
    return masks


def _conditions(prompt: Prompt) -> list[Condition]:
    """What the decoder is conditioned on for a prompt's masks: its positive (text or
    exemplar), then its negatives."""
    return [prompt.image if prompt.image is not None else prompt.text, *prompt.negatives]


def _subtract_negatives(masks: torch.Tensor, prompts: Sequence[Prompt]) -> torch.Tensor:
    """One mask per prompt from its conditions' masks (P', H, W): the positive minus the
    maximum of the negatives, clamped to [0, 1]."""
    if len(prompts) == masks.shape[0]:
        return masks
    starts = list(itertools.accumulate((1 + len(prompt.negatives) for prompt in prompts), initial=0))
    combined = []
    for prompt, start in zip(prompts, starts):
        positive = masks[start]
        if prompt.negatives:
            positive = (positive - masks[start + 1 : start + 1 + len(prompt.negatives)].amax(dim=0)).clamp(0, 1)
        combined.append(positive)
    return torch.stack(combined)


def _check_prompts(prompts: str | Sequence[str | Prompt]) -> list[Prompt]:
    prompts = [prompts] if isinstance(prompts, (str, Prompt)) else list(prompts)
    if not prompts:
        raise ValueError("prompts: at least one prompt is needed")
    checked = []
    for position, prompt in enumerate(prompts):
        if isinstance(prompt, Prompt) and prompt.image is not None:
            if not prompt.image.data:
                raise ValueError(f"prompts[{position}].image: the exemplar's bytes are needed (read its path first)")
            checked.append(prompt)
            continue
        text = prompt.text if isinstance(prompt, Prompt) else prompt
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"prompts[{position}]: a prompt must be a non-blank string, got {prompt!r}")
        negatives = prompt.negatives if isinstance(prompt, Prompt) else ()
        for k, negative in enumerate(negatives):
            if not isinstance(negative, str) or not negative.strip():
                raise ValueError(
                    f"prompts[{position}].negatives[{k}]: a negative must be a non-blank string, got {negative!r}"
                )
        checked.append(as_prompt(prompt))
    return checked
