"""``maskfarm segment --local``: the pipeline in-process, from files to mask files.

No Redis, no server: a quick tool for users, and the reference the service's output is
compared with (both write the same files, named by ``maskfarm.core.outputs``). Frame
files are read as the workers read them (``maskfarm.core.frame_files``: never blocking,
bounded size and read time, header size limits before any decode).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from maskfarm.core.frame_files import ImageLimits, read_frame_file
from maskfarm.core.jobs import ExrOptions
from maskfarm.core.outputs import mask_path, prompt_folders, write_file
from maskfarm.core.params import MaskParams
from maskfarm.core.prompts import Prompt
from maskfarm.worker import codec_pool
from maskfarm.worker.encoding import encode_file
from maskfarm.worker.frames import Frame, decode_frame, to_rgb_uint8
from maskfarm.worker.pipeline import PendingMasks, Segmenter

log = logging.getLogger(__name__)


DEFAULT_READ_AHEAD = 4
"""Frames read and decoded ahead of the model, on a thread of their own."""
DEFAULT_WRITE_THREADS = 2
"""Threads encoding and writing masks behind the model (1: in the caller's thread)."""


def segment_files_locally(
    segmenter: Segmenter,
    frame_paths: Sequence[str | Path],
    prompts: Sequence[str | Prompt],
    outdir: str | Path,
    params: MaskParams = MaskParams(),
    fmt: str = "png",
    *,
    keep_going: bool = False,
    on_failed: Callable[[str, str], None] = lambda name, error: None,
    on_done: Callable[[str], None] = lambda name: None,
    exr: ExrOptions = ExrOptions(),
    limits: ImageLimits = ImageLimits(),
    read_ahead: int = DEFAULT_READ_AHEAD,
    write_threads: int = DEFAULT_WRITE_THREADS,
) -> list[Path]:
    """Segment image files and write ``outdir/<prompt-slug>/<frame-stem>.<ext>``; return the paths.

    A frame that cannot be read or decoded (or whose ``limits`` it breaks), or whose
    masks cannot be written, raises ``ValueError`` naming its path or, with
    ``keep_going``, is passed to ``on_failed(name, error)`` and skipped. ``on_done(name)``
    follows each frame whose masks are written. ``exr``: how OpenEXR frames are read.

    The model's work overlaps the rest: up to ``read_ahead`` frames are read and decoded
    ahead on a thread (0: none), and up to ``write_threads`` frames' masks are resized to
    the frame, encoded and written behind on threads (1: none). The files, their order
    and every callback (in the caller's thread, in frame order) are the same either way;
    at most ``read_ahead`` + 1 + a model chunk + ``write_threads`` frames are held at once."""
    folders = prompt_folders(prompts, params.union)
    written = []
    decoded: list[Path] = []
    unread: deque[tuple[int, str, str]] = deque()
    loaded = codec_pool.read_ahead(_loaded(frame_paths, exr, limits), read_ahead)
    results = segmenter.stream_pending(_good_frames(loaded, decoded, unread, keep_going), prompts, params)

    def write(result: PendingMasks) -> list[Path]:
        path = decoded[result.index]
        masks = result.finish()
        return [
            write_file(mask_path(outdir, folder, path.name, fmt), encode_file(mask, fmt))
            for folder, mask in zip(folders, masks)
        ]

    codec = codec_pool.CodecPool(write_threads)
    try:
        for result, paths in codec.in_order(write, results):
            _report_unread(unread, result.index, on_failed)
            path = decoded[result.index]
            try:
                written += paths()
            except OSError as error:
                reason = f"its masks cannot be written: {error.strerror or error}: {error.filename or outdir}"
                if not keep_going:
                    raise ValueError(f"{path}: {reason}") from None
                on_failed(path.name, reason)
                continue
            log.info("frame %s: %d masks written", path.name, len(folders))
            on_done(path.name)
    finally:
        codec.close()
    _report_unread(unread, len(decoded), on_failed)
    return written


def _loaded(
    paths: Sequence[str | Path], exr: ExrOptions, limits: ImageLimits
) -> Iterator[tuple[Path, Frame | ValueError]]:
    """Each path with its frame read, decoded and made RGB uint8, or the ``ValueError``
    naming it (safe to run on a thread: it only reads)."""
    for path in map(Path, paths):
        try:
            yield path, _load(path, exr, limits)
        except ValueError as error:
            yield path, error


def _good_frames(
    loaded: Iterable[tuple[Path, Frame | ValueError]],
    decoded: list[Path],
    unread: deque[tuple[int, str, str]],
    keep_going: bool,
) -> Iterator[Frame]:
    """The frames that loaded; appends each yielded frame's path to ``decoded``. With
    ``keep_going`` a bad frame is skipped (so positions differ) and queued in ``unread``
    as (the position of the next good frame, its name, the reason), to be reported in
    frame order however far ahead it was read."""
    for path, frame in loaded:
        if isinstance(frame, ValueError):
            if not keep_going:
                raise frame
            unread.append((len(decoded), path.name, str(frame)))
            continue
        decoded.append(path)
        yield frame


def _report_unread(unread: deque[tuple[int, str, str]], before: int, on_failed: Callable[[str, str], None]) -> None:
    """Reports the bad frames that came before good frame ``before``."""
    while unread and unread[0][0] <= before:
        _, name, reason = unread.popleft()
        on_failed(name, reason)


def _load(path: Path, exr: ExrOptions, limits: ImageLimits) -> Frame:
    """The frame file at ``path``, read, decoded and made RGB uint8; raises ``ValueError`` naming it."""
    data = read_frame_file(str(path), limits)
    try:
        return to_rgb_uint8(decode_frame(data, exr))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
