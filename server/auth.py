"""Who is calling: bearer tokens checked by a server interceptor, before any servicer runs.

With auth on, every call except health checking and reflection must carry the metadata
``authorization: Bearer <token>`` with a token of the token file; otherwise it ends at
once with UNAUTHENTICATED, saying which of the two went wrong (no or malformed metadata,
or a token the server does not know). Health and reflection stay open so load balancers,
orchestrators and ``grpcurl list`` work without a secret. Any other service is closed by
default: a service added later is protected without anyone remembering to.

An accepted call runs with its caller's name available to the servicer through
``caller()``, and the caller's shared-storage roots, if the token file sets any, through
``caller_storage()``; with auth off (no interceptor), ``caller()`` is None and every job is
everyone's. A known caller asking for a job that is not theirs gets NOT_FOUND, never
PERMISSION_DENIED (see ``ownership``); PERMISSION_DENIED answers only an ``output_dir``
outside the caller's write roots (see ``storage_access``), which says nothing about others.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from maskfarm.core.storage_access import StorageAccess
from maskfarm.server.tokens import TokenFile

OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
"""Services callable without a token."""

AUTHORIZATION = "authorization"
BEARER = "bearer"

_caller: contextvars.ContextVar[str | None] = contextvars.ContextVar("maskfarm_caller", default=None)
_storage: contextvars.ContextVar[StorageAccess | None] = contextvars.ContextVar("maskfarm_storage", default=None)


def caller() -> str | None:
    """The name of the authenticated caller of the current call; None when auth is off."""
    return _caller.get()


def caller_storage() -> StorageAccess | None:
    """The roots the current call's caller may read and write on shared storage; None
    when no per-owner rules apply (auth off, or a token file without ``storage`` lines)."""
    return _storage.get()


class NotAuthenticated(Exception):
    """Why a call's credentials were refused (the message is sent to the client)."""


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a known bearer token, and runs accepted ones as their caller."""

    def __init__(self, tokens: TokenFile) -> None:
        self.tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or _service(details.method) in OPEN_SERVICES:
            return handler
        try:
            name = self.authenticate(details.invocation_metadata or ())
        except NotAuthenticated as refusal:
            return _with_behavior(handler, _refusing(str(refusal)))
        storage = self.tokens.storage_access(name)
        return _with_behavior(handler, _as_caller(name, storage, getattr(handler, _kind(handler))))

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> str:
        """The caller's name; raises ``NotAuthenticated`` saying why not."""
        values = [value for key, value in metadata if key == AUTHORIZATION]
        if not values:
            raise NotAuthenticated("no credentials: send the metadata 'authorization: Bearer <token>'")
        scheme, _, token = (values[0] if isinstance(values[0], str) else "").partition(" ")
        if len(values) > 1 or scheme.lower() != BEARER or not token.strip():
            raise NotAuthenticated("malformed credentials: the 'authorization' metadata must be 'Bearer <token>'")
        name = self.tokens.name_of(token.strip())
        if name is None:
            raise NotAuthenticated("unknown or revoked token")
        return name


def _service(method: str) -> str:
    """``/package.Service/Method`` -> ``package.Service``."""
    return method.split("/")[1] if method.count("/") == 2 else ""


_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def _kind(handler: grpc.RpcMethodHandler) -> str:
    """Which of the handler's behavior fields is set, e.g. ``unary_stream``."""
    return next(kind for kind in _KINDS if getattr(handler, kind) is not None)


def _with_behavior(handler: grpc.RpcMethodHandler, behavior: Callable[..., Any]) -> grpc.RpcMethodHandler:
    """The handler (same kind and serializers) with its behavior replaced."""
    # grpc's handlers are namedtuples; its stubs type only the abstract RpcMethodHandler
    return handler._replace(**{_kind(handler): behavior})  # type: ignore[attr-defined]


def _refusing(reason: str) -> Callable[..., Awaitable[None]]:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    return refuse


def _as_caller(name: str, storage: StorageAccess | None, behavior: Callable[..., Any]) -> Callable[..., Any]:
    """``behavior``, run with ``caller()`` answering ``name`` and ``caller_storage()``
    ``storage``. (grpc.aio runs each call in a task of its own, so setting the variables
    cannot leak into another call.)"""
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
            _caller.set(name)
            _storage.set(storage)
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response

        return streaming

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        _caller.set(name)
        _storage.set(storage)
        return await behavior(request, context)

    return unary
