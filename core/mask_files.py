"""The mask files of a job with an ``output_dir``, and the rule that none of them may
replace one of the job's own input frames.

Mask files are named as ``maskfarm segment`` names them (``maskfarm.core.outputs``):
``<output_dir>/<prompt folder>/<frame stem>.<ext>``. A job that reads its frames from the
same storage could so name a mask after one of its frames: output_dir the shot's folder
and a prompt slugged like the plate folder ("plates"), and the plate is replaced by its
mask. Whatever the auth mode, the server refuses such a job where it sees the storage,
and the worker refuses to write such a mask, on its own filesystem, before it writes.

A mask file and a frame are the same file when the mask's folder is the frame's folder
(the same device and inode where both exist, which sees through symlinks, bind mounts
and other mount points; else the same path once symlinks are resolved) and the file
names match (the frame's own name resolved too, so a frame given through a symlink is
the file it leads to).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from maskfarm.core.echo import cut
from maskfarm.core.formats import output_format
from maskfarm.core.jobs import OutputFormat
from maskfarm.core.outputs import mask_path
from maskfarm.core.storage import StoragePathError

_FolderId = tuple[object, ...]


class InputOverwrite(StoragePathError):
    """A mask file would replace one of its job's input frames."""

    def __init__(self, mask: str, index: int, frame: str) -> None:
        super().__init__(f"the mask file {cut(mask)} would replace the job's input frames[{index}] ({cut(frame)})")
        self.index = index


def mask_files(output_dir: str, folders: Sequence[str], frame_name: str, fmt: OutputFormat) -> list[str]:
    """The paths of a frame's mask files, one per folder (see ``outputs.prompt_folders``);
    FLOAT32 masks are ``.npy`` files (``formats.output_format``)."""
    file_format = output_format(fmt)
    return [str(mask_path(output_dir, folder, frame_name, file_format)) for folder in folders]


class InputFrames:
    """A job's frames given by path, as the files they are now, to check its mask files
    against (``check``); frames sent as bytes have no file and are left out."""

    def __init__(self, frame_paths: Sequence[str]) -> None:
        self._by_folder: dict[_FolderId, dict[str, tuple[int, str]]] = {}
        for index, path in enumerate(frame_paths):
            if path:
                resolved = os.path.realpath(path)
                names = self._by_folder.setdefault(_folder_id(os.path.dirname(resolved)), {})
                names.setdefault(os.path.basename(resolved), (index, path))

    def check(self, output_dir: str, folders: Sequence[str], frame_names: Sequence[str], fmt: OutputFormat) -> None:
        """Raises ``InputOverwrite`` if a mask file of one of ``frame_names`` (in one of
        ``folders`` under ``output_dir``) would replace one of the frames. Looks at each
        folder once, so a whole job costs a stat per folder, not per mask."""
        for folder in folders:
            names = self._by_folder.get(_folder_id(os.path.join(output_dir, folder)))
            if not names:
                continue
            for mask in (mask_files(output_dir, [folder], name, fmt)[0] for name in frame_names):
                if (frame := names.get(os.path.basename(mask))) is not None:
                    raise InputOverwrite(mask, *frame)


def _folder_id(folder: str) -> _FolderId:
    """What identifies a folder: its device and inode when it exists, else its path with
    the symlinks of its existing ancestors resolved."""
    try:
        found = os.stat(folder)
    except OSError:
        return ("path", os.path.realpath(folder))
    return ("inode", found.st_dev, found.st_ino)
