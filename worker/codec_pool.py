"""Decoding frames and encoding masks on a few threads, results kept in order.

A GPU worker's model is fast enough that the CPU work around it becomes the limit: a
1024x1024 PNG takes ~15 ms to decode and its mask a few ms to encode, one core's worth
for ~50 frames/s. Pillow, zlib, OpenCV and OpenEXR release the GIL while they work, so a
few threads multiply that: a chunk's frames are decoded side by side (``map``), the next
chunk's while the model computes this one (``ahead``, ``read_ahead``), and each frame's
masks are encoded while the model computes the next frames (``in_order``). Every queue is
bounded, so a long job holds a few chunks of frames at most.

Order is never given up: results come back in the order of their inputs, and the caller
stores them in that order. With ``threads`` = 1 (the default on a CPU, whose cores the
model already uses) nothing changes: everything runs in the caller's thread, lazily.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")


class CodecPool:
    """``threads`` threads for decoding and encoding (1: none, work stays in the caller)."""

    def __init__(self, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"codec threads must be at least 1, got {threads}")
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="maskfarm-codec") if threads > 1 else None

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn`` over ``items``, in order: side by side on the threads (an exception is
        raised where its item comes), or lazily in the caller's thread."""
        if self._pool is None:
            return map(fn, items)
        return self._pool.map(fn, items)

    def in_order(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, Callable[[], R]]]:
        """Yields ``(item, result)`` for each item in order, where ``result()`` returns
        ``fn(item)`` (or raises what it raised). On the threads, ``fn`` runs on up to
        ``threads`` items ahead of the one yielded, so pulling the next items (the
        model's next frames) overlaps with it. If ``items`` raises, the items before are
        still yielded first; stopping early drops (and waits for) what is in flight."""
        if self._pool is None:
            for item in items:
                yield item, functools.partial(fn, item)
            return
        pending: deque[tuple[T, Future[R]]] = deque()
        source: Iterator[T] | None = iter(items)
        error: Exception | None = None
        try:
            while True:
                while source is not None and len(pending) < self.threads:
                    try:
                        item = next(source)
                    except StopIteration:
                        source = None
                    except Exception as raised:
                        source, error = None, raised
                    else:
                        pending.append((item, self._pool.submit(fn, item)))
                if not pending:
                    break
                item, future = pending.popleft()
                yield item, future.result
            if error is not None:
                raise error
        finally:
            for _, future in pending:
                future.cancel()
            wait([future for _, future in pending])

    def ahead(self, items: Iterable[T], depth: int) -> Iterator[T]:
        """``items`` pulled on a thread of their own up to ``depth`` ahead of the caller
        (``read_ahead``), so the next chunk's frames decode while the model computes this
        one; with ``threads`` = 1, lazily in the caller's thread as before."""
        return iter(items) if self._pool is None else read_ahead(items, depth)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


_POLL_S = 0.1
"""How often a blocked ``read_ahead`` thread checks whether its reader has gone."""


def read_ahead(items: Iterable[T], depth: int) -> Iterator[T]:
    """Yields ``items`` in order while one thread pulls them, at most ``depth`` waiting in
    a queue (plus the one the thread is making): memory stays bounded however far the
    thread could get. ``depth`` < 1 pulls them in the caller's thread (nothing ahead).

    What pulling an item raises is raised where that item comes, after the items before
    it. Closing the iterator early (or garbage-collecting it) stops the thread: it never
    pulls another item and never blocks for ever on a full queue."""
    if depth < 1:
        yield from items
        return
    slots: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stopped = threading.Event()

    def offer(entry: tuple[str, object]) -> bool:
        while not stopped.is_set():
            try:
                slots.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def pull() -> None:
        try:
            for item in items:
                if not offer(("item", item)):
                    return
        except BaseException as error:  # handed to the reader, raised there
            offer(("error", error))
            return
        offer(("end", None))

    thread = threading.Thread(target=pull, name="maskfarm-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise cast(BaseException, value)
            yield cast(T, value)
    finally:
        stopped.set()
        thread.join()
