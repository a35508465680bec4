"""``maskfarm segment --local``: the pipeline in-process, from files to mask files.

No Redis, no server: a quick tool for users, and the reference the service's output is
compared with (both write the same files, named by ``maskfarm.client.outputs``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from maskfarm.client.outputs import mask_path, prompt_folders, write_mask
from maskfarm.server.params import MaskParams
from maskfarm.worker.frames import Frame, decode_frame
from maskfarm.worker.pipeline import Segmenter

log = logging.getLogger(__name__)


def segment_files(
    segmenter: Segmenter,
    frame_paths: Sequence[str | Path],
    prompts: Sequence[str],
    outdir: str | Path,
    params: MaskParams = MaskParams(),
    fmt: str = "png",
) -> list[Path]:
    """Segment image files and write ``outdir/<prompt-slug>/<frame-stem>.<ext>``; return the paths."""
    folders = prompt_folders(prompts, params.union)
    written = []
    for result in segmenter.stream(_read_frames(frame_paths), prompts, params):
        name = Path(frame_paths[result.index]).name
        for folder, mask in zip(folders, result.masks):
            written.append(write_mask(mask_path(outdir, folder, name, fmt), mask, fmt))
        log.info("frame %s: %d masks written", name, len(folders))
    return written


def _read_frames(paths: Sequence[str | Path]) -> Iterator[Frame]:
    for path in paths:
        try:
            yield decode_frame(Path(path).read_bytes())
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
