"""Shared storage: which paths a job may name, checked the same way by server and worker.

A farm whose workers see the same storage may give frames and the output folder by path
(``Frame.path``, ``SubmitJobRequest.output_dir``). Only paths under the configured storage
roots are accepted: absolute, without a ``..`` component or a NUL, and, once every symlink
that exists is resolved, still inside a root (a symlink from one root into another is
fine; one leading anywhere else is not).

The server and the worker may see different filesystems, so each checks on its own: the
server what it can see (``StorageRoots.visible``: a root that exists on its host is taken
to be the storage itself, and then a frame must exist there as a regular file), the
worker always, on its own filesystem, just before it reads or writes. The check is of the
path as it is at that moment; a frame is then opened as checked (``open_file``: no
symlink followed that appeared since, nothing that blocks), but a folder written into may
still be swapped between check and write by someone racing the worker (docs/SECURITY.md);
requests are not trusted at all.

This module imports only the standard library and ``echo`` (the worker imports it too).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from maskfarm.core.echo import cut, quoted


class StoragePathError(ValueError):
    """A path a job names cannot be used; the message says why (no field name: the
    caller knows which field it checked)."""


class OutsideRoots(StoragePathError):
    """A well-formed path that is not under the roots, by name or once its symlinks are
    resolved (as opposed to a malformed one: relative, with ``..`` or a NUL)."""


@dataclass(frozen=True)
class StorageRoots:
    """The folders under which jobs may name paths; none: shared storage is off."""

    roots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for root in self.roots:
            if "\0" in root or not os.path.isabs(root):
                raise ValueError(f"a storage root must be an absolute path, got {root!r}")
        object.__setattr__(self, "roots", tuple(os.path.normpath(root) for root in self.roots))

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> StorageRoots:
        """Roots from ``--storage-root`` values or ``MASKFARM_STORAGE_ROOTS``: each value
        may hold several, separated by ``os.pathsep`` (``:``) or commas; blanks are skipped."""
        values = [text] if isinstance(text, str) else list(text)
        roots = [part.strip() for value in values for part in value.replace(",", os.pathsep).split(os.pathsep)]
        return cls(tuple(root for root in roots if root))

    def __bool__(self) -> bool:
        return bool(self.roots)

    def visible(self, path: str) -> bool:
        """Whether the root holding ``path`` (already checked) exists on this host, i.e.
        whether this host sees the storage and can tell whether the file is there."""
        return any(_under(path, root) and os.path.isdir(root) for root in self.roots)

    def check(self, path: str) -> str:
        """``path`` normalised (``.`` and ``//`` folded), after checking that it names a
        place under a root; raises ``StoragePathError``. Nothing needs to exist."""
        if not self.roots:
            raise StoragePathError("shared storage is not enabled here (no storage roots)")
        if not path:
            raise StoragePathError("empty")
        if "\0" in path:
            raise StoragePathError("contains a NUL character")
        if not os.path.isabs(path):
            raise StoragePathError(f"must be an absolute path, got {quoted(path)}")
        if ".." in path.split(os.sep):
            raise StoragePathError(f"must not contain '..', got {quoted(path)}")
        normal = os.path.normpath(path)
        if not any(_under(normal, root) for root in self.roots):
            raise OutsideRoots(f"{cut(normal)} is not under a storage root ({', '.join(self.roots)})")
        resolved = os.path.realpath(normal)
        if not any(_under(resolved, os.path.realpath(root)) for root in self.roots):
            raise OutsideRoots(
                f"{cut(normal)} leads outside the storage roots through a symlink (it resolves to {cut(resolved)})"
            )
        return normal

    def frame_file(self, path: str, *, must_exist: bool = True) -> str:
        """A frame's path, checked (``check``) and, with ``must_exist``, an existing
        regular file (symlinks followed); the normalised path. Raises ``StoragePathError``."""
        normal = self.check(path)
        if must_exist:
            try:
                mode = os.stat(normal).st_mode
            except FileNotFoundError:
                raise StoragePathError(f"{cut(normal)}: no such file") from None
            except OSError as error:
                raise StoragePathError(f"{cut(normal)}: {error.strerror}") from None
            if not stat.S_ISREG(mode):
                raise StoragePathError(f"{cut(normal)} is not a regular file")
        return normal

    def open_file(self, path: str) -> tuple[str, int]:
        """``path`` checked (``check``) and opened read-only: ``(normalised path, descriptor)``.
        The file opened is the one checked: its resolved path is walked from its root one
        component at a time, none followed if it became a symlink since (``O_NOFOLLOW``), and
        the file itself is opened ``O_NONBLOCK``, so a FIFO or device found there opens at
        once instead of blocking; the caller ``fstat``s the descriptor (and closes it).
        Raises ``StoragePathError``."""
        normal = self.check(path)
        resolved = os.path.realpath(normal)
        root = next(real for real in map(os.path.realpath, self.roots) if _under(resolved, real))
        names = [name for name in os.path.relpath(resolved, root).split(os.sep) if name != "."]
        if not names:
            raise StoragePathError(f"{cut(normal)} is not a regular file")
        try:
            folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for name in names[:-1]:
                    inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
                    os.close(folder)
                    folder = inner
                flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
                return normal, os.open(names[-1], flags, dir_fd=folder)
            finally:
                os.close(folder)
        except FileNotFoundError:
            raise StoragePathError(f"{cut(normal)}: no such file") from None
        except OSError as error:
            moved = " (a symlink or file appeared where it was checked)" if error.errno in _MOVED else ""
            raise StoragePathError(f"{cut(normal)}: cannot open: {error.strerror or error}{moved}") from None

    def output_dir(self, path: str) -> str:
        """An output folder's path, checked (``check``: the symlinks of its nearest
        existing ancestor are what is resolved), and a folder if it exists already
        (it need not: the worker creates it). Raises ``StoragePathError``."""
        normal = self.check(path)
        if os.path.lexists(normal) and not os.path.isdir(normal):
            raise StoragePathError(f"{cut(normal)} exists and is not a directory")
        return normal


_MOVED = (errno.ELOOP, errno.ENOTDIR)
"""What ``open_file`` meets when a checked component was replaced by a symlink or file."""


def _under(path: str, root: str) -> bool:
    """Whether normalised ``path`` is ``root`` or inside it (by name, not by prefix:
    ``/a/bc`` is not under ``/a/b``)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
