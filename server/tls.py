"""TLS for the server: its certificate and key, and optionally mutual TLS.

Plaintext stays the default (a farm's private network, or TLS ended by a proxy). With a
certificate and key the server speaks only TLS; with a client CA as well it also requires
every client to present a certificate signed by that CA (mutual TLS), which is checked
during the handshake, before any call, health checks included.
"""

from __future__ import annotations

from pathlib import Path

import grpc


class TlsConfigError(ValueError):
    """A TLS file cannot be read; the message names the setting and the file."""


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials:
    """Credentials for ``add_secure_port`` from PEM files: the certificate chain and its
    private key, and with ``client_ca`` the CA whose certificates clients must present."""
    pair = (_read("tls_key", key), _read("tls_cert", cert))
    if not client_ca:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=_read("tls_client_ca", client_ca), require_client_auth=True
    )


def _read(setting: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TlsConfigError(f"{setting}: cannot read {path}: {error.strerror or error}") from None
    if b"-----BEGIN " not in data:
        raise TlsConfigError(f"{setting}: {path} is not a PEM file")
    return data
