"""Shared storage separated by owner: the roots each token holder may read and write.

With auth on, the token file may give each owner (the NAME of its tokens) its own roots
(``storage NAME read|write ROOT...`` lines, see ``maskfarm.server.tokens``). An owner
reads frames under its read and its write roots and writes masks (``output_dir``) only
under its write roots, always within the server's and workers' storage roots too
(``maskfarm.core.storage``). As soon as the file has one ``storage`` line the rules
hold for every owner: an owner without lines may name no path at all (fail closed). A
file without any, or auth off, leaves every caller the storage roots, as before.

An owner's roots are checked before the filesystem is looked at: by name first, and only
inside the owner's own roots with symlinks resolved, so a refusal depends on the path
alone and says nothing about what lies under someone else's folders. Reading outside
answers NOT_FOUND, like a file that is not there for this caller; writing outside
PERMISSION_DENIED. The rules travel with the job (``JobRecord.storage_access``) and the
worker checks them again, on its own filesystem, before it reads a frame or writes a mask.

Standard library only (the worker imports it too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from maskfarm.core.echo import cut
from maskfarm.core.storage import OutsideRoots, StoragePathError, StorageRoots

READ = "read"
WRITE = "write"


class StorageDenied(StoragePathError):
    """A path outside the roots its job's owner may use (``NotReadable``, ``NotWritable``)."""


class NotReadable(StorageDenied):
    """A frame path outside the owner's read and write roots."""


class NotWritable(StorageDenied):
    """A mask folder outside the owner's write roots."""


@dataclass(frozen=True)
class StorageAccess:
    """The roots one owner may read frames from and write masks into."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    def check_read(self, path: str) -> str:
        """``path`` normalised, if the owner may read it; raises ``NotReadable``, or
        ``StoragePathError`` for a malformed path."""
        return self._check(path, self.read + self.write, NotReadable, "read")

    def check_write(self, path: str) -> str:
        """``path`` (a folder masks go into) normalised, if the owner may write there;
        raises ``NotWritable``, or ``StoragePathError`` for a malformed path."""
        return self._check(path, self.write, NotWritable, "write")

    @staticmethod
    def _check(path: str, roots: tuple[str, ...], denied: type[StorageDenied], verb: str) -> str:
        if not roots:
            raise denied(f"{cut(path)}: you may {verb} no storage root (see the token file's 'storage' lines)")
        try:
            return StorageRoots(roots).check(path)
        except OutsideRoots as error:
            raise denied(f"you may not {verb} there: {error}") from None

    def to_json(self) -> str:
        return json.dumps({READ: list(self.read), WRITE: list(self.write)})

    @classmethod
    def from_json(cls, text: str) -> StorageAccess | None:
        """The rules as ``to_json`` wrote them; None for ``""`` (no per-owner rules)."""
        if not text:
            return None
        value = json.loads(text)
        return cls(tuple(value[READ]), tuple(value[WRITE]))
