"""Reading frame files: no read is unbounded and nothing blocks on a file.

The one rule for every frame file maskfarm opens (the server probing a frame given by
path, the worker reading it, ``segment --local`` reading the user's files), so that a
hostile or broken file fails as that frame's error and never kills or hangs a process:

- the file is opened ``O_NONBLOCK | O_NOFOLLOW`` (under storage roots, walked from the root
  one component at a time: ``StorageRoots.open_file``) and the opened descriptor must be a
  regular file (``fstat``, not ``stat`` then ``open``): a FIFO or device swapped in opens at
  once and is refused;
- it holds at most ``max_frame_mib`` (seen from ``fstat`` before a byte is read; the read
  stops there anyway, should the file grow);
- its header's size passes ``max_side`` and ``max_pixels`` for every format, an EXR's
  display and data windows included (``maskfarm.core.images``), before a pixel is
  decoded;
- all of it within ``frame_read_timeout_s``: the file work runs on a few daemon reader
  threads and the caller waits at most that long. A read stuck in the kernel (a hung
  network mount) holds one of those threads, never the caller, and never keeps the
  process from exiting; once all are stuck, reads fail at their deadline instead of
  queueing forever.

Pillow's own decompression-bomb guard is set from the same ``max_pixels`` in every
process (``configure_pillow``). The limits are the same flags and ``MASKFARM_*``
variables on the server (``ServerSettings``) and the worker (its flags, else
``ImageLimits.from_env``).
"""

from __future__ import annotations

import os
import stat
import threading
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Any, BinaryIO, TypeVar

from PIL import Image

from maskfarm.core.defaults import (
    DEFAULT_FRAME_READ_TIMEOUT_S,
    DEFAULT_MAX_FRAME_MIB,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
)
from maskfarm.core.echo import cut
from maskfarm.core.images import ImageError, ImageInfo, probe_header, probe_image_head
from maskfarm.core.storage import StorageRoots

MIB = 1024 * 1024
READER_THREADS = 8
"""Threads doing file work per process: as many reads as this may be stuck in the kernel
before every other read fails at its deadline."""

T = TypeVar("T")


class FrameFileError(ValueError):
    """A frame file cannot be used; the message names the file and says why."""


