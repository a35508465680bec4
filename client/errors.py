"""What can go wrong when talking to maskfarm, as a small hierarchy of exceptions.

Every error is a ``MaskfarmError`` carrying the gRPC status ``code`` (a name such as
``"INVALID_ARGUMENT"``) and the server's ``details``, so callers can catch broadly or by
cause. ``from_rpc_error`` is the one place where gRPC status codes become these classes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

import grpc


class MaskfarmError(Exception):
    """Base class: ``code`` is the gRPC status name, ``details`` the server's message."""

    code: str = "UNKNOWN"

    def __init__(self, details: str, *, code: str | None = None) -> None:
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.details}"


class InvalidRequest(MaskfarmError):
    """The request was refused as it is (INVALID_ARGUMENT); ``details`` names the field,
    e.g. ``"prompts[1]: blank"``. Retrying the same request cannot help."""

    code = "INVALID_ARGUMENT"


class FrameRefused(InvalidRequest):
    """The server refused one frame of a submission (its INVALID_ARGUMENT named
    ``frames[i]``): ``frame_index`` is the frame's place in the frames given to the client
    (not within one part of a split request), ``frame_name`` its name, ``field`` the part of
    it at fault (``.data``, ``.path``, ...), ``reason`` why. The details name the frame by its
    name (``shot.1027.png: not an image ...``), else by its index among the frames given."""

    def __init__(self, frame_index: int, frame_name: str, field: str, reason: str) -> None:
        super().__init__(f"{frame_name or f'frames[{frame_index}]{field}'}: {reason}")
        self.frame_index = frame_index
        self.frame_name = frame_name
        self.field = field
        self.reason = reason

    def moved_to(self, frame_index: int) -> FrameRefused:
        """The same refusal, for the frame at ``frame_index`` of a longer list."""
        return FrameRefused(frame_index, self.frame_name, self.field, self.reason)


def frame_refused(error: InvalidRequest, first: int, names: Sequence[str]) -> FrameRefused | None:
    """``error`` as a ``FrameRefused`` when the server named one frame of a request holding
    the frames called ``names``, which are the given frames from index ``first`` on; else None."""
    found = _FRAME_FIELD.match(error.details)
    if found is None or int(found["index"]) >= len(names):
        return None
    index = int(found["index"])
    return FrameRefused(first + index, names[index], found["field"] or "", found["reason"])


_FRAME_FIELD = re.compile(r"frames\[(?P<index>\d+)\](?P<field>\.\w+)?: (?P<reason>.*)", re.DOTALL)


class RequestTooLarge(InvalidRequest):
    """A request that cannot fit in one gRPC message (checked before sending): submit
    fewer frames per job, or use ``Client.submit_parts`` / ``Client.segment``, which split."""


class JobNotFound(MaskfarmError):
    """No job has this id: it never existed or has expired (NOT_FOUND)."""

    code = "NOT_FOUND"


class StorageDenied(MaskfarmError):
    """A shared-storage path this caller may not use, named with its field in ``details``:
    a frame (or image prompt) outside the caller's read roots answers NOT_FOUND (the answer
    does not confirm that the file exists), an ``output_dir`` outside its write roots
    PERMISSION_DENIED. Retrying the same request cannot help."""


class Busy(MaskfarmError):
    """The server refused the work for now (RESOURCE_EXHAUSTED): its backlog is full, or
    a message was over its size limit. ``retry_after_s`` is the server's hint, if any."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, details: str, *, retry_after_s: float | None = None, code: str | None = None) -> None:
        super().__init__(details, code=code)
        self.retry_after_s = retry_after_s


class Unavailable(MaskfarmError):
    """The server or its job store cannot be reached (UNAVAILABLE), after the client's
    own retries."""

    code = "UNAVAILABLE"


class Unauthenticated(MaskfarmError):
    """UNAUTHENTICATED: no token, a malformed one, or one the server does not know
    (revoked tokens included). Not retried."""

    code = "UNAUTHENTICATED"


class DeadlineExceeded(MaskfarmError, TimeoutError):
    """A call, or a wait for a job, took longer than its timeout."""

    code = "DEADLINE_EXCEEDED"


class JobFailed(MaskfarmError):
    """The job ended FAILED: ``error_code`` is the API's ErrorCode name without its prefix
    (``"INVALID_INPUT"``, ``"OUT_OF_MEMORY"``, ...) and ``message`` the worker's reason."""

    code = "FAILED"

    def __init__(self, job_id: str, error_code: str, message: str) -> None:
        super().__init__(f"job {job_id} failed: {error_code}: {message}")
        self.job_id = job_id
        self.error_code = error_code
        self.message = message

    def __str__(self) -> str:
        return self.details


class JobCancelled(MaskfarmError):
    """The job ended CANCELLED (someone called CancelJob) before all its masks were made."""

    code = "CANCELLED"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was cancelled")
        self.job_id = job_id

    def __str__(self) -> str:
        return self.details


_BY_STATUS: dict[grpc.StatusCode, type[MaskfarmError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: JobNotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


_NAMES_A_FIELD = re.compile(r"[a-z_]+(\[\d+\])?(\.[a-z_]+|\[\d+\])*: ")
"""A request field opening the details (``frames[1].path: ...``): a refused path, not a job."""


def from_rpc_error(error: grpc.RpcError) -> MaskfarmError:
    """The ``MaskfarmError`` that a failed call's status stands for."""
    status: grpc.StatusCode = error.code()
    details: str = error.details() or status.name
    if status is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Busy(details, retry_after_s=_retry_after_s(error))
    if status is grpc.StatusCode.PERMISSION_DENIED or (
        status is grpc.StatusCode.NOT_FOUND and _NAMES_A_FIELD.match(details)
    ):
        return StorageDenied(details, code=status.name)
    kind = _BY_STATUS.get(status)
    if kind is None:
        return MaskfarmError(details, code=status.name)
    return kind(details)


def _retry_after_s(error: grpc.RpcError) -> float | None:
    # (key, value) pairs, which grpc's stubs type as _Metadatum objects
    trailers = cast("tuple[tuple[str, str | bytes], ...]", error.trailing_metadata() or ())
    for key, value in trailers:
        if key == "retry-after-s":
            try:
                return float(value)
            except ValueError:
                return None
    return None
