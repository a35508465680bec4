"""``maskfarm segment`` through the service: from image files to mask files.

The counterpart of ``maskfarm.worker.local.segment_files`` (``--local``), writing the same
files: names from ``maskfarm.client.outputs``, and the same bytes, since workers encode
PNG masks with ``outputs.encode_mask`` (they are written as received) and FLOAT32 masks
are the float32 values that ``npy`` files hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from maskfarm.client.client import Client, succeeded
from maskfarm.client.jobs import Job
from maskfarm.client.masks import FrameResult
from maskfarm.client.outputs import mask_path, prompt_folders, write_file, write_mask

SERVICE_FORMATS = {"png": "png8", "png16": "png16", "npy": "float32"}
"""The service's output format for each file format."""


def segment_files(
    client: Client,
    frame_paths: Sequence[str | Path],
    prompts: Sequence[str],
    outdir: str | Path,
    fmt: str = "png",
    *,
    on_submitted: Callable[[list[Job]], None] = lambda jobs: None,
    on_update: Callable[[int, Job], None] = lambda part, job: None,
    **options: Any,
) -> list[Path]:
    """Segment image files through the service and write ``outdir/<prompt-slug>/<frame-stem>.<ext>``;
    return the paths. ``options`` are ``Client.submit``'s; long frame lists become several
    jobs. ``on_submitted`` gets the jobs once queued, ``on_update(part, job)`` every update.
    Raises ``JobFailed``/``JobCancelled`` when a job ends so (files already written stay)."""
    jobs = client.submit_parts(frame_paths, prompts, format=SERVICE_FORMATS[fmt], **options)
    on_submitted(jobs)
    folders = prompt_folders(prompts, bool(options.get("union")))
    written: list[Path] = []
    offset = 0
    for part, job in enumerate(jobs):
        for event in client.watch(job.id):
            if isinstance(event, FrameResult):
                name = Path(frame_paths[offset + event.index]).name
                written += _write_frame(event, folders, outdir, name, fmt)
            else:
                job = event
                on_update(part, job)
        succeeded(job)
        offset += job.total
    return written


def _write_frame(frame: FrameResult, folders: Sequence[str], outdir: str | Path, name: str, fmt: str) -> list[Path]:
    paths = []
    for folder, mask in zip(folders, frame.masks):
        path = mask_path(outdir, folder, name, fmt)
        paths.append(write_mask(path, mask.array(), fmt) if fmt == "npy" else write_file(path, mask.data))
    return paths

