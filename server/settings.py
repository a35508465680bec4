"""The server's configuration: ``maskfarm server``'s flags, each falling back to a MASKFARM_* variable.

Every field of ``ServerSettings`` is a flag (``result_ttl`` -> ``--result-ttl``, from
``MASKFARM_RESULT_TTL``), by maskfarm's one settings pattern (``maskfarm.core.settings``).
Standard library and maskfarm.core only, so registering the ``server`` command costs nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from maskfarm.core.defaults import (
    DEFAULT_FRAME_READ_TIMEOUT_S,
    DEFAULT_LISTEN,
    DEFAULT_MAX_FRAME_MIB,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    DEFAULT_NAMESPACE,
    DEFAULT_REDIS_URL,
)
from maskfarm.core.settings import add_arguments, from_args, setting
from maskfarm.core.storage import StorageRoots

_RETRY_SLACK_S = 120
"""Time allowed per attempt, beyond the job timeout, for RQ to notice a lost worker."""


@dataclass(frozen=True)
class ServerSettings:
    listen: str = setting(DEFAULT_LISTEN, "address to serve gRPC on, host:port")
    redis_url: str = setting(DEFAULT_REDIS_URL, "Redis holding the queues, jobs and masks")
    namespace: str = setting(DEFAULT_NAMESPACE, "prefix of maskfarm's Redis keys and RQ queues (workers must match)")
    result_ttl: int = setting(86400, "seconds masks and job records are kept after a job ends")
    queue_ttl: int = setting(3600, "seconds a job may wait for a worker before it fails as expired")
    job_timeout: int = setting(3600, "seconds a job may run")
    retries: int = setting(2, "times a job is run again after its worker died")
    max_message_mib: int = setting(64, "largest gRPC message, MiB, both ways")
    max_side: int = setting(DEFAULT_MAX_SIDE, "largest frame side, pixels")
    max_pixels: int = setting(DEFAULT_MAX_PIXELS, "largest frame, pixels")
    max_frame_mib: int = setting(DEFAULT_MAX_FRAME_MIB, "largest frame file read by path, MiB")
    frame_read_timeout_s: float = setting(DEFAULT_FRAME_READ_TIMEOUT_S, "seconds a frame file's open and read may take")
    max_backlog_jobs: int = setting(10_000, "queued jobs beyond which SubmitJob is refused")
    max_backlog_mib: int = setting(8192, "queued frame data beyond which SubmitJob is refused, MiB")
    grace_s: float = setting(10.0, "seconds running calls get to finish at shutdown")
    max_watches_per_connection: int = setting(
        16, "WatchJob streams one client connection may hold open at once; more are refused"
    )
    max_watches_per_owner: int = setting(
        32,
        "WatchJob streams one caller may hold open at once (the token's name; "
        "without auth, the client's host); more are refused",
    )
    log_level: str = setting("INFO", "logging level")
    metrics_listen: str = setting("", "host:port to serve Prometheus /metrics on; empty: no metrics")
    auth_tokens: str = setting(
        "",
        "file of 'TOKEN NAME' lines: every call but health and reflection needs "
        "a bearer token from it (re-read on change); empty: auth off",
    )
    tls_cert: str = setting("", "PEM certificate chain: serve TLS only (with --tls-key); empty: plaintext")
    tls_key: str = setting("", "PEM private key of --tls-cert")
    tls_client_ca: str = setting(
        "", "PEM CA certificates: require client certificates signed by them (mutual TLS; needs --tls-cert)"
    )
    replicated_submit: str = setting(
        "auto",
        "SubmitJob answers once a replica holds the job (Redis WAIT): on, off, or auto (on for redis+sentinel:// URLs)",
    )
    storage_roots: tuple[str, ...] = setting(
        (),
        "shared storage: a folder under which jobs may name frames and output_dir by path (repeat for several)",
        flag="--storage-root",
    )

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            least = 0 if field.name == "retries" else 1
            if isinstance(value, (int, float)) and value < least:
                raise ValueError(f"{field.name} must be at least {least}, got {value}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.replicated_submit not in ("auto", "on", "off"):
            raise ValueError(f"replicated_submit must be auto, on or off, got {self.replicated_submit!r}")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        object.__setattr__(self, "storage_roots", StorageRoots.parse(self.storage_roots).roots)

    @property
    def storage(self) -> StorageRoots:
        """The shared-storage roots; empty (false) when shared storage is off."""
        return StorageRoots(self.storage_roots)

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mib * 1024 * 1024

    @property
    def max_backlog_bytes(self) -> int:
        return self.max_backlog_mib * 1024 * 1024

    @property
    def inputs_ttl(self) -> int:
        """How long a job's frames are kept: its queue time plus every attempt's run."""
        return self.queue_ttl + (self.retries + 1) * (self.job_timeout + _RETRY_SLACK_S)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds one flag per setting, defaulting to its MASKFARM_* variable."""
        add_arguments(cls, parser)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerSettings:
        """The settings of parsed flags; a repeatable flag never given takes its variable."""
        return from_args(cls, args)
