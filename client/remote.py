"""``maskfarm segment`` through the service: from image files to mask files.

The counterpart of ``maskfarm.worker.local.segment_files_locally`` (``--local``), writing the same
files: names from ``maskfarm.core.outputs``, and the same bytes, since workers encode
PNG, EXR and TIFF16 masks with ``outputs.encode_mask`` (written as received) and FLOAT32 masks
are the float32 values that ``npy`` files hold. On shared storage (an ``output_dir``
option), frames are sent by path and the workers write the files themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from maskfarm.client.client import Client, succeeded
from maskfarm.client.frames import StoragePath
from maskfarm.client.jobs import Job
from maskfarm.client.masks import FrameResult
from maskfarm.core.formats import file_format
from maskfarm.core.outputs import mask_path, prompt_folders, write_file, write_mask


def segment_files(
    client: Client,
    frame_paths: Sequence[str | Path],
    prompts: Sequence[str],
    outdir: str | Path,
    fmt: str = "png",
    *,
    on_submitted: Callable[[list[Job]], None] = lambda jobs: None,
    on_update: Callable[[int, Job], None] = lambda part, job: None,
    on_failed: Callable[[str, str], None] = lambda name, error: None,
    **options: Any,
) -> list[Path]:
    """Segment image files through the service and write ``outdir/<prompt-slug>/<frame-stem>.<ext>``;
    return the paths. ``options`` are ``Client.submit``'s; long frame lists become several
    jobs. ``on_submitted`` gets the jobs once queued, ``on_update(part, job)`` every update,
    ``on_failed(frame name, error)`` each frame that failed under ``keep_going`` (it gets no
    files; the job still succeeds; a frame the server refuses, such as an unreadable file, is
    one of them). Raises ``JobFailed``/``JobCancelled`` when a job ends so (files already
    written stay), and, without ``keep_going``, ``FrameRefused`` naming a refused frame."""
    sources = storage_frames(frame_paths) if options.get("output_dir") else frame_paths
    submitted = client.submit_leaving_out_refused(sources, prompts, format=file_format(fmt).output.value, **options)
    for refusal in submitted.refused:
        on_failed(Path(frame_paths[refusal.frame_index]).name, refusal.reason)
    on_submitted(submitted.jobs)
    folders = prompt_folders(prompts, bool(options.get("union")))
    written: list[Path] = []
    offset = 0
    for part, job in enumerate(submitted.jobs):
        for event in client.watch(job.id):
            if isinstance(event, FrameResult):
                name = Path(frame_paths[submitted.kept[offset + event.index]]).name
                if event.error:
                    on_failed(name, event.error)
                else:
                    written += _write_frame(event, folders, outdir, name, fmt)
            else:
                job = event
                on_update(part, job)
        succeeded(job)
        offset += job.total
    return written


def shared_storage_options(outdir: str | Path) -> dict[str, str]:
    """``segment_files`` options for shared storage: the workers write the masks under
    ``outdir`` (made absolute: it must be the same path on the workers) and read the
    frames by their absolute paths (see ``storage_frames``)."""
    return {"output_dir": os.path.abspath(outdir)}


def storage_frames(frame_paths: Sequence[str | Path]) -> list[StoragePath]:
    """Frame files as frames on shared storage: their absolute paths, sent instead of bytes."""
    return [StoragePath(os.path.abspath(path)) for path in frame_paths]


def _write_frame(frame: FrameResult, folders: Sequence[str], outdir: str | Path, name: str, fmt: str) -> list[Path]:
    """Writes a frame's masks; one the worker already wrote (shared storage) is only listed."""
    paths = []
    for folder, mask in zip(folders, frame.masks):
        if mask.in_file:
            paths.append(Path(mask.path))
            continue
        path = mask_path(outdir, folder, name, fmt)
        raw = file_format(fmt).raw_in_service
        paths.append(write_mask(path, mask.array(), fmt) if raw else write_file(path, mask.data))
    return paths
