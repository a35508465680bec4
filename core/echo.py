"""Client input as error messages may echo it: cut short, so a message stays small.

An error that quotes what the client sent (a job id, a path, a label key) would otherwise
grow with it: a 16 KB id echoed into a status message overflows gRPC's metadata limit, and
the client gets an unrelated transport error instead of INVALID_ARGUMENT. Every message
that echoes input goes through ``cut`` or ``quoted``. Standard library only (``storage``
and ``settings`` use it).
"""

from __future__ import annotations

MAX_ECHO_CHARS = 200
"""Characters of an input echoed in an error message; the rest is replaced by its length."""


def cut(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text`` as it may appear in a message: whole when at most ``limit`` characters,
    else its first ``limit`` characters, ``…`` and its full length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def quoted(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(text)`` for a message (quotes and escapes show blanks and odd characters),
    cut as ``cut`` does."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"