@dataclass(frozen=True)
class ImageLimits:
    """The limits every frame passes before it is decoded, the same on server and worker."""

    max_side: int = DEFAULT_MAX_SIDE
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_frame_mib: int = DEFAULT_MAX_FRAME_MIB
    frame_read_timeout_s: float = DEFAULT_FRAME_READ_TIMEOUT_S

    def __post_init__(self) -> None:
        for name in ("max_side", "max_pixels", "max_frame_mib", "frame_read_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def max_frame_bytes(self) -> int:
        return self.max_frame_mib * MIB

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ImageLimits:
        """The limits of the ``MASKFARM_MAX_SIDE``, ``MASKFARM_MAX_PIXELS``,
        ``MASKFARM_MAX_FRAME_MIB`` and ``MASKFARM_FRAME_READ_TIMEOUT_S`` variables (unset:
        the defaults); raises ``ValueError`` for one that is not a positive number."""
        environ = os.environ if environ is None else environ
        given: dict[str, Any] = {}  # each field's value, of the kind _VARIABLES gives it
        for name, variable, kind in _VARIABLES:
            if text := environ.get(variable, "").strip():
                try:
                    given[name] = kind(text)
                except ValueError:
                    raise ValueError(f"{variable} must be a number, got {text!r}") from None
        return cls(**given)


_VARIABLES = (
    ("max_side", "MASKFARM_MAX_SIDE", int),
    ("max_pixels", "MASKFARM_MAX_PIXELS", int),
    ("max_frame_mib", "MASKFARM_MAX_FRAME_MIB", int),
    ("frame_read_timeout_s", "MASKFARM_FRAME_READ_TIMEOUT_S", float),
)


def configure_pillow(limits: ImageLimits) -> None:
    """Sets Pillow's process-wide bomb guard from ``limits.max_pixels``, as every process
    that decodes frames must (server and worker alike): Pillow then refuses, at open,
    any image of over twice that many pixels; those between are refused by maskfarm's
    own size check, so Pillow's warning about them is silenced."""
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def read_frame_file(path: str, limits: ImageLimits, roots: StorageRoots | None = None) -> bytes:
    """The whole file at ``path`` once it passed every limit (see the module docstring),
    its header's size included; with ``roots``, ``path`` must lie under them (none: any
    path, ``--local``'s own files, symlinks followed). Raises ``FrameFileError`` (or
    ``StoragePathError`` for a path the roots refuse)."""

    def read(file: BinaryIO, name: str) -> bytes:
        data = file.read(limits.max_frame_bytes + 1)
        _check_file_size(name, len(data), limits)
        try:
            probe_header(data, max_side=limits.max_side, max_pixels=limits.max_pixels)
        except ImageError as error:
            raise FrameFileError(f"{name}: {error}") from None
        return data

    return _READERS.run(lambda: _use_file(path, limits, roots, read), limits.frame_read_timeout_s, path)


def check_frame_path(path: str, limits: ImageLimits, roots: StorageRoots) -> str:
    """``path`` checked against ``roots`` and normalised (``StorageRoots.check``), and,
    where this host sees the storage, its file opened and its header probed within every
    limit (no pixel read: frames by path may be many and large; their integrity is left
    to the worker's decode). All on a reader thread within the deadline: even a path
    check stats the storage, which may hang. Raises ``FrameFileError`` or
    ``StoragePathError``."""

    def probe(file: BinaryIO, name: str) -> ImageInfo:
        try:
            return probe_image_head(file, max_side=limits.max_side, max_pixels=limits.max_pixels)
        except ImageError as error:
            raise FrameFileError(f"{name}: {error}") from None

    def check() -> str:
        normal = roots.check(path)
        if roots.visible(normal):
            _use_file(normal, limits, roots, probe)
        return normal

    return _READERS.run(check, limits.frame_read_timeout_s, path)


def _use_file(path: str, limits: ImageLimits, roots: StorageRoots | None, use: Callable[[BinaryIO, str], T]) -> T:
    """``use(file, name)`` on the file at ``path``, opened and checked as the module
    docstring says (on a reader thread: the caller waits with the deadline)."""
    name, descriptor = _open(path, roots)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise FrameFileError(f"{cut(name)} is not a regular file")
        _check_file_size(name, status.st_size, limits)
        with os.fdopen(descriptor, "rb", closefd=False) as file:
            return use(file, cut(name))
    except OSError as error:
        raise FrameFileError(f"{cut(name)}: cannot read: {error.strerror or error}") from None
    finally:
        os.close(descriptor)


def _open(path: str, roots: StorageRoots | None) -> tuple[str, int]:
    if roots is not None:
        return roots.open_file(path)
    try:
        return path, os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise FrameFileError(f"{cut(path)}: cannot open: {error.strerror or error}") from None


def _check_file_size(name: str, size: int, limits: ImageLimits) -> None:
    if size > limits.max_frame_bytes:
        raise FrameFileError(f"{cut(name)}: over {limits.max_frame_mib} MiB (the frame file size limit)")


class _Readers:
    """A few daemon threads that do file work for callers who wait with a deadline."""

    def __init__(self, count: int) -> None:
        self._count = count
        self.reset()

    def reset(self) -> None:
        """No threads yet and nothing queued (also in a forked child, which has none)."""
        self._work: SimpleQueue[tuple[Future, Callable[[], object]]] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def run(self, work: Callable[[], T], timeout_s: float, path: str) -> T:
        """``work()``'s result or exception; ``FrameFileError`` when it has not finished
        within ``timeout_s`` (it is then abandoned: dropped if it had not started)."""
        self._start_threads()
        future: Future = Future()
        self._work.put((future, work))
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            future.cancel()
            raise FrameFileError(
                f"{cut(path)}: not read within {timeout_s:g} s (the frame read deadline); is its storage hung?"
            ) from None

    def _start_threads(self) -> None:
        if len(self._threads) == self._count:
            return
        with self._lock:
            while len(self._threads) < self._count:
                thread = threading.Thread(target=self._serve, name=f"frame-reader-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _serve(self) -> None:
        while True:
            future, work = self._work.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as error:  # handed to the waiting caller, whatever it is
                future.set_exception(error)


_READERS = _Readers(READER_THREADS)
os.register_at_fork(after_in_child=_READERS.reset)
