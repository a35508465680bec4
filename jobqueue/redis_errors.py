"""Redis refusing work for a while (out of memory, read-only, loading its data), told
apart from everything else it may answer.

Such a refusal is a state of the job store, not of the request: the same call succeeds
once memory is freed, the replica is promoted or the data is loaded. The server answers
it as UNAVAILABLE with a plain message (clients retry UNAVAILABLE), and the worker waits
and tries again instead of failing the job. Imports only redis.
"""

from __future__ import annotations

from redis.exceptions import BusyLoadingError, OutOfMemoryError, ReadOnlyError, RedisError, ResponseError

_OUT_OF_MEMORY = "the job store (Redis) is out of memory (maxmemory reached); try again once jobs end or expire"
_READ_ONLY = "the job store (Redis) is a read-only replica; try again once a writable one is in place"
_LOADING = "the job store (Redis) is loading its data; try again in a moment"


class NotReplicated(RedisError):
    """Writes the primary took that no replica confirmed in time (``WAIT``): they may not
    survive a failover, so the call that made them is not acknowledged. Repeating it is
    safe (a repeated SubmitJob request id returns the same job)."""

    def __init__(self, held_by: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(
            f"the job store (Redis) kept the job on its primary but {held_by} of {wanted} replica(s) confirmed it "
            f"within {timeout_ms} ms; try again (the same request id returns the same job)"
        )


def refusal(error: BaseException) -> str | None:
    """Why Redis refused, in plain words (no key names), when the refusal passes by
    itself; None for any other error. A refusal inside a Lua script or a transaction
    reaches redis-py as a ``ResponseError`` that quotes Redis's own OOM message."""
    if isinstance(error, NotReplicated):
        return str(error)
    if isinstance(error, BusyLoadingError):
        return _LOADING
    if isinstance(error, ReadOnlyError) or (isinstance(error, ResponseError) and "READONLY" in str(error)):
        return _READ_ONLY
    if isinstance(error, OutOfMemoryError) or (isinstance(error, ResponseError) and "OOM" in str(error)):
        return _OUT_OF_MEMORY
    return None


def is_refusal(error: BaseException) -> bool:
    """Whether ``error`` is a passing refusal (``refusal`` has a reason for it)."""
    return isinstance(error, RedisError) and refusal(error) is not None
