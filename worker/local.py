"""``maskfarm segment --local``: the pipeline in-process, from files to mask files.

No Redis, no server: a quick tool for users, and the reference the service's output is
compared with (both write the same files, named by ``maskfarm.core.outputs``). Frame
files are read as the workers read them (``maskfarm.core.frame_files``: never blocking,
bounded size and read time, header size limits before any decode).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from maskfarm.core.frame_files import ImageLimits, read_frame_file
from maskfarm.core.jobs import ExrOptions
from maskfarm.core.outputs import mask_path, prompt_folders, write_mask
from maskfarm.core.params import MaskParams
from maskfarm.core.prompts import Prompt
from maskfarm.worker.frames import Frame, decode_frame
from maskfarm.worker.pipeline import Segmenter

log = logging.getLogger(__name__)


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
) -> list[Path]:
    """Segment image files and write ``outdir/<prompt-slug>/<frame-stem>.<ext>``; return the paths.

    A frame that cannot be read or decoded (or whose ``limits`` it breaks), or whose
    masks cannot be written, raises ``ValueError`` naming its path or, with
    ``keep_going``, is passed to ``on_failed(name, error)`` and skipped. ``on_done(name)``
    follows each frame whose masks are written. ``exr``: how OpenEXR frames are read."""
    folders = prompt_folders(prompts, params.union)
    written = []
    decoded: list[Path] = []
    frames = _read_frames(frame_paths, decoded, keep_going, on_failed, exr, limits)
    for result in segmenter.stream(frames, prompts, params):
        path = decoded[result.index]
        try:
            written += [
                write_mask(mask_path(outdir, folder, path.name, fmt), mask, fmt)
                for folder, mask in zip(folders, result.masks)
            ]
        except OSError as error:
            reason = f"its masks cannot be written: {error.strerror or error}: {error.filename or outdir}"
            if not keep_going:
                raise ValueError(f"{path}: {reason}") from None
            on_failed(path.name, reason)
            continue
        log.info("frame %s: %d masks written", path.name, len(folders))
        on_done(path.name)
    return written


def _read_frames(
    paths: Sequence[str | Path],
    decoded: list[Path],
    keep_going: bool,
    on_failed: Callable[[str, str], None],
    exr: ExrOptions,
    limits: ImageLimits,
) -> Iterator[Frame]:
    """The frames, decoded; appends each yielded frame's path to ``decoded`` (with
    ``keep_going`` a bad frame is reported and skipped, so positions differ)."""
    for path in map(Path, paths):
        try:
            frame = _load(path, exr, limits)
        except ValueError as error:
            if not keep_going:
                raise
            on_failed(path.name, str(error))
            continue
        decoded.append(path)
        yield frame


def _load(path: Path, exr: ExrOptions, limits: ImageLimits) -> Frame:
    """The frame file at ``path``, read and decoded; raises ``ValueError`` naming it."""
    data = read_frame_file(str(path), limits)
    try:
        return decode_frame(data, exr)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
