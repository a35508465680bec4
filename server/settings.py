"""The server's configuration: command-line flags, each falling back to a MASKFARM_* variable.

Every field of ``ServerSettings`` is a flag (``result_ttl`` -> ``--result-ttl``) whose
default comes from the environment (``MASKFARM_RESULT_TTL``) and then from the field's
default. This module imports only the standard library, so registering the ``server``
command costs nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import TypeVar

_RETRY_SLACK_S = 120
"""Time allowed per attempt, beyond the job timeout, for RQ to notice a lost worker."""


T = TypeVar("T")


def _setting(default: T, help: str) -> T:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServerSettings:
    listen: str = _setting("127.0.0.1:50051", "address to serve gRPC on, host:port")
    redis_url: str = _setting("redis://127.0.0.1:6379/0", "Redis holding the queues, jobs and masks")
    namespace: str = _setting("maskfarm", "prefix of maskfarm's Redis keys and RQ queues (workers must match)")
    result_ttl: int = _setting(86400, "seconds masks and job records are kept after a job ends")
    queue_ttl: int = _setting(3600, "seconds a job may wait for a worker before it fails as expired")
    job_timeout: int = _setting(3600, "seconds a job may run")
    retries: int = _setting(2, "times a job is run again after its worker died")
    max_message_mib: int = _setting(64, "largest gRPC message, MiB, both ways")
    max_side: int = _setting(16384, "largest frame side, pixels")
    max_pixels: int = _setting(100_000_000, "largest frame, pixels")
    max_backlog_jobs: int = _setting(10_000, "queued jobs beyond which SubmitJob is refused")
    max_backlog_mib: int = _setting(8192, "queued frame data beyond which SubmitJob is refused, MiB")
    grace_s: float = _setting(10.0, "seconds running calls get to finish at shutdown")
    log_level: str = _setting("INFO", "logging level")
    metrics_listen: str = _setting("", "host:port to serve Prometheus /metrics on; empty: no metrics")
    auth_tokens: str = _setting("", "file of 'TOKEN NAME' lines: every call but health and reflection needs "
                                    "a bearer token from it (re-read on change); empty: auth off")
    tls_cert: str = _setting("", "PEM certificate chain: serve TLS only (with --tls-key); empty: plaintext")
    tls_key: str = _setting("", "PEM private key of --tls-cert")
    tls_client_ca: str = _setting("", "PEM CA certificates: require client certificates signed by them "
                                      "(mutual TLS; needs --tls-cert)")

    def __post_init__(self) -> None:
        for setting in dataclasses.fields(self):
            value = getattr(self, setting.name)
            least = 0 if setting.name == "retries" else 1
            if isinstance(value, (int, float)) and value < least:
                raise ValueError(f"{setting.name} must be at least {least}, got {value}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")

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
        for setting in dataclasses.fields(cls):
            variable = env_name(setting.name)
            default = os.environ.get(variable, setting.default)
            shown = "%(default)s" if default != "" else "none"
            parser.add_argument(
                "--" + setting.name.replace("_", "-"),
                dest=setting.name,
                type=type(setting.default),
                default=default,
                help=f"{setting.metadata['help']} (default: ${variable} or {shown})",
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerSettings:
        return cls(**{setting.name: getattr(args, setting.name) for setting in dataclasses.fields(cls)})


def env_name(setting: str) -> str:
    """The environment variable of a setting: ``result_ttl`` -> ``MASKFARM_RESULT_TTL``."""
    return "MASKFARM_" + setting.upper()
