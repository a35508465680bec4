"""The bearer tokens the server accepts: a file of ``TOKEN NAME`` lines, re-read on change.

The file is the whole configuration of who may call: one ``TOKEN NAME`` per line, ``#``
starts a comment, blank lines are ignored. NAME is who the caller is (jobs belong to it;
several tokens may share a name, e.g. an old and a new one while rotating). Edits apply
without a restart: the file is stat'ed at most once per ``check_interval_s`` while calls
come in and re-read when its inode, size or modification time changed, so adding a token
or deleting its line takes effect within about a second.

The same file may separate shared storage by owner with lines

    storage NAME read ROOT [ROOT ...]
    storage NAME write ROOT [ROOT ...]

(see ``maskfarm.core.storage_access``; lines add up). With none, every caller has the
server's storage roots; with one, the rules hold for every NAME, and a NAME without
lines may use no path.

A line that cannot be used is skipped with a warning naming its line number (the other
lines still count); a file that has vanished or cannot be read accepts no token at all
(fail closed) until it is readable again. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from maskfarm.core.storage_access import READ, WRITE, StorageAccess

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
"""Caller names: no whitespace and no ``/``, so a name can prefix a request id unambiguously."""

MIN_TOKEN_CHARS = 16
"""Shorter tokens are refused: a token is a secret, not a password someone types."""

STORAGE_KEYWORD = "storage"
"""First field of a storage rule line; shorter than any token, so never taken for one."""


class TokenFileError(ValueError):
    """The token file cannot be used at all (at startup: the server does not start)."""


@dataclass(frozen=True)
class _Signature:
    """What identifies one version of the file without reading it."""

    inode: int
    size: int
    mtime_ns: int


class TokenFile:
    """The tokens of one file, kept up to date with it.

    ``name_of(token)`` is the caller a token stands for, or None for a token the file
    does not (or no longer) list. Raises ``TokenFileError`` at construction when the file
    cannot be read; later read failures only log and deny.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        check_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._tokens: list[tuple[bytes, str]] = []
        self._storage: dict[str, StorageAccess] | None = None
        self._signature: _Signature | None = None
        self._checked_at = clock()
        try:
            self._load(self._stat())
        except OSError as error:
            raise TokenFileError(f"token file {self.path}: {error.strerror or error}") from None

    def __len__(self) -> int:
        return len(self._tokens)

    def name_of(self, token: str) -> str | None:
        """The caller's name for ``token``, or None. Every listed token is compared, in
        constant time, so the answer's timing says nothing about the tokens."""
        self._refresh()
        given = token.encode()
        found: str | None = None
        for known, name in self._tokens:
            if hmac.compare_digest(known, given):
                found = name
        return found

    def storage_access(self, name: str) -> StorageAccess | None:
        """The shared-storage roots of caller ``name``; None when the file gives no
        per-owner rules (every caller has the server's roots), and no roots at all for a
        name the rules leave out. Read as of the last ``name_of``."""
        if self._storage is None:
            return None
        return self._storage.get(name, StorageAccess())

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked_at < self.check_interval_s:
            return
        self._checked_at = now
        try:
            signature = self._stat()
            if signature != self._signature:
                self._load(signature)
        except OSError as error:
            if self._signature is not None or self._tokens:
                log.error(
                    "token file %s cannot be read (%s): no token is accepted until it can",
                    self.path,
                    error.strerror or error,
                )
            self._tokens, self._storage, self._signature = [], {}, None

    def _stat(self) -> _Signature:
        stat = self.path.stat()
        return _Signature(stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _load(self, signature: _Signature) -> None:
        text = self.path.read_text(encoding="utf-8")
        self._tokens = parse_tokens(text, str(self.path))
        self._storage = parse_storage_rules(text, str(self.path))
        self._signature = signature
        names = sorted({name for _, name in self._tokens})
        log.info("token file %s: %d token(s) for %s", self.path, len(self._tokens), ", ".join(names) or "nobody")


def parse_tokens(text: str, source: str = "token file") -> list[tuple[bytes, str]]:
    """The ``(token, name)`` pairs of a token file's text; unusable lines are logged
    (with ``source`` and the line number, never the token) and skipped."""
    tokens: list[tuple[bytes, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields or fields[0] == STORAGE_KEYWORD:
            continue
        problem = _problem(fields)
        if problem:
            log.warning("%s line %d skipped: %s", source, number, problem)
            continue
        tokens.append((fields[0].encode(), fields[1]))
    return tokens


def _problem(fields: list[str]) -> str:
    """Why a line's fields are not ``TOKEN NAME``; "" when they are."""
    if len(fields) != 2:
        return f"expected 'TOKEN NAME', got {len(fields)} field(s)"
    token, name = fields
    if len(token) < MIN_TOKEN_CHARS:
        return f"the token has {len(token)} characters, at least {MIN_TOKEN_CHARS} are required"
    if not NAME_PATTERN.fullmatch(name):
        return f"name {name!r} must be 1 to 128 of A-Z a-z 0-9 . _ @ + -"
    return ""


def parse_storage_rules(text: str, source: str = "token file") -> dict[str, StorageAccess] | None:
    """Each NAME's storage roots from a token file's ``storage`` lines; None when it has
    none (no per-owner rules). Unusable lines are logged with ``source`` and their number
    and skipped: the rules still hold, so a mistyped line takes access away, never gives it."""
    rules: dict[str, dict[str, list[str]]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields or fields[0] != STORAGE_KEYWORD:
            continue
        rules = {} if rules is None else rules
        problem = _rule_problem(fields)
        if problem:
            log.warning("%s line %d skipped: %s", source, number, problem)
            continue
        _, name, kind, *roots = fields
        rules.setdefault(name, {READ: [], WRITE: []})[kind].extend(os.path.normpath(root) for root in roots)
    if rules is None:
        return None
    return {name: StorageAccess(tuple(kinds[READ]), tuple(kinds[WRITE])) for name, kinds in rules.items()}


def _rule_problem(fields: list[str]) -> str:
    """Why a storage line's fields are not ``storage NAME read|write ROOT...``; "" when they are."""
    if len(fields) < 4 or fields[2] not in (READ, WRITE):
        return f"expected '{STORAGE_KEYWORD} NAME {READ}|{WRITE} ROOT [ROOT ...]'"
    if not NAME_PATTERN.fullmatch(fields[1]):
        return "the name must be 1 to 128 of A-Z a-z 0-9 . _ @ + -"
    for root in fields[3:]:
        if "\0" in root or not os.path.isabs(root) or ".." in root.split(os.sep):
            return f"a root must be an absolute path without '..', got {root[:80]!r}"
    return ""
