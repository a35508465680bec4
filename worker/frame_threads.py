"""Frames side by side on a CPU: one model call per frame, each on its own share of the cores.

On a CPU the model's time is its matrix products, and one call split over every core pays
for it twice: each of its many small parallel regions (layer norms, GELU, residual adds,
attention per head) waits for its slowest thread, and a batch of several frames has
activations that spill out of each core's cache. Frames are independent, so ``FrameThreads``
runs them the other way round: ``threads`` model calls at once, one frame each, every call
on ``cores // threads`` torch threads (one, by default). Same model, same weights (shared,
read-only under inference mode), same results up to float rounding; the gain is measured
in docs/BENCHMARKS.md ("Frames side by side").

Not for a GPU, where one batched call is what feeds the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def frame_threads_for(device: torch.device, compiled: bool, asked: int | None = None) -> int:
    """How many frames run side by side: ``asked`` on a CPU, else one per core (torch's
    intra-op thread count, which is the cores it may use); 1 on a GPU, and by default for
    a compiled model (torch.compile is not re-entrant while it compiles, and its kernels
    already fuse the small operations)."""
    if device.type != "cpu":
        return 1
    if asked:
        return asked
    return 1 if compiled else max(1, torch.get_num_threads())


class FrameThreads:
    """``threads`` threads, each running torch on ``torch_threads`` intra-op threads.

    torch's thread count is per thread once that thread has run an operation, so each pool
    thread sets its own as it starts; the calling thread keeps its count. Setting it also
    sets the count that threads which have not run torch yet start with (``segment
    --local``'s writer threads, say): ``torch_threads``, usually one, which is what threads
    beside a model that has the cores want.
    """

    def __init__(self, threads: int, torch_threads: int) -> None:
        if threads < 2:
            raise ValueError(f"frame threads run 2 or more frames at once, got {threads}")
        self.threads = threads
        self._pool = ThreadPoolExecutor(
            threads,
            thread_name_prefix="maskfarm-frame",
            initializer=torch.set_num_threads,
            initargs=(max(1, torch_threads),),
        )

    @classmethod
    def sharing(cls, threads: int) -> FrameThreads | None:
        """``threads`` sharing the cores torch may use now; None for one (nothing to share)."""
        if threads < 2:
            return None
        return cls(threads, torch.get_num_threads() // threads)

    def submit(self, call: Callable[[T], R], items: Sequence[T]) -> list[Future[R]]:
        """``call(item)`` for each item, queued now, up to ``threads`` running at once."""
        return [self._pool.submit(call, item) for item in items]


def results(futures: Sequence[Future[R]]) -> list[R]:
    """The futures' results in order; the first error raised is raised here once every
    call has ended (none is left running behind it)."""
    wait(futures)
    return [future.result() for future in futures]
