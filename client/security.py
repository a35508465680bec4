"""How a client reaches the server: plaintext or TLS (with a client certificate for mutual
TLS), and a bearer token for servers that require one.

Each setting is an argument, falling back to an environment variable when not given:

    token        MASKFARM_TOKEN             sent as ``authorization: Bearer <token>``
    tls          MASKFARM_TLS (1/true/yes)  use TLS; also on when any file below is set
    ca_cert      MASKFARM_TLS_CA            CA that signed the server's certificate
                                            (default: the system's trusted CAs)
    client_cert  MASKFARM_TLS_CLIENT_CERT   this client's certificate (mutual TLS) ...
    client_key   MASKFARM_TLS_CLIENT_KEY    ... and its private key

Certificates and keys are PEM: a path, or the PEM bytes themselves. Over TLS the token
travels as gRPC call credentials; over plaintext (which gRPC's call credentials refuse)
an interceptor adds the same metadata to every call, for farms that keep their network
private instead. Either way the server sees the same header.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from maskfarm.client.errors import InvalidRequest

Pem = str | os.PathLike[str] | bytes
"""A PEM file's path, or its contents as bytes."""

TOKEN_ENV = "MASKFARM_TOKEN"
TLS_ENV = "MASKFARM_TLS"
CA_ENV = "MASKFARM_TLS_CA"
CLIENT_CERT_ENV = "MASKFARM_TLS_CLIENT_CERT"
CLIENT_KEY_ENV = "MASKFARM_TLS_CLIENT_KEY"


@dataclass(frozen=True)
class ChannelSecurity:
    """The resolved settings: a token or None, and TLS with its PEM data or plaintext."""

    token: str | None = None
    tls: bool = False
    ca_cert: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None

    @classmethod
    def resolve(
        cls,
        *,
        token: str | None = None,
        tls: bool | None = None,
        ca_cert: Pem | None = None,
        client_cert: Pem | None = None,
        client_key: Pem | None = None,
    ) -> ChannelSecurity:
        """The settings from the arguments, each None one taken from its environment
        variable. An explicit ``tls=False`` means plaintext whatever the files say.
        Raises ``InvalidRequest`` for a certificate without its key (or the reverse) and
        ``OSError`` for a file that cannot be read."""
        token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        ca_cert = ca_cert if ca_cert is not None else os.environ.get(CA_ENV) or None
        client_cert = client_cert if client_cert is not None else os.environ.get(CLIENT_CERT_ENV) or None
        client_key = client_key if client_key is not None else os.environ.get(CLIENT_KEY_ENV) or None
        if tls is None:
            tls = _truthy(os.environ.get(TLS_ENV, "")) or any((ca_cert, client_cert, client_key))
        if not tls:
            return cls(token=token)
        if bool(client_cert) != bool(client_key):
            raise InvalidRequest("client_cert and client_key go together: give both or neither")
        return cls(
            token=token, tls=True, ca_cert=_pem(ca_cert), client_cert=_pem(client_cert), client_key=_pem(client_key)
        )

    def channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A channel to ``target`` that sends the token (if any) with every call."""
        if self.tls:
            credentials = grpc.ssl_channel_credentials(self.ca_cert, self.client_key, self.client_cert)
            if self.token:
                credentials = grpc.composite_channel_credentials(
                    credentials, grpc.access_token_call_credentials(self.token)
                )
            return grpc.secure_channel(target, credentials, options=options)
        channel = grpc.insecure_channel(target, options=options)
        return grpc.intercept_channel(channel, _BearerMetadata(self.token)) if self.token else channel


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call on a plaintext channel."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._with_token(details), request)

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self.header]
        return _CallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready, details.compression
        )


def _pem(source: Pem | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")
