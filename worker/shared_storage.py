"""Shared storage at the worker: reading a job's frames by path, writing its masks as files.

Every path is checked again here, against the worker's own storage roots, just before it
is used: the server checked on its filesystem, which need not be this one, and the
storage may have changed since. Frames are read as ``maskfarm.core.frame_files`` rules
(never blocking, bounded size and read time, header size limits before any decode). So are the roots the job's owner may read and write
(``JobRecord.storage_access``, see ``maskfarm.core.storage_access``), and no mask may
replace one of the job's own frames (``maskfarm.core.mask_files``).

Mask files are named as ``maskfarm segment`` names them (``maskfarm.core.outputs``:
``<output_dir>/<prompt-slug>/<frame-stem>.<ext>``, ``union/`` for the union), hold the same
bytes and are written the same way, whole (``maskfarm.core.outputs.write_file``), with
the worker's file mode.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from maskfarm.core.formats import output_format
from maskfarm.core.frame_files import ImageLimits, read_frame_file
from maskfarm.core.jobs import JobRecord, OutputFormat, StoredFrame
from maskfarm.core.mask_files import InputFrames, mask_files
from maskfarm.core.outputs import prompt_folders, write_file
from maskfarm.core.storage import StoragePathError, StorageRoots
from maskfarm.worker.encoding import encode_file

DEFAULT_MODE = 0o644

STORAGE_OFF = "shared storage is not enabled on this worker (--storage-root)"


@dataclass(frozen=True)
class SharedStorage:
    """The storage roots a worker sees, the limits of the frame files it reads, and the
    mode of the mask files it writes."""

    roots: StorageRoots = field(default_factory=StorageRoots)
    mode: int = DEFAULT_MODE
    limits: ImageLimits = field(default_factory=ImageLimits)

    def __post_init__(self) -> None:
        if not 0 <= self.mode <= 0o7777:
            raise ValueError(f"a file mode is 0 to 0o7777, got {self.mode:#o}")

    def read_frame(self, path: str) -> bytes:
        """The bytes of the frame file at ``path``, once checked against the roots and
        ``limits`` (``frame_files.read_frame_file``); raises ``ValueError``
        (``StoragePathError``, ``FrameFileError``) saying why it cannot be had."""
        if not self.roots:
            raise StoragePathError(STORAGE_OFF)
        return read_frame_file(path, self.limits, self.roots)

    def write_masks(
        self, output_dir: str, folders: Sequence[str], frame_name: str, masks: np.ndarray, fmt: OutputFormat
    ) -> list[str]:
        """Writes a frame's (K, H, W) masks, ``masks[k]`` into ``folders[k]`` (see
        ``outputs.prompt_folders``) under ``output_dir``, encoded as ``fmt``'s file;
        returns their paths. Raises ``StoragePathError`` for a folder that leads outside
        the roots or a file that cannot be written."""
        if not self.roots:
            raise StoragePathError(STORAGE_OFF)
        paths = mask_files(output_dir, folders, frame_name, fmt)
        return [self.write_file(path, encode_file(mask, output_format(fmt))) for path, mask in zip(paths, masks)]

    def write_file(self, path: str, data: bytes) -> str:
        """Writes ``data`` to ``path`` whole, with this storage's mode, creating its
        folder; returns ``path``. Raises ``StoragePathError``."""
        folder = self.roots.output_dir(os.path.dirname(path))
        try:
            os.makedirs(folder, exist_ok=True)
            self.roots.output_dir(folder)
            write_file(os.path.join(folder, os.path.basename(path)), data, self.mode)
        except OSError as error:
            raise StoragePathError(f"{path}: cannot write: {error.strerror or error}") from None
        return path


def read_job_frame(storage: SharedStorage, job: JobRecord, index: int) -> bytes:
    """The bytes of frame ``index``, given by path, if the job's owner may read it (its
    ``storage_access``, checked first: the server's check is not trusted) and the
    storage roots allow; raises ``StoragePathError`` (``StorageDenied`` for the owner)."""
    path = job.frame_path(index)
    if job.storage_access is not None:
        job.storage_access.check_read(path)
    return storage.read_frame(path)


def write_frame_masks(storage: SharedStorage, job: JobRecord, index: int, masks: np.ndarray) -> StoredFrame:
    """Writes frame ``index``'s (K, H, W) masks (the union last, when the job asks for
    it) under the job's ``output_dir``; the result to store: their paths, no bytes.
    Raises ``StoragePathError``: also, before anything is written, for a mask folder
    outside the owner's write roots (``StorageDenied``) and for a mask file that would
    replace one of the job's input frames (``mask_files.InputOverwrite``)."""
    folders = prompt_folders(job.prompts, job.params.union)
    if job.storage_access is not None:
        for folder in folders:
            job.storage_access.check_write(os.path.join(job.output_dir, folder))
    _input_frames(tuple(job.frame_paths)).check(job.output_dir, folders, [job.frame_names[index]], job.format)
    paths = storage.write_masks(job.output_dir, folders, job.frame_names[index], masks, job.format)
    height, width = masks.shape[1:]
    if job.params.union:
        return StoredFrame(index, width, height, [], mask_paths=paths[:-1], union_path=paths[-1])
    return StoredFrame(index, width, height, [], mask_paths=paths)


@functools.lru_cache(maxsize=8)
def _input_frames(frame_paths: tuple[str, ...]) -> InputFrames:
    """A job's input frames as files, looked up once per job rather than once per frame
    written (a frame moved while its job runs is the storage racing it: out of scope)."""
    return InputFrames(frame_paths)
